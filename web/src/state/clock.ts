// One clock for the whole app: every "N s ago" and every running timer reads this signal, so
// a thousand cards cost one timer, and text bound to it updates without re-rendering cards.

import { signal } from '@preact/signals';

export const now = signal(Date.now());

setInterval(() => {
  now.value = Date.now();
}, 1000);
