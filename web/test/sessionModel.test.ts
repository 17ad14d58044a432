// Session events shown at once (so "starting" is seen live), never moving a session back, and
// server views merged without losing what the events told.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { EventView, SessionState, SessionView } from '../src/api/types';
import { applySessionEvent, mergeSession } from '../src/state/sessionModel';

function session(state: SessionState, over: Partial<SessionView> = {}): SessionView {
  return {
    id: 's1',
    agent: { id: 'a', name: 'edge-7', did: '' },
    user: 'admin',
    state,
    created_at: 1000,
    updated_at: 1000,
    ...over,
  };
}

function event(state: SessionState, time: number, id = 's1'): EventView {
  return { id: time, time, kind: 'session.state', actor: 'admin', session: { id, state }, detail: `SSH ${state}` };
}

test('each state is applied at once, with a step in the history', () => {
  let s = session('requested', { history: [{ state: 'requested', time: 1000 }] });
  s = applySessionEvent(s, event('starting', 1100))!;
  assert.equal(s.state, 'starting');
  assert.deepEqual(
    s.history?.map((h) => h.state),
    ['requested', 'starting'],
  );
  s = applySessionEvent(s, event('running', 1200))!;
  assert.equal(s.state, 'running');
  s = applySessionEvent(s, event('stopped', 1300))!;
  assert.equal(s.state, 'stopped');
  assert.equal(s.ended_at, 1300);
  assert.equal(s.port, undefined);
});

test('a session never moves back, and other sessions are not touched', () => {
  const ended = session('stopped', { updated_at: 2000 });
  assert.equal(applySessionEvent(ended, event('running', 1500)), null);
  const running = session('running', { updated_at: 2000 });
  assert.equal(applySessionEvent(running, event('starting', 1900)), null);
  assert.equal(applySessionEvent(running, event('stopped', 2100, 'other')), null);
  assert.equal(applySessionEvent(running, event('running', 2100)), null);
});

test('a late event for an earlier step only completes the history', () => {
  const s = session('running', { updated_at: 2000, history: [{ state: 'requested', time: 1000 }, { state: 'running', time: 2000 }] });
  const next = applySessionEvent(s, event('starting', 1500))!;
  assert.equal(next.state, 'running');
  assert.deepEqual(
    next.history?.map((h) => h.state),
    ['requested', 'starting', 'running'],
  );
});

test('a server view older than an applied event does not undo it', () => {
  const known = session('stopped', { updated_at: 3000 });
  assert.equal(mergeSession(known, session('running', { updated_at: 2000 })), known);
  const newer = session('stopped', { updated_at: 2999, reason: 'stopped by admin' });
  assert.equal(mergeSession(known, newer).reason, 'stopped by admin');
  const withHistory = session('running', { history: [{ state: 'requested', time: 1 }, { state: 'running', time: 2 }] });
  assert.equal(mergeSession(withHistory, session('running')).history?.length, 2);
});
