// Floods of presence changes are one row; anything else stays one row per event.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { EventKind, EventView } from '../src/api/types';
import { addNotification, groupTitle, type Notification } from '../src/state/notificationModel';

let id = 0;
function event(kind: EventKind, time: number): EventView {
  id += 1;
  return { id, time, kind, actor: 'system', agent: { id: `a${id}`, name: `edge-${id}`, did: '' }, detail: '' };
}

test('2,000 agents back online are one row', () => {
  let list: Notification[] = [];
  for (let i = 0; i < 2000; i++) list = addNotification(list, event('agent.online', 1000 + i));
  assert.equal(list.length, 1);
  assert.equal(list[0].count, 2000);
  assert.equal(groupTitle(list[0]), '2,000 agents back online');
  assert.equal(list[0].id, id, 'the row is read when its newest event is');
});

test('other kinds, other floods and later changes start new rows', () => {
  let list: Notification[] = [];
  list = addNotification(list, event('agent.offline', 0));
  list = addNotification(list, event('agent.offline', 10));
  list = addNotification(list, event('session.state', 20));
  list = addNotification(list, event('agent.offline', 30));
  list = addNotification(list, event('agent.offline', 40_000));
  assert.deepEqual(
    list.map((n) => n.count),
    [1, 1, 1, 2],
  );
  assert.equal(groupTitle(list[1]), null);
  const same = addNotification(list, list[0].event);
  assert.equal(same, list, 'an event already listed changes nothing');
});

test('a storm whose presence kinds interleave stays one row per kind', () => {
  let list: Notification[] = [];
  for (let i = 0; i < 100; i++) {
    list = addNotification(list, event(i % 3 === 0 ? 'agent.online' : 'agent.offline', i * 10));
  }
  assert.deepEqual(
    list.map((n) => [n.event.kind, n.count]),
    [
      ['agent.online', 34],
      ['agent.offline', 66],
    ],
  );
});
