// Everything that keeps the screen current while someone is logged in: the first load of
// agents and sessions, then the event stream, whose events go to each store in turn.

import { signal } from '@preact/signals';
import { getMe } from '../api/endpoints';
import { openEventStream, type EventStream } from '../api/events';
import type { Me } from '../api/types';
import { agentEvent, clearAgents, loadAgents, PRESENCE_POLL_MS, refreshPresence } from './agents';
import { clearNotifications, notificationEvent, readUpTo } from './notifications';
import { clearSessions, loadSessions, sessionEvent } from './sessions';
import { hideSshPanel } from './sshPanel';

/** The event stream's state, shown in the header. */
export const liveState = signal<'connecting' | 'live' | 'reconnecting'>('connecting');

/** Starts live updates for a login; the returned function stops them and forgets its data. */
export function startLiveUpdates(me: Me): () => void {
  readUpTo.value = me.notifications_read_up_to;
  let stream: EventStream | null = null;
  let stopped = false;
  const presence = setInterval(() => {
    refreshPresence().catch((error: unknown) => console.warn('presence refresh failed', error));
  }, PRESENCE_POLL_MS);
  // Open the stream after the first load: its replay then covers anything that changed in
  // between, and each replayed event refreshes just the agent or session it names.
  void Promise.allSettled([loadAgents(), loadSessions()]).then(() => {
    if (stopped) return;
    stream = openEventStream({
      onEvent(event) {
        notificationEvent(event);
        agentEvent(event);
        sessionEvent(event);
      },
      onConnectedChange(connected) {
        liveState.value = connected ? 'live' : 'reconnecting';
      },
      // A 401 here logs the user out (see auth.ts), which stops this stream.
      beforeReopen: () => getMe().then(() => undefined),
    });
  });
  return () => {
    stopped = true;
    clearInterval(presence);
    stream?.close();
    liveState.value = 'connecting';
    clearAgents();
    clearSessions();
    clearNotifications();
    hideSshPanel();
  };
}
