// Agents: one signal per agent, so that an event re-renders only that agent's card. The page
// holds one page of the fleet at a time — the agents matching the search and filters, read
// from the server a page at a time (agentWindow.ts) — and the fleet's counts, read from the
// server. The rules of truth live in fleet.ts: an event's own state is applied at once; what
// only the server can say is read with ONE list call for any number of events (retried until
// it succeeds); presence changes are polled cheaply and correct the cards both ways; the page
// and the counts are read again now and then, and after the event stream was cut (a server
// restart), to correct everything else.

import { batch, computed, signal, type Signal } from '@preact/signals';
import { getAgent, getAgentCounts, getPresenceChanges, listAgents } from '../api/endpoints';
import type { AgentCounts, AgentView, EventView } from '../api/types';
import {
  type AgentFilters,
  eventChangesCounts,
  eventMovesPage,
  NO_FILTERS,
  pageQuery,
  presenceChangesCounts,
  presenceMovesPage,
} from './agentWindow';
import { Fleet } from './fleet';
import { Refresh } from './refresh';

const fleet = new Fleet();
const byId = new Map<string, Signal<AgentView>>();

/** The page's agents, in name order; a new array only when they change. */
export const agentIds = signal<string[]>([]);
/** Bumped whenever an agent's signal appears or goes (the SSH panel's agent may be off the page). */
export const knownAgents = signal(0);
export const agentsLoaded = signal(false);
export const agentsError = signal<string | null>(null);
/** How many agents match the filters, over all pages. */
export const matchingTotal = signal(0);
/** The fleet's counts, from the server; null until first read. */
export const agentCounts = signal<AgentCounts | null>(null);
export const agentFilters = signal<AgentFilters>(NO_FILTERS);
/** Where each page up to the shown one starts: null, then each page's last name. */
const cursors = signal<(string | null)[]>([null]);
/** The shown page, from 0. */
export const pageIndex = computed(() => cursors.value.length - 1);
/** The next page's cursor; null on the last page. */
export const nextCursor = signal<string | null>(null);
/** The agent the SSH panel shows: kept (and kept true) even when off the page. */
let pinned: string | null = null;

export function agentSignal(id: string): Signal<AgentView> | undefined {
  return byId.get(id);
}

/** Copies what changed in the model to the signals the cards read. */
function publish(changed: Iterable<string>) {
  batch(() => {
    let membership = false;
    for (const id of changed) {
      const view = fleet.agents.get(id);
      if (!view) continue;
      const existing = byId.get(id);
      if (existing) existing.value = view;
      else {
        byId.set(id, signal(view));
        membership = true;
      }
    }
    for (const id of [...byId.keys()]) {
      if (!fleet.agents.has(id)) {
        byId.delete(id);
        membership = true;
      }
    }
    if (membership) knownAgents.value += 1;
  });
}

/** Bumped on logout: an answer to a request of the previous login is dropped. */
let epoch = 0;

const currentCursor = () => cursors.value[cursors.value.length - 1] ?? null;

async function readPage(): Promise<void> {
  const started = epoch;
  const filters = agentFilters.value;
  const cursor = currentCursor();
  const snapshot = fleet.beginSnapshot();
  let page;
  try {
    page = await listAgents(pageQuery(filters, cursor));
  } catch (error) {
    if (started !== epoch) return;
    fleet.abandonSnapshot(snapshot);
    agentsError.value = error instanceof Error ? error.message : String(error);
    throw error;
  }
  if (started !== epoch) return;
  if (filters !== agentFilters.value || cursor !== currentCursor()) {
    // The user moved on while this was in flight; that move asked for its own read.
    fleet.abandonSnapshot(snapshot);
    return;
  }
  const { changed } = fleet.applyList(page.agents, snapshot, new Set(pinned ? [pinned] : []));
  batch(() => {
    publish(changed);
    const ids = page.agents.map((a) => a.id);
    const shown = agentIds.value;
    if (ids.length !== shown.length || ids.some((id, i) => id !== shown[i])) agentIds.value = ids;
    matchingTotal.value = page.total;
    nextCursor.value = page.next;
    agentsError.value = null;
    agentsLoaded.value = true;
  });
  // The page's agents all went (a page past the first): back to the first page.
  if (page.agents.length === 0 && cursors.value.length > 1) {
    cursors.value = [null];
    pageRefresh.request();
  }
}

async function readCounts(): Promise<void> {
  const started = epoch;
  const counts = await getAgentCounts();
  if (started === epoch) agentCounts.value = counts;
}

/** The one list call that answers for every event that may change which agents the page holds. */
const pageRefresh = new Refresh(100, readPage);
/** The counts, read again after any number of events that change them. */
const countsRefresh = new Refresh(150, readCounts);

/** The first load; later loads go through `reconcileAgents`. */
export async function loadAgents(): Promise<void> {
  const [page, counts] = await Promise.allSettled([readPage(), readCounts()]);
  // Retried with backoff until they work.
  if (page.status === 'rejected') pageRefresh.request();
  if (counts.status === 'rejected') countsRefresh.request();
  agentsLoaded.value = true;
}

/** Reads the page and the counts again soon (after the event stream was cut, and now and then). */
export function reconcileAgents(): void {
  pageRefresh.request();
  countsRefresh.request();
  if (pinned) void readPinned(pinned);
}

/** New search or filters: the first page of what they match. */
export function setAgentFilters(change: Partial<AgentFilters>): void {
  batch(() => {
    agentFilters.value = { ...agentFilters.value, ...change };
    cursors.value = [null];
  });
  pageRefresh.request();
}

export function nextAgentsPage(): void {
  const next = nextCursor.value;
  if (next === null) return;
  cursors.value = [...cursors.value, next];
  pageRefresh.request();
}

export function previousAgentsPage(): void {
  if (cursors.value.length < 2) return;
  cursors.value = cursors.value.slice(0, -1);
  pageRefresh.request();
}

async function readPinned(id: string): Promise<void> {
  const started = epoch;
  try {
    const agent = await getAgent(id);
    if (started === epoch && pinned === id) putAgent(agent);
  } catch {
    // The next reconciliation asks again; the panel says what it knows meanwhile.
  }
}

/** Keeps this agent (the SSH panel's) known and true even when it is not on the page. */
export function pinAgent(id: string | null): void {
  pinned = id;
  if (id && !fleet.agents.has(id)) void readPinned(id);
}

/** Stores a fresh view of one agent (from an approval the user made, …). */
export function putAgent(agent: AgentView): void {
  fleet.put(agent);
  publish([agent.id]);
  countsRefresh.request();
}

export function agentEvent(event: EventView): void {
  const outcome = fleet.applyEvent(event);
  if (outcome.kind === 'applied') publish([outcome.id]);
  // An agent off the page stays off it unless the event may bring it on.
  if (eventMovesPage(event, agentFilters.value)) pageRefresh.request();
  if (eventChangesCounts(event)) countsRefresh.request();
}

/**
 * How often presence changes are asked for. An answer is a few bytes when nothing changed,
 * so this can be short: it bounds how long a card can be wrong about being online when an
 * event did not reach the page (the stream was down, the server restarted).
 */
export const PRESENCE_POLL_MS = 3000;
/** The page and the counts are read again this often, to correct anything else (status, facts). */
export const RECONCILE_MS = 60_000;

let presenceCursor: string | null = null;

export async function refreshPresence(): Promise<void> {
  const started = epoch;
  const snapshot = fleet.beginSnapshot();
  try {
    const changes = await getPresenceChanges(presenceCursor);
    if (started !== epoch) return;
    const { changed } = fleet.applyPresence(changes, snapshot);
    presenceCursor = changes.cursor;
    publish(changed);
    if (presenceMovesPage(changes, agentFilters.value)) pageRefresh.request();
    if (presenceChangesCounts(changes)) countsRefresh.request();
  } catch (error) {
    if (started === epoch) fleet.abandonSnapshot(snapshot);
    throw error;
  }
}

export function clearAgents(): void {
  epoch += 1;
  pageRefresh.cancel();
  countsRefresh.cancel();
  fleet.clear();
  byId.clear();
  presenceCursor = null;
  pinned = null;
  batch(() => {
    agentIds.value = [];
    knownAgents.value += 1;
    agentsLoaded.value = false;
    agentsError.value = null;
    agentCounts.value = null;
    matchingTotal.value = 0;
    nextCursor.value = null;
    cursors.value = [null];
  });
}
