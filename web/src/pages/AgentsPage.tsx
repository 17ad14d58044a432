// Every agent as a card, with search and filters. The visible list is recomputed from the
// agents' signals, but the grid re-renders only when the set of visible ids really changes.

import { computed, signal } from '@preact/signals';
import type { AgentStatus } from '../api/types';
import { AgentCard } from '../components/AgentCard';
import { agentIds, agentSignal, agentsError, agentsLoaded } from '../state/agents';

type StatusFilter = AgentStatus | 'all';
type OnlineFilter = 'all' | 'online' | 'offline';

// Module-level, so the filters survive a visit to another page.
const search = signal('');
const statusFilter = signal<StatusFilter>('all');
const onlineFilter = signal<OnlineFilter>('all');

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
    return needle === '' || agent.name.toLowerCase().includes(needle);
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
  return (
    <section class="page" aria-labelledby="agents-title">
      <div class="page-header">
        <h1 id="agents-title">Agents</h1>
        <p class="muted" role="status">
          {agentsLoaded.value ? countText(ids.length, total) : 'Loading…'}
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
        {ids.map((id) => {
          const agent = agentSignal(id);
          return agent ? <AgentCard key={id} agent={agent} /> : null;
        })}
      </div>
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
          placeholder="Agent name"
          value={search.value}
          onInput={(e) => (search.value = e.currentTarget.value)}
        />
      </label>
      <label class="field">
        <span>Status</span>
        <select
          value={statusFilter.value}
          onChange={(e) => (statusFilter.value = e.currentTarget.value as StatusFilter)}
        >
          <option value="all">All</option>
          <option value="pending">Pending</option>
          <option value="approved">Approved</option>
          <option value="rejected">Rejected</option>
          <option value="revoked">Revoked</option>
        </select>
      </label>
      <label class="field">
        <span>Connection</span>
        <select
          value={onlineFilter.value}
          onChange={(e) => (onlineFilter.value = e.currentTarget.value as OnlineFilter)}
        >
          <option value="all">All</option>
          <option value="online">Online</option>
          <option value="offline">Offline</option>
        </select>
      </label>
    </form>
  );
}

function countText(shown: number, total: number): string {
  const noun = total === 1 ? 'agent' : 'agents';
  return shown === total ? `${total} ${noun}` : `${shown} of ${total} ${noun}`;
}
