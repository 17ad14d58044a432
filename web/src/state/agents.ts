// Agents: one signal per agent, so that an event re-renders only that agent's card, and a
// list of ids that changes only when an agent appears or goes. The rules live in fleet.ts:
// an event's own state is applied at once; what only the server can say is fetched with ONE
// list call for any number of agents (retried until it succeeds); presence changes are polled
// cheaply and correct the cards both ways; the whole list is re-read now and then, and after
// the event stream was cut (a server restart), to correct everything else.

import { batch, signal, type Signal } from '@preact/signals';
import { getPresenceChanges, listAgents } from '../api/endpoints';
import type { AgentView, EventView } from '../api/types';
import { Fleet } from './fleet';
import { Refresh } from './refresh';

const fleet = new Fleet();
const byId = new Map<string, Signal<AgentView>>();

/** Every agent's id, sorted by name; a new array only when the set of agents changes. */
export const agentIds = signal<string[]>([]);
export const agentsLoaded = signal(false);
export const agentsError = signal<string | null>(null);

export function agentSignal(id: string): Signal<AgentView> | undefined {
  return byId.get(id);
}

/** Copies what changed in the model to the signals the cards read. */
function publish(changed: Iterable<string>, membership: boolean) {
  batch(() => {
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
    if (!membership) return;
    for (const id of [...byId.keys()]) if (!fleet.agents.has(id)) byId.delete(id);
    agentIds.value = [...fleet.agents.values()].sort((a, b) => a.name.localeCompare(b.name)).map((a) => a.id);
  });
}

/** Bumped on logout: an answer to a request of the previous login is dropped. */
let epoch = 0;

async function readList(): Promise<void> {
  const started = epoch;
  const snapshot = fleet.beginSnapshot();
  let list: AgentView[];
  try {
    list = await listAgents();
  } catch (error) {
    if (started !== epoch) return;
    fleet.abandonSnapshot(snapshot);
    agentsError.value = error instanceof Error ? error.message : String(error);
    throw error;
  }
  if (started !== epoch) return;
  const { changed, membership } = fleet.applyList(list, snapshot);
  publish(changed, membership);
  agentsError.value = null;
  agentsLoaded.value = true;
}

/** The one list call that answers for every agent the events could not update. */
const listRefresh = new Refresh(150, readList);

/** The first load; later loads go through `reconcileAgents`. */
export async function loadAgents(): Promise<void> {
  try {
    await readList();
  } catch {
    listRefresh.request(); // retried with backoff until it works
  } finally {
    agentsLoaded.value = true;
  }
}

/** Re-reads the whole list soon (after the event stream was cut, and now and then). */
export function reconcileAgents(): void {
  listRefresh.request();
}

/** Stores a fresh view of one agent (from an approval the user made, …). */
export function putAgent(agent: AgentView): void {
  const isNew = fleet.put(agent);
  publish([agent.id], isNew);
}

export function agentEvent(event: EventView): void {
  const outcome = fleet.applyEvent(event);
  if (outcome.kind === 'applied') publish([outcome.id], false);
  else if (outcome.kind === 'unknown') listRefresh.request();
}

/**
 * How often presence changes are asked for. An answer is a few bytes when nothing changed,
 * so this can be short: it bounds how long a card can be wrong about being online when an
 * event did not reach the page (the stream was down, the server restarted).
 */
export const PRESENCE_POLL_MS = 3000;
/** The whole list is re-read this often, to correct anything else (status, facts). */
export const RECONCILE_MS = 60_000;

let presenceCursor: string | null = null;

export async function refreshPresence(): Promise<void> {
  const started = epoch;
  const snapshot = fleet.beginSnapshot();
  try {
    const changes = await getPresenceChanges(presenceCursor);
    if (started !== epoch) return;
    const { changed, unknown } = fleet.applyPresence(changes, snapshot);
    presenceCursor = changes.cursor;
    publish(changed, false);
    if (unknown.length) listRefresh.request();
  } catch (error) {
    if (started === epoch) fleet.abandonSnapshot(snapshot);
    throw error;
  }
}

export function clearAgents(): void {
  epoch += 1;
  listRefresh.cancel();
  fleet.clear();
  byId.clear();
  presenceCursor = null;
  agentIds.value = [];
  agentsLoaded.value = false;
  agentsError.value = null;
}
