// Agents: one signal per agent, so that an event re-renders only that agent's card, and a
// list of ids that changes only when an agent appears. Events name the agent; we refetch just
// that one (coalescing bursts, such as the replay when the event stream opens).

import { signal, type Signal } from '@preact/signals';
import { getAgent, getPresence, listAgents } from '../api/endpoints';
import { ApiError } from '../api/http';
import { AGENT_EVENT_KINDS, type AgentView, type EventView } from '../api/types';
import { Coalescer } from './coalesce';

const byId = new Map<string, Signal<AgentView>>();

/** Every agent's id, sorted by name; a new array only when the set of agents changes. */
export const agentIds = signal<string[]>([]);
export const agentsLoaded = signal(false);
export const agentsError = signal<string | null>(null);

export function agentSignal(id: string): Signal<AgentView> | undefined {
  return byId.get(id);
}

export async function loadAgents(): Promise<void> {
  try {
    const agents = await listAgents();
    for (const agent of agents) put(agent, false);
    sortIds();
    agentsError.value = null;
  } catch (error) {
    agentsError.value = error instanceof Error ? error.message : String(error);
  } finally {
    agentsLoaded.value = true;
  }
}

/** Stores a fresh view of one agent (from an approval, a refetch, …). */
export function putAgent(agent: AgentView): void {
  put(agent, true);
}

function put(agent: AgentView, sort: boolean) {
  const existing = byId.get(agent.id);
  if (existing) {
    existing.value = agent;
    return;
  }
  byId.set(agent.id, signal(agent));
  if (sort) sortIds();
}

function sortIds() {
  agentIds.value = [...byId.values()]
    .map((s) => s.peek())
    .sort((a, b) => a.name.localeCompare(b.name))
    .map((a) => a.id);
}

const AGENT_EVENTS = new Set(AGENT_EVENT_KINDS);

/** One fetch per agent per burst of events. */
const refreshes = new Coalescer(150, (id) => {
  getAgent(id).then(putAgent, (error: unknown) => {
    // An agent that vanished from the server has nothing left to show.
    if (!(error instanceof ApiError && error.status === 404)) console.warn('agent refresh failed', error);
  });
});

export function agentEvent(event: EventView): void {
  if (!event.agent || !AGENT_EVENTS.has(event.kind)) return;
  refreshes.add(event.agent.id);
}

/**
 * Heartbeats are not events: connected agents' "last seen" comes from polling the compact
 * presence list at about the agents' sync rate. Agents that went offline get an event and
 * a refetch; those newly online too.
 */
export const PRESENCE_POLL_MS = 10_000;

export async function refreshPresence(): Promise<void> {
  const online = await getPresence();
  for (const { id, last_seen } of online) {
    const agent = byId.get(id);
    if (agent && agent.peek().online && agent.peek().last_seen !== last_seen) {
      agent.value = { ...agent.peek(), last_seen };
    }
  }
}

export function clearAgents(): void {
  byId.clear();
  refreshes.clear();
  agentIds.value = [];
  agentsLoaded.value = false;
  agentsError.value = null;
}
