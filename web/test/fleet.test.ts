// The page's agent state: events applied without refetching, snapshots (the list, presence)
// correcting the cards both ways, and events that arrive while a snapshot is in flight.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { AgentView, EventKind, EventView, PresenceChanges } from '../src/api/types';
import { Fleet, livenessOf } from '../src/state/fleet';

function agent(id: string, over: Partial<AgentView> = {}): AgentView {
  return {
    id,
    name: `edge-${id}`,
    did: `did:key:z${id}`,
    status: 'approved',
    online: false,
    last_seen: 1000,
    facts: { hostname: id, os: 'linux', kernel: '', arch: 'x86_64', cpus: 1, memory_bytes: 0, agent_version: '', logins: [] },
    enrolled_at: 0,
    ssh_public_key: '',
    ...over,
  };
}

let nextId = 1;
function event(kind: EventKind, id: string, time = 5000): EventView {
  return { id: nextId++, time, kind, actor: 'system', agent: { id, name: `edge-${id}`, did: '' }, detail: '' };
}

function fleetOf(...agents: AgentView[]): Fleet {
  const fleet = new Fleet();
  fleet.applyList(agents, fleet.beginSnapshot());
  return fleet;
}

test('online, offline, not responding and decisions apply from the event alone', () => {
  const fleet = fleetOf(agent('a'));
  assert.deepEqual(fleet.applyEvent(event('agent.online', 'a', 6000)), { kind: 'applied', id: 'a' });
  assert.equal(fleet.agents.get('a')?.online, true);
  assert.equal(fleet.agents.get('a')?.last_seen, 6000);
  fleet.applyEvent(event('agent.not_responding', 'a'));
  assert.equal(livenessOf(fleet.agents.get('a')!), 'not_responding');
  fleet.applyEvent(event('agent.offline', 'a', 7000));
  assert.equal(fleet.agents.get('a')?.online, false);
  assert.equal(livenessOf(fleet.agents.get('a')!), 'offline');
  fleet.applyEvent(event('agent.revoked', 'a'));
  assert.equal(fleet.agents.get('a')?.status, 'revoked');
  // Nothing new: nothing to re-render.
  assert.deepEqual(fleet.applyEvent(event('agent.revoked', 'a')), { kind: 'ignored' });
});

test('an event about an agent the page does not know asks for the list, not for the agent', () => {
  const fleet = fleetOf(agent('a'));
  assert.deepEqual(fleet.applyEvent(event('agent.online', 'new')), { kind: 'unknown', id: 'new' });
  assert.deepEqual(fleet.applyEvent(event('agent.enrolled', 'a')), { kind: 'unknown', id: 'a' });
  assert.deepEqual(fleet.applyEvent({ ...event('user.login', 'a'), agent: undefined }), { kind: 'ignored' });
});

test('a storm of 2,000 events leaves every card right with no fetch', () => {
  const ids = Array.from({ length: 2000 }, (_, i) => `n${i}`);
  const fleet = fleetOf(...ids.map((id) => agent(id)));
  const outcomes = ids.map((id) => fleet.applyEvent(event('agent.online', id)));
  assert.ok(outcomes.every((o) => o.kind === 'applied'));
  assert.ok([...fleet.agents.values()].every((a) => a.online));
  for (const id of ids) fleet.applyEvent(event('agent.offline', id));
  assert.ok([...fleet.agents.values()].every((a) => !a.online));
});

test('a full presence answer corrects cards both ways', () => {
  const fleet = fleetOf(agent('up', { online: true }), agent('down'), agent('stays', { online: true }));
  const presence: PresenceChanges = {
    cursor: 'c.1',
    full: true,
    agents: [
      { id: 'down', online: true, last_seen: 9000 },
      { id: 'stays', online: true, last_seen: 9000 },
      { id: 'stranger', online: true, last_seen: 9000 },
    ],
  };
  const { changed, unknown } = fleet.applyPresence(presence, fleet.beginSnapshot());
  assert.deepEqual(changed.sort(), ['down', 'stays', 'up']);
  assert.deepEqual(unknown, ['stranger']);
  assert.equal(fleet.agents.get('up')?.online, false, 'online → offline when not listed');
  assert.equal(fleet.agents.get('down')?.online, true, 'offline → online when listed');
});

test('a delta presence answer changes only the agents it names', () => {
  const fleet = fleetOf(agent('a', { online: true }), agent('b', { online: true }));
  const { changed } = fleet.applyPresence(
    { cursor: 'c.2', full: false, agents: [{ id: 'a', online: false, last_seen: 8000 }] },
    fleet.beginSnapshot(),
  );
  assert.deepEqual(changed, ['a']);
  assert.equal(fleet.agents.get('a')?.online, false);
  assert.equal(fleet.agents.get('b')?.online, true);
  const quiet = fleet.applyPresence({ cursor: 'c.2', full: false, agents: [] }, fleet.beginSnapshot());
  assert.deepEqual(quiet.changed, []);
});

test('presence carries liveness when the server tracks it', () => {
  const fleet = fleetOf(agent('a', { online: true }));
  fleet.applyPresence(
    { cursor: 'c', full: true, agents: [{ id: 'a', online: true, liveness: 'not_responding', last_seen: 1 }] },
    fleet.beginSnapshot(),
  );
  assert.equal(livenessOf(fleet.agents.get('a')!), 'not_responding');
});

test('a delta says when an online agent stops responding and when it answers again', () => {
  const fleet = fleetOf(agent('a', { online: true, liveness: 'online' }), agent('b', { online: true }));
  const quiet = fleet.applyPresence(
    { cursor: 'c.3', full: false, agents: [{ id: 'a', online: true, liveness: 'not_responding', last_seen: 1000 }] },
    fleet.beginSnapshot(),
  );
  assert.deepEqual(quiet.changed, ['a']);
  assert.equal(livenessOf(fleet.agents.get('a')!), 'not_responding');
  assert.equal(fleet.agents.get('a')?.online, true, 'still connected');
  assert.equal(livenessOf(fleet.agents.get('b')!), 'online', 'the others are untouched');
  const back = fleet.applyPresence(
    { cursor: 'c.4', full: false, agents: [{ id: 'a', online: true, liveness: 'online', last_seen: 1000 }] },
    fleet.beginSnapshot(),
  );
  assert.deepEqual(back.changed, ['a']);
  assert.equal(livenessOf(fleet.agents.get('a')!), 'online');
});

test('a page of the list keeps the pinned agent (the SSH panel\'s) though it is off the page', () => {
  const fleet = fleetOf(agent('a'), agent('panel'), agent('gone'));
  const { membership } = fleet.applyList([agent('b')], fleet.beginSnapshot(), new Set(['panel']));
  assert.equal(membership, true);
  assert.deepEqual([...fleet.agents.keys()].sort(), ['b', 'panel']);
  // Kept true by presence like any other.
  fleet.applyPresence({ cursor: 'c', full: true, agents: [] }, fleet.beginSnapshot());
  assert.equal(fleet.agents.get('panel')?.online, false);
});

test('the list corrects status, adds new agents and drops vanished ones', () => {
  const fleet = fleetOf(agent('a'), agent('gone'));
  const { changed, membership } = fleet.applyList(
    [agent('a', { status: 'revoked' }), agent('b')],
    fleet.beginSnapshot(),
  );
  assert.equal(membership, true);
  assert.deepEqual(changed.sort(), ['a', 'b']);
  assert.equal(fleet.agents.get('a')?.status, 'revoked');
  assert.equal(fleet.agents.has('gone'), false);
  const again = fleet.applyList([agent('a', { status: 'revoked' }), agent('b')], fleet.beginSnapshot());
  assert.deepEqual(again, { changed: [], membership: false });
});

test('events that arrive while a snapshot is in flight win over its older answer', () => {
  const fleet = fleetOf(agent('a'));
  const snapshot = fleet.beginSnapshot();
  fleet.applyEvent(event('agent.online', 'a'));
  // The answer was read before the event: it still says offline.
  const { changed } = fleet.applyList([agent('a', { online: false })], snapshot);
  assert.deepEqual(changed, ['a']);
  assert.equal(fleet.agents.get('a')?.online, true);

  const presence = fleet.beginSnapshot();
  fleet.applyEvent(event('agent.offline', 'a'));
  fleet.applyPresence({ cursor: 'x', full: true, agents: [{ id: 'a', online: true, last_seen: 1 }] }, presence);
  assert.equal(fleet.agents.get('a')?.online, false);
});

test('a failed snapshot leaves what the events said', () => {
  const fleet = fleetOf(agent('a'));
  const snapshot = fleet.beginSnapshot();
  fleet.applyEvent(event('agent.online', 'a'));
  fleet.abandonSnapshot(snapshot);
  assert.equal(fleet.agents.get('a')?.online, true);
  // The journal is empty again: a later snapshot replays nothing stale.
  fleet.applyEvent(event('agent.offline', 'a'));
  fleet.applyList([agent('a', { online: true })], fleet.beginSnapshot());
  assert.equal(fleet.agents.get('a')?.online, true);
});
