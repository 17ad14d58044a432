// Storms of agent events are one row per kind, however the kinds interleave; anything else
// stays one row per event.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { EventKind, EventView } from '../src/api/types';
import { addNotification, GROUP_WINDOW_MS, groupTitle, type Notification } from '../src/state/notificationModel';

let id = 0;
function event(kind: EventKind, time: number, agent = id + 1): EventView {
  id += 1;
  return { id, time, kind, actor: 'system', agent: { id: `a${agent}`, name: `edge-${agent}`, did: '' }, detail: '' };
}

const rows = (list: Notification[]) => list.map((n) => [n.event.kind, n.count]);

test('2,000 agents back online are one row', () => {
  let list: Notification[] = [];
  for (let i = 0; i < 2000; i++) list = addNotification(list, event('agent.online', 1000 + i));
  assert.equal(list.length, 1);
  assert.equal(list[0].count, 2000);
  assert.equal(groupTitle(list[0]), '2,000 agents back online');
  assert.equal(list[0].id, id, 'the row is read when its newest event is');
});

test('a quiet window later, or another kind, starts a new row; an event already listed changes nothing', () => {
  let list: Notification[] = [];
  list = addNotification(list, event('agent.offline', 0));
  list = addNotification(list, event('agent.offline', 10));
  list = addNotification(list, event('session.state', 20));
  list = addNotification(list, event('session.state', 25));
  list = addNotification(list, event('agent.offline', 30));
  list = addNotification(list, event('agent.offline', 30 + GROUP_WINDOW_MS));
  assert.deepEqual(rows(list), [
    ['agent.offline', 1],
    ['agent.offline', 3],
    ['session.state', 1],
    ['session.state', 1],
  ]);
  assert.equal(groupTitle(list[0]), null);
  assert.equal(groupTitle(list[1]), '3 agents went offline');
  const same = addNotification(list, list[0].event);
  assert.equal(same, list, 'an event already listed changes nothing');
});

// What the fleet test saw on about half its runs: a starting fleet's agents each enroll, are
// approved (by the token) and come online, the three interleaved as the agents race; the bell
// had a row per event.
test('a fleet enrolling is one row per kind however enrolled, approved and online interleave', () => {
  const kinds: EventKind[] = ['agent.enrolled', 'agent.approved', 'agent.online'];
  // Each agent's three in order, the agents interleaved: round robin, then a shuffle (seeded).
  let seed = 7;
  const random = () => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
  // [kind, agent] pairs.
  const orders: [EventKind, number][][] = [
    Array.from({ length: 1204 * 3 }, (_, i) => [kinds[i % 3], Math.floor(i / 3)]),
    Array.from({ length: 1204 * 3 }, (_, i) => [kinds[Math.floor(i / 1204)], i % 1204]),
    (() => {
      const next = new Array(1204).fill(0);
      const out: [EventKind, number][] = [];
      while (out.length < 1204 * 3) {
        const agent = Math.floor(random() * 1204);
        if (next[agent] < 3) out.push([kinds[next[agent]++], agent]);
      }
      return out;
    })(),
  ];
  for (const order of orders) {
    let list: Notification[] = [];
    order.forEach(([kind, agent], i) => (list = addNotification(list, event(kind, 5000 + i, agent))));
    assert.equal(list.length, 3, rows(list).join(' | '));
    assert.deepEqual(list.map(groupTitle).sort(), [
      '1,204 agents approved',
      '1,204 agents back online',
      '1,204 agents enrolled',
    ]);
    assert.equal(list[0].id, id, 'the newest row carries the newest event');
  }
});

test('a blip: presence kinds interleaved with each other and with sessions stay one row per kind', () => {
  let list: Notification[] = [];
  const presence: EventKind[] = ['agent.offline', 'agent.not_responding', 'agent.online'];
  for (let i = 0; i < 300; i++) {
    list = addNotification(list, event(presence[i % 3], i * 10));
    if (i % 50 === 0) list = addNotification(list, event('session.state', i * 10 + 1));
  }
  assert.deepEqual(
    rows(list).filter(([kind]) => kind !== 'session.state'),
    [
      ['agent.online', 100],
      ['agent.not_responding', 100],
      ['agent.offline', 100],
    ],
  );
  assert.equal(list.filter((n) => n.event.kind === 'session.state').length, 6, 'sessions stay one row each');
  assert.equal(groupTitle(list[1]), '100 agents not responding');
});

test('a storm counts agents, not events: one that comes back twice is one of them', () => {
  let list: Notification[] = [];
  for (let i = 0; i < 300; i++) list = addNotification(list, event('agent.online', i, i));
  // The fleet drops and comes back within the window (the offline rows between).
  for (let i = 0; i < 300; i++) list = addNotification(list, event('agent.offline', 300 + i, i));
  for (let i = 0; i < 300; i++) list = addNotification(list, event('agent.online', 600 + i, i));
  assert.deepEqual(rows(list), [
    ['agent.online', 300],
    ['agent.offline', 300],
  ]);
  assert.equal(groupTitle(list[0]), '300 agents back online');
});
