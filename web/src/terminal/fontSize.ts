// The terminal's font size, chosen with the panel's −, + and reset buttons and remembered in
// this browser. Kept apart from the terminal itself so the panel can show the buttons without
// loading xterm.js.

import { effect, signal } from '@preact/signals';

const STORAGE_KEY = 'postern.terminal.fontSize';
export const DEFAULT_FONT_SIZE = 14;
const MIN = 8;
const MAX = 32;

function stored(): number {
  const value = Number(localStorage.getItem(STORAGE_KEY));
  return Number.isInteger(value) && value >= MIN && value <= MAX ? value : DEFAULT_FONT_SIZE;
}

export const terminalFontSize = signal(stored());

effect(() => {
  const size = terminalFontSize.value;
  if (size === DEFAULT_FONT_SIZE) localStorage.removeItem(STORAGE_KEY);
  else localStorage.setItem(STORAGE_KEY, String(size));
});

export function changeFontSize(step: number): void {
  terminalFontSize.value = Math.min(MAX, Math.max(MIN, terminalFontSize.value + step));
}

export function resetFontSize(): void {
  terminalFontSize.value = DEFAULT_FONT_SIZE;
}

export const canShrink = () => terminalFontSize.value > MIN;
export const canGrow = () => terminalFontSize.value < MAX;
