// The bell: events about agents and SSH sessions, newest first, floods grouped into one row
// (notificationModel.ts). What is read is kept on the server (an event id per user), so that
// every browser of the same user agrees.

import { computed, signal } from '@preact/signals';
import { markNotificationsRead } from '../api/endpoints';
import { AGENT_EVENT_KINDS, type EventKind, type EventView } from '../api/types';
import { addNotification, type Notification } from './notificationModel';

const NOTIFYING = new Set<EventKind>(['session.state', 'agent.pending_limit', ...AGENT_EVENT_KINDS]);

export const notifications = signal<Notification[]>([]);
export const readUpTo = signal(0);
export const notificationsOpen = signal(false);

/** Unread rows (a flood is one). */
export const unreadCount = computed(() => {
  const marker = readUpTo.value;
  let count = 0;
  for (const row of notifications.value) {
    if (row.id <= marker) break; // newest first: the rest are read too
    count += 1;
  }
  return count;
});

export function notificationEvent(event: EventView): void {
  if (!NOTIFYING.has(event.kind)) return;
  const list = notifications.peek();
  const next = addNotification(list, event);
  if (next !== list) notifications.value = next;
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
