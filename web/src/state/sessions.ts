// SSH sessions the user may see (their own; every one for admins), one signal each. A
// `session.state` event's state is shown at once (sessionModel.ts); what an event does not
// carry (an end reason, a session not seen before) comes from ONE list call for any number of
// sessions, retried until it succeeds. The panel's own session is also fetched with its
// history.

import { batch, computed, signal, type Signal } from '@preact/signals';
import { getSession, listSessions } from '../api/endpoints';
import { ApiError } from '../api/http';
import type { EventView, SessionState, SessionView } from '../api/types';
import { currentUser, isAdmin } from './auth';
import { Refresh } from './refresh';
import { applySessionEvent, isEnded, mergeSession } from './sessionModel';

const byId = new Map<string, Signal<SessionView>>();

/** Newest first. */
export const sessionIds = signal<string[]>([]);
export const sessionsLoaded = signal(false);

/** How many recent sessions the page lists and keeps current. */
const LIST_LIMIT = 100;

/** Open as the server's `is_open` says: a stopping session is already on its way out. */
const OPEN_STATES = new Set<SessionState>(['requested', 'starting', 'running', 'detached']);

/** The session has a shell to show: running, or detached while the device keeps it. */
export function hasShell(state: SessionState): boolean {
  return state === 'running' || state === 'detached';
}

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

let epoch = 0;

async function readList(): Promise<void> {
  const started = epoch;
  const sessions = await listSessions({ limit: LIST_LIMIT });
  if (started !== epoch) return;
  batch(() => {
    let added = false;
    for (const session of sessions) added = put(session) || added;
    if (added) sortIds();
  });
}

const listRefresh = new Refresh(150, readList);

export async function loadSessions(): Promise<void> {
  try {
    await readList();
  } catch {
    listRefresh.request();
  } finally {
    sessionsLoaded.value = true;
  }
}

/** Re-reads the recent sessions soon (after the event stream was cut, and now and then). */
export function reconcileSessions(): void {
  listRefresh.request();
}

/** Stores a fresh view from the server. */
export function putSession(session: SessionView): void {
  if (put(session)) sortIds();
}

/** Returns whether the session is new to the page. */
function put(session: SessionView): boolean {
  const existing = byId.get(session.id);
  if (!existing) {
    byId.set(session.id, signal(session));
    return true;
  }
  const merged = mergeSession(existing.peek(), session);
  if (merged !== existing.peek()) existing.value = merged;
  return false;
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
  return byId.get(id)?.peek() ?? session;
}

/** The session whose history the SSH panel shows (its steps are fetched, not guessed). */
let watched: string | null = null;

export function watchSession(id: string | null): void {
  watched = id;
}

export function sessionEvent(event: EventView): void {
  if (event.kind !== 'session.state' || !event.session) return;
  const id = event.session.id;
  const existing = byId.get(id);
  if (existing) {
    const next = applySessionEvent(existing.peek(), event);
    if (next) existing.value = next;
    // The end reason is not in the event: the list has it.
    if (isEnded(event.session.state)) listRefresh.request();
    if (id === watched) {
      refreshSession(id).catch((error: unknown) => {
        if (!(error instanceof ApiError && error.status === 404)) console.warn('session refresh failed', error);
      });
    }
    return;
  }
  // Others' sessions are hidden from non-admins: only admins and the session's own user
  // need to learn about a new one.
  const visible = isAdmin.peek() || event.actor === currentUser.peek()?.name;
  if (visible) listRefresh.request();
}

export function clearSessions(): void {
  epoch += 1;
  listRefresh.cancel();
  byId.clear();
  watched = null;
  sessionIds.value = [];
  sessionsLoaded.value = false;
}
