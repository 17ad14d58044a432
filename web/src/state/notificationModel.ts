// The bell's list: one row per event, except floods. Agents enrolling, being approved, coming
// online or going offline together (a fleet's first start, a server restart, a network blip)
// become one row per kind — "1,204 agents enrolled", "1,204 agents back online" — instead of
// thousands, however the kinds interleave. Pure, so that it is unit-tested alone.

import type { EventKind, EventView } from '../api/types';

/** One row: an event, or a storm of one kind of agent event. */
export interface Notification {
  /** The newest event's (ids increase): read when the user's marker reaches it. */
  id: number;
  event: EventView;
  /** How many agents the row stands for (1 for most): an agent that comes back twice in a
   *  storm is one of "300 agents back online", not two. */
  count: number;
  /** The agents in a storm's row (their ids). Shared with the row it replaces, which the
   *  caller drops: copying it for each of 10,000 events would cost their square. */
  agents?: Set<string>;
}

/** The kinds a storm is made of, with what a row of many says. Each happens to one agent at a
 *  time, so thousands arrive together when a fleet starts, drops or comes back (or a script
 *  decides on many). The pending-limit warning is published once, SSH sessions are a user's
 *  own: one row each. */
const GROUP_TITLES: Partial<Record<EventKind, string>> = {
  'agent.enrolled': 'agents enrolled',
  'agent.approved': 'agents approved',
  'agent.rejected': 'agents rejected',
  'agent.revoked': 'agents revoked',
  'agent.online': 'agents back online',
  'agent.offline': 'agents went offline',
  'agent.not_responding': 'agents not responding',
};

/** An event joins its kind's newest row when it comes this soon after that row's newest event
 *  (so a storm lasts as long as its events keep coming): a storm's events arrive within
 *  milliseconds of each other, while the same kind after a quiet half-minute is news again. */
export const GROUP_WINDOW_MS = 30_000;
/** Enough for a long day on a busy server without growing without bound. */
export const KEEP = 500;

/** The list with `event` added at the top (newest first); unchanged for an event it has. */
export function addNotification(list: Notification[], event: EventView): Notification[] {
  const top = list[0];
  if (top && top.id >= event.id) return list; // events arrive in id order
  if (event.kind in GROUP_TITLES) {
    // Grouped by kind, not by what is next to it: a storm interleaves kinds (enrolled,
    // approved and online for each agent of a starting fleet; offline and online in a blip),
    // and other events (a session) may fall in between. The row moves to the top with its
    // newest event, so that it is unread again.
    const at = list.findIndex((row) => row.event.kind === event.kind);
    const agent = event.agent?.id ?? `event ${event.id}`;
    if (at >= 0 && event.time - list[at].event.time < GROUP_WINDOW_MS) {
      const agents = list[at].agents ?? new Set<string>();
      agents.add(agent);
      const row = { id: event.id, event, count: agents.size, agents };
      return [row, ...list.slice(0, at), ...list.slice(at + 1)];
    }
    return [{ id: event.id, event, count: 1, agents: new Set([agent]) }, ...list].slice(0, KEEP);
  }
  return [{ id: event.id, event, count: 1 }, ...list].slice(0, KEEP);
}

/** "1,204 agents back online", or null for a single event. */
export function groupTitle(notification: Notification): string | null {
  if (notification.count < 2) return null;
  const what = GROUP_TITLES[notification.event.kind] ?? notification.event.kind;
  return `${notification.count.toLocaleString('en-US')} ${what}`;
}
