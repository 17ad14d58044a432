// Which events and presence answers make the Agents page read its page of agents again, and
// the counts: the page holds 120 agents of the fleet, so a storm about agents off the page
// must cost nothing, while anything that may move an agent on or off the page reads it once.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { EventKind, EventView } from '../src/api/types';
import {
  type AgentFilters,
  eventChangesCounts,
  eventMovesPage,
  NO_FILTERS,
  PAGE_SIZE,
  pageQuery,
  presenceChangesCounts,
  presenceMovesPage,
} from '../src/state/agentWindow';

function event(kind: EventKind): EventView {
  return { id: 1, time: 1, kind, actor: 'system', agent: { id: 'x', name: 'edge-x', did: '' }, detail: '' };
}

const online: AgentFilters = { ...NO_FILTERS, online: 'online' };
const pending: AgentFilters = { ...NO_FILTERS, status: 'pending' };

test('the page is read with the filters, a page at a time', () => {
  assert.deepEqual(pageQuery(NO_FILTERS, null), {
    q: undefined,
    status: undefined,
    online: undefined,
    limit: PAGE_SIZE,
    cursor: undefined,
  });
  assert.deepEqual(pageQuery({ search: '  edge ', status: 'revoked', online: 'offline' }, 'edge-119'), {
    q: 'edge',
    status: 'revoked',
    online: false,
    limit: PAGE_SIZE,
    cursor: 'edge-119',
  });
});

test('without filters, agents coming and going never re-read the page', () => {
  for (const kind of ['agent.online', 'agent.offline', 'agent.not_responding', 'agent.approved'] as const) {
    assert.equal(eventMovesPage(event(kind), NO_FILTERS), false, kind);
  }
  assert.equal(eventMovesPage(event('agent.enrolled'), NO_FILTERS), true, 'a new agent may land on the page');
});

test('a filter on what an event changes re-reads the page', () => {
  assert.equal(eventMovesPage(event('agent.online'), online), true);
  assert.equal(eventMovesPage(event('agent.offline'), online), true);
  assert.equal(eventMovesPage(event('agent.approved'), online), false);
  assert.equal(eventMovesPage(event('agent.approved'), pending), true);
  assert.equal(eventMovesPage(event('agent.revoked'), pending), true);
  assert.equal(eventMovesPage(event('agent.online'), pending), false);
});

test('agent events and presence changes refresh the counts; quiet polls do not', () => {
  for (const kind of ['agent.enrolled', 'agent.online', 'agent.offline', 'agent.not_responding', 'agent.rejected'] as const) {
    assert.equal(eventChangesCounts(event(kind)), true, kind);
  }
  assert.equal(eventChangesCounts(event('session.state')), false);
  assert.equal(eventChangesCounts({ ...event('agent.online'), agent: undefined }), false);
  const quiet = { cursor: 'c', full: false, agents: [] };
  const moved = { cursor: 'c', full: false, agents: [{ id: 'x', online: false, last_seen: 1, liveness: 'offline' as const }] };
  assert.equal(presenceChangesCounts(quiet), false);
  assert.equal(presenceChangesCounts(moved), true);
  assert.equal(presenceChangesCounts({ ...quiet, full: true }), true);
  assert.equal(presenceMovesPage(moved, NO_FILTERS), false);
  assert.equal(presenceMovesPage(moved, online), true);
  assert.equal(presenceMovesPage(quiet, online), false);
});
