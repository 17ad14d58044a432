// Everything that keeps the screen current while someone is logged in: the first load of
// agents and sessions, then the event stream, whose events go to each store in turn, the
// presence poll, and the periodic re-reads that correct whatever the events missed.

import { batch, signal } from '@preact/signals';
import { getMe } from '../api/endpoints';
import { newestEventId, openEventStream, type EventStream } from '../api/events';
import type { EventView, Me } from '../api/types';
import {
  agentEvent,
  clearAgents,
  loadAgents,
  PRESENCE_POLL_MS,
  RECONCILE_MS,
  reconcileAgents,
  refreshPresence,
} from './agents';
import { clearNotifications, notificationEvent, readUpTo } from './notifications';
import { clearSessions, loadSessions, reconcileSessions, sessionEvent } from './sessions';
import { hideSshPanel } from './sshPanel';

/** The event stream's state, shown in the header. */
export const liveState = signal<'connecting' | 'live' | 'reconnecting'>('connecting');

/** Events are applied in batches this far apart: a storm of 2,000 re-renders the page a
 *  few times, not 2,000 times, and a single event still shows at once to the eye. */
const APPLY_EVERY_MS = 30;

/** Starts live updates for a login; the returned function stops them and forgets its data. */
export function startLiveUpdates(me: Me): () => void {
  readUpTo.value = me.notifications_read_up_to ?? 0;
  let stream: EventStream | null = null;
  let stopped = false;
  let presenceTimer: ReturnType<typeof setTimeout> | undefined;
  let baseline = 0;
  const queue: EventView[] = [];
  let applyTimer: ReturnType<typeof setTimeout> | undefined;
  const applyQueued = () => {
    applyTimer = undefined;
    const events = queue.splice(0);
    batch(() => {
      for (const event of events) {
        notificationEvent(event);
        if (event.id <= baseline) continue;
        agentEvent(event);
        sessionEvent(event);
      }
    });
  };
  // One poll at a time: the next is planned when the previous answered (or failed).
  const pollPresence = () => {
    refreshPresence()
      .catch(() => undefined) // the server is away; the next poll asks again
      .finally(() => {
        if (!stopped) presenceTimer = setTimeout(pollPresence, PRESENCE_POLL_MS);
      });
  };
  const reconcile = setInterval(() => {
    reconcileAgents();
    reconcileSessions();
  }, RECONCILE_MS);

  void (async () => {
    // Events up to this id are already in what the first load reads (it is read after).
    baseline = await newestEventId().catch(() => 0);
    await Promise.allSettled([loadAgents(), loadSessions()]);
    if (stopped) return;
    pollPresence();
    stream = openEventStream({
      onEvent(event) {
        queue.push(event);
        applyTimer ??= setTimeout(applyQueued, APPLY_EVERY_MS);
      },
      onConnectedChange(connected, resumed) {
        liveState.value = connected ? 'live' : 'reconnecting';
        // The stream resumes exactly after the last event seen, but a restarted server's
        // links and sessions changed without events (agents that never came back): read
        // the truth again, once, for everything.
        if (resumed) {
          reconcileAgents();
          reconcileSessions();
        }
      },
      // A 401 here logs the user out (see auth.ts), which stops this stream.
      beforeReopen: () => getMe().then(() => undefined),
    });
  })();

  return () => {
    stopped = true;
    clearTimeout(presenceTimer);
    clearTimeout(applyTimer);
    clearInterval(reconcile);
    stream?.close();
    liveState.value = 'connecting';
    clearAgents();
    clearSessions();
    clearNotifications();
    hideSshPanel();
  };
}
