// Which agents the Agents page holds: not the fleet, but one page of it — the agents matching
// the search and filters, 120 at a time, read from the server (which filters and pages in
// its store). So the JSON per load and the cards in the DOM stay bounded at 10,000 agents.
// These rules say when what happened may change which agents that page holds, so that it is
// read again (one list call for any number of events). Pure: unit-tested alone.

import type { AgentsQuery, AgentStatus, EventView, PresenceChanges } from '../api/types';

/** Cards per page. */
export const PAGE_SIZE = 120;

export type StatusFilter = AgentStatus | 'all';
export type OnlineFilter = 'all' | 'online' | 'offline';

export interface AgentFilters {
  search: string;
  status: StatusFilter;
  online: OnlineFilter;
}

export const NO_FILTERS: AgentFilters = { search: '', status: 'all', online: 'all' };

/** The list call for the page that starts after `cursor`. */
export function pageQuery(filters: AgentFilters, cursor: string | null): AgentsQuery {
  const search = filters.search.trim();
  return {
    q: search || undefined,
    status: filters.status === 'all' ? undefined : filters.status,
    online: filters.online === 'all' ? undefined : filters.online === 'online',
    limit: PAGE_SIZE,
    cursor: cursor ?? undefined,
  };
}

const CONNECTION_KINDS = new Set<string>(['agent.online', 'agent.offline']);
const DECISION_KINDS = new Set<string>(['agent.approved', 'agent.rejected', 'agent.revoked']);
/** Events that change the fleet's counts. */
const COUNTED_KINDS = new Set<string>([
  'agent.enrolled',
  'agent.online',
  'agent.offline',
  'agent.not_responding',
  ...DECISION_KINDS,
]);

/**
 * Whether an agent event may change which agents the page holds. An agent already on the
 * page takes the event's state at once; the page is read again only when the agent may enter
 * or leave it: a new agent, or a change of what a filter looks at. Without filters, a storm
 * of 2,000 agents coming online reads nothing.
 */
export function eventMovesPage(event: EventView, filters: AgentFilters): boolean {
  if (event.kind === 'agent.enrolled') return true;
  if (filters.online !== 'all' && CONNECTION_KINDS.has(event.kind)) return true;
  if (filters.status !== 'all' && DECISION_KINDS.has(event.kind)) return true;
  return false;
}

/** Whether an event changes the counts (by status, connection, liveness). */
export function eventChangesCounts(event: EventView): boolean {
  return event.agent !== undefined && COUNTED_KINDS.has(event.kind);
}

/** Whether a presence answer may change which agents the page holds (filtered by connection). */
export function presenceMovesPage(presence: PresenceChanges, filters: AgentFilters): boolean {
  return filters.online !== 'all' && (presence.full || presence.agents.length > 0);
}

/** Whether a presence answer changes the counts of online and not responding agents. */
export function presenceChangesCounts(presence: PresenceChanges): boolean {
  return presence.full || presence.agents.length > 0;
}
