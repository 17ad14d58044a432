// SSH sessions the user may see (their own; every one for admins), one signal each, kept
// current by `session.state` events: each event refetches that session with its history.

import { computed, signal, type Signal } from '@preact/signals';
import { getSession, listSessions } from '../api/endpoints';
import { ApiError } from '../api/http';
import type { EventView, SessionState, SessionView } from '../api/types';
import { currentUser, isAdmin } from './auth';
import { Coalescer } from './coalesce';

const byId = new Map<string, Signal<SessionView>>();

/** Newest first. */
export const sessionIds = signal<string[]>([]);
export const sessionsLoaded = signal(false);

const OPEN_STATES = new Set<SessionState>(['requested', 'starting', 'running', 'stopping']);

export function isOpen(state: SessionState): boolean {
  return OPEN_STATES.has(state);
}

export function sessionSignal(id: string): Signal<SessionView> | undefined {
  return byId.get(id);
}

/** The logged-in user's open session on each agent (by agent id), for the agent cards. */
export const myOpenSessionByAgent = computed(() => {
  const me = currentUser.value?.name;
  const open = new Map<string, SessionView>();
  for (const id of sessionIds.value) {
    const session = byId.get(id)?.value;
    if (session && session.user === me && isOpen(session.state) && !open.has(session.agent.id)) {
      open.set(session.agent.id, session);
    }
  }
  return open;
});

export async function loadSessions(): Promise<void> {
  try {
    const sessions = await listSessions({ limit: 100 });
    for (const session of sessions) put(session);
    sortIds();
  } finally {
    sessionsLoaded.value = true;
  }
}

/** Stores a fresh view; a list view (without history) keeps the history already known. */
export function putSession(session: SessionView): void {
  const isNew = !byId.has(session.id);
  put(session);
  if (isNew) sortIds();
}

function put(session: SessionView) {
  const existing = byId.get(session.id);
  if (!existing) {
    byId.set(session.id, signal(session));
    return;
  }
  const known = existing.peek();
  if (session.history === undefined && known.history && known.updated_at === session.updated_at) {
    session = { ...session, history: known.history };
  }
  existing.value = session;
}

function sortIds() {
  sessionIds.value = [...byId.values()]
    .map((s) => s.peek())
    .sort((a, b) => b.created_at - a.created_at)
    .map((s) => s.id);
}

/** Fetches one session with its history and stores it. */
export async function refreshSession(id: string): Promise<SessionView> {
  const session = await getSession(id);
  putSession(session);
  return session;
}

const refreshes = new Coalescer(100, (id) => {
  refreshSession(id).catch((error: unknown) => {
    if (!(error instanceof ApiError && error.status === 404)) console.warn('session refresh failed', error);
  });
});

export function sessionEvent(event: EventView): void {
  if (event.kind !== 'session.state' || !event.session) return;
  const id = event.session.id;
  // Others' sessions are hidden from non-admins (the server answers 404): fetch only sessions
  // we already know, or the ones this user just requested.
  const visible = isAdmin.peek() || byId.has(id) || event.actor === currentUser.peek()?.name;
  if (!visible) return;
  refreshes.add(id);
}

export function clearSessions(): void {
  byId.clear();
  refreshes.clear();
  sessionIds.value = [];
  sessionsLoaded.value = false;
}
