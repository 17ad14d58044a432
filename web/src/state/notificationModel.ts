// The bell's list: one row per event, except floods. Agents coming online or going offline
// together (a server restart, a network blip) become one row — "1,204 agents back online" —
// instead of 2,000. Pure, so that it is unit-tested alone.

import type { EventKind, EventView } from '../api/types';

/** One row: an event, or a run of the same agent presence change. */
export interface Notification {
  /** The newest event's (ids increase): read when the user's marker reaches it. */
  id: number;
  event: EventView;
  /** How many events the row stands for (1 for most). */
  count: number;
}

const GROUPED = new Set<EventKind>(['agent.online', 'agent.offline', 'agent.not_responding']);
/** Presence changes this close to the row above join it: a storm arrives within seconds. */
export const GROUP_WINDOW_MS = 30_000;
/** How many rows down a storm's run may be found (one per other kind it interleaves with). */
const INTERLEAVED = 4;
/** Enough for a long day on a busy server without growing without bound. */
export const KEEP = 500;

/** The list with `event` added at the top (newest first); unchanged for an event it has. */
export function addNotification(list: Notification[], event: EventView): Notification[] {
  const top = list[0];
  if (top && top.id >= event.id) return list; // events arrive in id order
  if (GROUPED.has(event.kind)) {
    // A storm interleaves presence kinds (agents dropping while others come back), so the
    // run to join may sit a few presence rows down; any other event ends the storm. The run
    // moves to the top with its newest event.
    let at = -1;
    for (let i = 0; i < Math.min(list.length, INTERLEAVED); i++) {
      const row = list[i];
      if (!GROUPED.has(row.event.kind)) break;
      if (row.event.kind === event.kind && event.time - row.event.time < GROUP_WINDOW_MS) {
        at = i;
        break;
      }
    }
    if (at >= 0) {
      const row = list[at];
      return [{ id: event.id, event, count: row.count + 1 }, ...list.slice(0, at), ...list.slice(at + 1)];
    }
  }
  return [{ id: event.id, event, count: 1 }, ...list].slice(0, KEEP);
}

const GROUP_TITLES: Partial<Record<EventKind, string>> = {
  'agent.online': 'agents back online',
  'agent.offline': 'agents went offline',
  'agent.not_responding': 'agents not responding',
};

/** "1,204 agents back online", or null for a single event. */
export function groupTitle(notification: Notification): string | null {
  if (notification.count < 2) return null;
  const what = GROUP_TITLES[notification.event.kind] ?? notification.event.kind;
  return `${notification.count.toLocaleString('en-US')} ${what}`;
}
