// The live event stream (server-sent events). The browser's EventSource resumes by itself
// after a dropped connection (sending Last-Event-ID); when the server refuses the stream
// outright (an expired login, a restart in progress) EventSource gives up, so we reopen it
// ourselves, after the last event we saw, with backoff.

import { API } from './http';
import type { EventView } from './types';

export interface EventStreamHandlers {
  onEvent(event: EventView): void;
  /** `resumed`: the stream was cut and is back, so events may have been missed by others. */
  onConnectedChange(connected: boolean, resumed: boolean): void;
  /** Before reopening a refused stream: lets the app find out whether the login expired. */
  beforeReopen(): Promise<void>;
}

export interface EventStream {
  close(): void;
}

/** How many recent events to replay on first connection (they fill the notifications). */
const INITIAL_REPLAY = 50;
/** Short: after a server restart the page must show the truth within seconds; one request
 *  per tab every few seconds while the server is away costs it nothing. */
const MAX_BACKOFF_MS = 4000;

export function openEventStream(handlers: EventStreamHandlers): EventStream {
  let lastId = 0;
  let source: EventSource | null = null;
  let retryTimer: ReturnType<typeof setTimeout> | undefined;
  let failures = 0;
  let closed = false;
  let everOpen = false;
  let cut = false;

  const connect = () => {
    if (closed) return;
    const query = lastId > 0 ? `after=${lastId}` : `limit=${INITIAL_REPLAY}`;
    const current = new EventSource(`${API}/events?${query}`);
    source = current;
    current.onopen = () => {
      failures = 0;
      handlers.onConnectedChange(true, everOpen && cut);
      everOpen = true;
      cut = false;
    };
    current.onmessage = (message) => {
      const event = JSON.parse(message.data as string) as EventView;
      // A reopened stream replays from `after`; never hand the same event on twice.
      if (event.id <= lastId) return;
      lastId = event.id;
      handlers.onEvent(event);
    };
    current.onerror = () => {
      cut = true;
      handlers.onConnectedChange(false, false);
      if (current.readyState !== EventSource.CLOSED) return; // the browser is retrying
      current.close();
      failures += 1;
      const delay = Math.min(MAX_BACKOFF_MS, 500 * 2 ** Math.min(failures, 5)) * (0.5 + Math.random() / 2);
      retryTimer = setTimeout(() => {
        handlers.beforeReopen().then(connect, connect);
      }, delay);
    };
  };

  connect();
  return {
    close() {
      closed = true;
      clearTimeout(retryTimer);
      source?.close();
    },
  };
}

/**
 * The id of the newest stored event (0 if none). Read before the first load: the replay the
 * stream opens with is older than that load for every event up to this id, so those feed the
 * notifications only and never overwrite fresher state.
 */
export async function newestEventId(): Promise<number> {
  const response = await fetch(`${API}/events?follow=false&limit=1`, { credentials: 'same-origin' });
  if (!response.ok) return 0;
  const ids = [...(await response.text()).matchAll(/^id: ?(\d+)$/gm)];
  return ids.length ? Number(ids[ids.length - 1][1]) : 0;
}
