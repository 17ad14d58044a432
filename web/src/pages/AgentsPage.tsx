// The agents as cards, with search, filters and the fleet's counts. The server searches,
// filters and pages (state/agents.ts holds one page of 120), so a fleet of 10,000 costs the
// page 120 cards and one page of JSON, not the fleet.

import type { AgentCounts } from '../api/types';
import { AgentCard } from '../components/AgentCard';
import { PAGE_SIZE, type OnlineFilter, type StatusFilter } from '../state/agentWindow';
import {
  agentCounts,
  agentFilters,
  agentIds,
  agentSignal,
  agentsError,
  agentsLoaded,
  matchingTotal,
  nextAgentsPage,
  nextCursor,
  pageIndex,
  previousAgentsPage,
  setAgentFilters,
} from '../state/agents';

export function AgentsPage() {
  const ids = agentIds.value;
  const counts = agentCounts.value;
  const total = counts?.total ?? 0;
  const matching = matchingTotal.value;
  const filters = agentFilters.value;
  const filtered = filters.search.trim() !== '' || filters.status !== 'all' || filters.online !== 'all';
  const first = pageIndex.value * PAGE_SIZE;
  return (
    <section class="page" aria-labelledby="agents-title">
      <div class="page-header">
        <h1 id="agents-title">Agents</h1>
        <p
          class="muted"
          role="status"
          data-total={counts?.total}
          data-online={counts?.online}
          data-not-responding={counts?.not_responding}
        >
          {agentsLoaded.value && counts ? countText(counts) : 'Loading…'}
        </p>
      </div>
      <AgentFilters counts={counts} />
      {agentsError.value && (
        <p class="notice error" role="alert">
          The agents could not be loaded: {agentsError.value}
        </p>
      )}
      {agentsLoaded.value && counts && total === 0 && !agentsError.value && (
        <p class="empty">No agent yet. Create an enrollment token on the Admin page and start an agent with it.</p>
      )}
      {agentsLoaded.value && total > 0 && filtered && matching === 0 && (
        <p class="empty">No agent matches these filters.</p>
      )}
      <div class="agent-grid">
        {ids.map((id) => {
          const agent = agentSignal(id);
          return agent ? <AgentCard key={id} agent={agent} /> : null;
        })}
      </div>
      {(pageIndex.value > 0 || nextCursor.value !== null) && (
        <nav class="show-more pager" aria-label="Pages of agents">
          <button type="button" class="button" disabled={pageIndex.value === 0} onClick={previousAgentsPage}>
            Previous page
          </button>
          <span class="muted">
            {n(first + 1)}–{n(first + ids.length)} of {n(matching)}
          </span>
          <button type="button" class="button" disabled={nextCursor.value === null} onClick={nextAgentsPage}>
            Next page
          </button>
        </nav>
      )}
    </section>
  );
}

function AgentFilters({ counts }: { counts: AgentCounts | null }) {
  const filters = agentFilters.value;
  const c = (count: number | undefined) => (count === undefined ? '' : ` (${n(count)})`);
  return (
    <form class="filters" role="search" aria-label="Filter agents" onSubmit={(e) => e.preventDefault()}>
      <label class="field grow">
        <span>Search</span>
        <input
          type="search"
          placeholder="Name, hostname, OS or DID prefix"
          value={filters.search}
          onInput={(e) => setAgentFilters({ search: e.currentTarget.value })}
        />
      </label>
      <label class="field">
        <span>Status</span>
        <select
          value={filters.status}
          onChange={(e) => setAgentFilters({ status: e.currentTarget.value as StatusFilter })}
        >
          <option value="all">All{c(counts?.total)}</option>
          <option value="pending">Pending{c(counts?.pending)}</option>
          <option value="approved">Approved{c(counts?.approved)}</option>
          <option value="rejected">Rejected{c(counts?.rejected)}</option>
          <option value="revoked">Revoked{c(counts?.revoked)}</option>
        </select>
      </label>
      <label class="field">
        <span>Connection</span>
        <select
          value={filters.online}
          onChange={(e) => setAgentFilters({ online: e.currentTarget.value as OnlineFilter })}
        >
          <option value="all">All</option>
          <option value="online">Online{c(counts?.online)}</option>
          <option value="offline">Offline{c(counts ? counts.total - counts.online : undefined)}</option>
        </select>
      </label>
    </form>
  );
}

function n(count: number): string {
  return count.toLocaleString('en-US');
}

/** The fleet at a glance: how many, online, not responding, with a session open. */
export function countText(counts: AgentCounts): string {
  const noun = counts.total === 1 ? 'agent' : 'agents';
  const parts = [`${n(counts.total)} ${noun}`, `${n(counts.online)} online`];
  if (counts.not_responding > 0) parts.push(`${n(counts.not_responding)} not responding`);
  if (counts.with_sessions > 0) parts.push(`${n(counts.with_sessions)} with SSH sessions`);
  return parts.join(' · ');
}
