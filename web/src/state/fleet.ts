// The agents as the page knows them, and the rules that keep them true: each event carries
// the state it reports (online, offline, not responding, a decision), which is applied at
// once without asking the server; snapshots (the list, presence changes) correct whatever the
// events could not tell. Pure: no signals, no requests, so that it is unit-tested alone.

import type { AgentView, EventView, Liveness, PresenceChanges } from '../api/types';

/** What an event meant for the page. */
export type EventOutcome =
  /** The agent's view changed; these ids need re-rendering. */
  | { kind: 'applied'; id: string }
  /** The event names an agent the page does not know (or cannot update from the event):
   *  fetch the list. */
  | { kind: 'unknown'; id: string }
  | { kind: 'ignored' };

/** A snapshot request in flight: events applied after it began are applied again on top of
 *  its answer, since the answer may predate them. */
export interface Snapshot {
  readonly from: number;
}

/** The liveness an agent view implies when the server does not say it. */
export function livenessOf(agent: AgentView): Liveness {
  return agent.liveness ?? (agent.online ? 'online' : 'offline');
}

/** The new view of `agent` after `event`, or null when the event does not change it, or
 *  'fetch' when only the server can say what it looks like now. */
export function applyAgentEvent(agent: AgentView, event: EventView): AgentView | null | 'fetch' {
  switch (event.kind) {
    case 'agent.online':
      return { ...agent, online: true, liveness: 'online', last_seen: Math.max(event.time, agent.last_seen ?? 0) };
    case 'agent.offline':
      return { ...agent, online: false, liveness: 'offline', last_seen: Math.max(event.time, agent.last_seen ?? 0) };
    case 'agent.not_responding':
      return agent.online ? { ...agent, liveness: 'not_responding' } : null;
    case 'agent.approved':
      return agent.status === 'approved' ? null : { ...agent, status: 'approved' };
    case 'agent.rejected':
      return agent.status === 'rejected' ? null : { ...agent, status: 'rejected' };
    case 'agent.revoked':
      return agent.status === 'revoked' ? null : { ...agent, status: 'revoked' };
    case 'agent.enrolled':
      // A known agent "enrolled" again: its facts may have changed.
      return 'fetch';
    default:
      return null;
  }
}

const AGENT_KINDS = new Set<string>([
  'agent.enrolled',
  'agent.approved',
  'agent.rejected',
  'agent.revoked',
  'agent.online',
  'agent.offline',
  'agent.not_responding',
]);

export function isAgentEvent(event: EventView): boolean {
  return AGENT_KINDS.has(event.kind) && event.agent !== undefined;
}

export class Fleet {
  readonly agents = new Map<string, AgentView>();
  /** Events applied while a snapshot was in flight, in order. */
  private journal: EventView[] = [];
  private journalStart = 0;
  private open = 0;

  applyEvent(event: EventView): EventOutcome {
    if (!isAgentEvent(event) || !event.agent) return { kind: 'ignored' };
    if (this.open > 0) this.journal.push(event);
    return this.apply(event, event.agent.id);
  }

  private apply(event: EventView, id: string): EventOutcome {
    const known = this.agents.get(id);
    if (!known) return { kind: 'unknown', id };
    const next = applyAgentEvent(known, event);
    if (next === 'fetch') return { kind: 'unknown', id };
    if (next === null) return { kind: 'ignored' };
    this.agents.set(id, next);
    return { kind: 'applied', id };
  }

  /** Call before sending a snapshot request; pass the result to the apply call. */
  beginSnapshot(): Snapshot {
    if (this.open === 0) {
      this.journal = [];
      this.journalStart = 0;
    }
    this.open += 1;
    return { from: this.journalStart + this.journal.length };
  }

  /** The request failed: nothing to apply. */
  abandonSnapshot(_snapshot: Snapshot): void {
    this.close();
  }

  /**
   * A list of agents: the page the screen shows. Agents missing from it are dropped, but for
   * those in `keep` (the SSH panel's agent). Returns the ids whose view changed, and whether
   * the set of agents changed.
   */
  applyList(
    list: AgentView[],
    snapshot: Snapshot,
    keep: ReadonlySet<string> = new Set(),
  ): { changed: string[]; membership: boolean } {
    const changed: string[] = [];
    const seen = new Set<string>();
    let membership = false;
    for (const agent of list) {
      seen.add(agent.id);
      const known = this.agents.get(agent.id);
      if (!known) membership = true;
      if (!known || !sameAgent(known, agent)) {
        this.agents.set(agent.id, agent);
        changed.push(agent.id);
      }
    }
    for (const id of [...this.agents.keys()]) {
      if (!seen.has(id) && !keep.has(id)) {
        this.agents.delete(id);
        membership = true;
      }
    }
    changed.push(...this.replay(snapshot));
    this.close();
    return { changed: unique(changed), membership };
  }

  /**
   * Presence changes: the online agents (full) or those whose presence moved (delta).
   * Returns the ids whose view changed; `unknown` lists online agents the page has never seen.
   */
  applyPresence(presence: PresenceChanges, snapshot: Snapshot): { changed: string[]; unknown: string[] } {
    const changed: string[] = [];
    const unknown: string[] = [];
    const set = (id: string, online: boolean, lastSeen: number | null) => {
      const known = this.agents.get(id);
      if (!known) {
        if (online) unknown.push(id);
        return;
      }
      const liveness: Liveness = online ? (known.online ? livenessOf(known) : 'online') : 'offline';
      const last_seen = lastSeen === null ? known.last_seen : Math.max(lastSeen, known.last_seen ?? 0);
      if (known.online === online && known.last_seen === last_seen && livenessOf(known) === liveness) return;
      this.agents.set(id, { ...known, online, liveness, last_seen });
      changed.push(id);
    };
    const listed = new Set<string>();
    for (const entry of presence.agents) {
      listed.add(entry.id);
      const online = entry.online;
      set(entry.id, online, entry.last_seen);
      // The server says exactly how this agent is doing when it knows.
      const liveness = entry.liveness;
      const known = this.agents.get(entry.id);
      if (liveness && known && online && livenessOf(known) !== liveness) {
        this.agents.set(entry.id, { ...known, liveness });
        changed.push(entry.id);
      }
    }
    if (presence.full) {
      for (const [id, agent] of this.agents) {
        if (agent.online && !listed.has(id)) set(id, false, null);
      }
    }
    changed.push(...this.replay(snapshot));
    this.close();
    return { changed: unique(changed), unknown };
  }

  /** Stores one agent's fresh view (from a decision the user made, say). */
  put(agent: AgentView): boolean {
    const isNew = !this.agents.has(agent.id);
    this.agents.set(agent.id, agent);
    return isNew;
  }

  clear(): void {
    this.agents.clear();
    this.journal = [];
    this.journalStart = 0;
    this.open = 0;
  }

  private replay(snapshot: Snapshot): string[] {
    const changed: string[] = [];
    for (const event of this.journal.slice(Math.max(0, snapshot.from - this.journalStart))) {
      const outcome: EventOutcome = event.agent ? this.apply(event, event.agent.id) : { kind: 'ignored' };
      if (outcome.kind === 'applied') changed.push(outcome.id);
    }
    return changed;
  }

  private close(): void {
    this.open = Math.max(0, this.open - 1);
    if (this.open === 0) {
      this.journalStart += this.journal.length;
      this.journal = [];
    }
  }
}

function sameAgent(a: AgentView, b: AgentView): boolean {
  return (
    a.name === b.name &&
    a.status === b.status &&
    a.online === b.online &&
    a.last_seen === b.last_seen &&
    livenessOf(a) === livenessOf(b) &&
    a.remote_addr === b.remote_addr &&
    JSON.stringify(a.facts) === JSON.stringify(b.facts)
  );
}

function unique(ids: string[]): string[] {
  return [...new Set(ids)];
}
