// The bell: events about agents and SSH sessions, newest first. What is read is kept on the
// server (an event id per user), so that every browser of the same user agrees.

import { computed, signal } from '@preact/signals';
import { markNotificationsRead } from '../api/endpoints';
import { AGENT_EVENT_KINDS, type EventKind, type EventView } from '../api/types';

const NOTIFYING = new Set<EventKind>(['session.state', 'agent.pending_limit', ...AGENT_EVENT_KINDS]);

/** Enough for a long day on a busy server without growing without bound. */
const KEEP = 500;

export const notifications = signal<EventView[]>([]);
export const readUpTo = signal(0);
export const notificationsOpen = signal(false);

export const unreadCount = computed(() => {
  const marker = readUpTo.value;
  let count = 0;
  for (const event of notifications.value) {
    if (event.id <= marker) break; // newest first: the rest are read too
    count += 1;
  }
  return count;
});

export function notificationEvent(event: EventView): void {
  if (!NOTIFYING.has(event.kind)) return;
  const list = notifications.peek();
  if (list.length && list[0].id >= event.id) return; // already have it (events arrive in id order)
  notifications.value = [event, ...list].slice(0, KEEP);
}

export async function markAllRead(): Promise<void> {
  const newest = notifications.peek()[0]?.id ?? 0;
  if (newest <= readUpTo.peek()) return;
  await markNotificationsRead(newest);
  readUpTo.value = newest;
}

export function clearNotifications(): void {
  notifications.value = [];
  readUpTo.value = 0;
  notificationsOpen.value = false;
}
