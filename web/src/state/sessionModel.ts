// How a `session.state` event changes a session the page knows: the state it names is shown
// at once (no refetch wait), with a step in the history, so "starting" is seen live. Pure, so
// that it is unit-tested alone; sessions.ts holds the signals.

import type { EventView, SessionState, SessionView } from '../api/types';

const ENDED = new Set<SessionState>(['stopped', 'failed']);
const ORDER: SessionState[] = ['requested', 'starting', 'running', 'stopping', 'stopped', 'failed'];

/** Where a state stands in a session's life: detached and running alternate (a link lost, then
 * back), so neither is "before" the other. */
function rank(state: SessionState): number {
  return ORDER.indexOf(state === 'detached' ? 'running' : state);
}

/**
 * The session after the event, or null when the event is older than what is known or says
 * nothing new. A session never moves back: an ended session stays ended, and a late event for
 * an earlier step of its life only adds that step to the history.
 */
export function applySessionEvent(session: SessionView, event: EventView): SessionView | null {
  if (event.kind !== 'session.state' || !event.session || event.session.id !== session.id) return null;
  const state = event.session.state;
  const history = session.history;
  const hasStep = history?.some((step) => step.state === state);
  const newer = event.time >= session.updated_at && !ENDED.has(session.state) && state !== session.state;
  const backwards = rank(state) < rank(session.state) && !ENDED.has(state);
  if (!newer || backwards) {
    if (history && !hasStep && state !== session.state) {
      const steps = [...history, { state, time: event.time }].sort((a, b) => a.time - b.time);
      return { ...session, history: steps };
    }
    return null;
  }
  const next: SessionView = {
    ...session,
    state,
    updated_at: event.time,
    history: history && !hasStep ? [...history, { state, time: event.time }] : history,
  };
  if (state !== 'running') delete next.port;
  if (ENDED.has(state)) next.ended_at = event.time;
  return next;
}

export function isEnded(state: SessionState): boolean {
  return ENDED.has(state);
}

/**
 * A view from the server (a list or a fetch) merged into what the page knows: it wins unless
 * it is older than an event already applied (a session never moves back); a view without
 * history keeps the steps already known.
 */
export function mergeSession(known: SessionView | undefined, incoming: SessionView): SessionView {
  if (!known) return incoming;
  const older =
    (isEnded(known.state) && !isEnded(incoming.state)) ||
    (ORDER.indexOf(incoming.state) < ORDER.indexOf(known.state) && incoming.updated_at <= known.updated_at);
  if (older) return known;
  if (incoming.history === undefined && known.history) {
    const steps = known.history.filter((step) => ORDER.indexOf(step.state) <= ORDER.indexOf(incoming.state));
    return { ...incoming, history: steps };
  }
  return incoming;
}
