// The agents as cards, with search, filters and counts. The visible list is recomputed from
// the agents' signals, but the grid re-renders only when the set of visible ids really
// changes, and it renders a page of cards at a time ("Show more"): 10,000 cards in the DOM
// would stall every update.

import { computed, signal } from '@preact/signals';
import type { AgentStatus, AgentView } from '../api/types';
import { AgentCard } from '../components/AgentCard';
import { agentIds, agentSignal, agentsError, agentsLoaded } from '../state/agents';

type StatusFilter = AgentStatus | 'all';
type OnlineFilter = 'all' | 'online' | 'offline';

// Module-level, so the filters survive a visit to another page.
const search = signal('');
const statusFilter = signal<StatusFilter>('all');
const onlineFilter = signal<OnlineFilter>('all');

/** Cards rendered per "Show more". */
export const CARDS_PER_PAGE = 120;
const shown = signal(CARDS_PER_PAGE);

/** Search as the server's: part of the name, hostname or OS, or a prefix of the DID. */
export function matchesSearch(agent: AgentView, needle: string): boolean {
  if (needle === '') return true;
  const did = agent.did.toLowerCase();
  return (
    agent.name.toLowerCase().includes(needle) ||
    agent.facts.hostname.toLowerCase().includes(needle) ||
    agent.facts.os.toLowerCase().includes(needle) ||
    did.startsWith(needle) ||
    did.startsWith(`did:key:${needle}`)
  );
}

/** How many agents have each status, and how many are online, over the whole fleet. */
const counts = computed(() => {
  const byStatus: Record<AgentStatus, number> = { pending: 0, approved: 0, rejected: 0, revoked: 0 };
  let online = 0;
  for (const id of agentIds.value) {
    const agent = agentSignal(id)?.value;
    if (!agent) continue;
    byStatus[agent.status] += 1;
    if (agent.online) online += 1;
  }
  return { byStatus, online, total: agentIds.value.length };
});

let previous: string[] = [];
const visibleIds = computed(() => {
  const needle = search.value.trim().toLowerCase();
  const status = statusFilter.value;
  const online = onlineFilter.value;
  const ids = agentIds.value.filter((id) => {
    const agent = agentSignal(id)?.value;
    if (!agent) return false;
    if (status !== 'all' && agent.status !== status) return false;
    if (online !== 'all' && agent.online !== (online === 'online')) return false;
    return matchesSearch(agent, needle);
  });
  // An agent going online re-runs this filter; keep the same array when nothing moved, so
  // the grid does not re-render a thousand cards for it.
  if (ids.length === previous.length && ids.every((id, i) => id === previous[i])) return previous;
  previous = ids;
  return ids;
});

export function AgentsPage() {
  const ids = visibleIds.value;
  const total = agentIds.value.length;
  const { online } = counts.value;
  const page = ids.slice(0, shown.value);
  return (
    <section class="page" aria-labelledby="agents-title">
      <div class="page-header">
        <h1 id="agents-title">Agents</h1>
        <p class="muted" role="status" data-total={total} data-online={online}>
          {agentsLoaded.value ? countText(ids.length, total, online) : 'Loading…'}
        </p>
      </div>
      <AgentFilters />
      {agentsError.value && (
        <p class="notice error" role="alert">
          The agents could not be loaded: {agentsError.value}
        </p>
      )}
      {agentsLoaded.value && total === 0 && !agentsError.value && (
        <p class="empty">No agent yet. Create an enrollment token on the Admin page and start an agent with it.</p>
      )}
      {total > 0 && ids.length === 0 && <p class="empty">No agent matches these filters.</p>}
      <div class="agent-grid">
        {page.map((id) => {
          const agent = agentSignal(id);
          return agent ? <AgentCard key={id} agent={agent} /> : null;
        })}
      </div>
      {ids.length > page.length && (
        <p class="show-more">
          <button type="button" class="button" onClick={() => (shown.value += CARDS_PER_PAGE)}>
            Show {Math.min(CARDS_PER_PAGE, ids.length - page.length).toLocaleString('en-US')} more (
            {(ids.length - page.length).toLocaleString('en-US')} not shown)
          </button>
        </p>
      )}
    </section>
  );
}

function AgentFilters() {
  return (
    <form class="filters" role="search" aria-label="Filter agents" onSubmit={(e) => e.preventDefault()}>
      <label class="field grow">
        <span>Search</span>
        <input
          type="search"
          placeholder="Name, hostname, OS or DID"
          value={search.value}
          onInput={(e) => {
            search.value = e.currentTarget.value;
            shown.value = CARDS_PER_PAGE;
          }}
        />
      </label>
      <label class="field">
        <span>Status</span>
        <select
          value={statusFilter.value}
          onChange={(e) => {
            statusFilter.value = e.currentTarget.value as StatusFilter;
            shown.value = CARDS_PER_PAGE;
          }}
        >
          <option value="all">All ({n(counts.value.total)})</option>
          <option value="pending">Pending ({n(counts.value.byStatus.pending)})</option>
          <option value="approved">Approved ({n(counts.value.byStatus.approved)})</option>
          <option value="rejected">Rejected ({n(counts.value.byStatus.rejected)})</option>
          <option value="revoked">Revoked ({n(counts.value.byStatus.revoked)})</option>
        </select>
      </label>
      <label class="field">
        <span>Connection</span>
        <select
          value={onlineFilter.value}
          onChange={(e) => {
            onlineFilter.value = e.currentTarget.value as OnlineFilter;
            shown.value = CARDS_PER_PAGE;
          }}
        >
          <option value="all">All</option>
          <option value="online">Online ({n(counts.value.online)})</option>
          <option value="offline">Offline ({n(counts.value.total - counts.value.online)})</option>
        </select>
      </label>
    </form>
  );
}

function n(count: number): string {
  return count.toLocaleString('en-US');
}

function countText(shown: number, total: number, online: number): string {
  const noun = total === 1 ? 'agent' : 'agents';
  const all = shown === total ? `${n(total)} ${noun}` : `${n(shown)} of ${n(total)} ${noun}`;
  return `${all} · ${n(online)} online`;
}
