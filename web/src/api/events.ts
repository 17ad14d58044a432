// The live event stream (server-sent events). The browser's EventSource resumes by itself
// after a dropped connection (sending Last-Event-ID); when the server refuses the stream
// outright (an expired login, a restart in progress) EventSource gives up, so we reopen it
// ourselves, after the last event we saw, with backoff.

import { API } from './http';
import type { EventView } from './types';

export interface EventStreamHandlers {
  onEvent(event: EventView): void;
  onConnectedChange(connected: boolean): void;
  /** Before reopening a refused stream: lets the app find out whether the login expired. */
  beforeReopen(): Promise<void>;
}

export interface EventStream {
  close(): void;
}

/** How many recent events to replay on first connection (they fill the notifications). */
const INITIAL_REPLAY = 50;
const MAX_BACKOFF_MS = 30_000;

export function openEventStream(handlers: EventStreamHandlers): EventStream {
  let lastId = 0;
  let source: EventSource | null = null;
  let retryTimer: ReturnType<typeof setTimeout> | undefined;
  let failures = 0;
  let closed = false;

  const connect = () => {
    if (closed) return;
    const query = lastId > 0 ? `after=${lastId}` : `limit=${INITIAL_REPLAY}`;
    const current = new EventSource(`${API}/events?${query}`);
    source = current;
    current.onopen = () => {
      failures = 0;
      handlers.onConnectedChange(true);
    };
    current.onmessage = (message) => {
      const event = JSON.parse(message.data as string) as EventView;
      // A reopened stream replays from `after`; never hand the same event on twice.
      if (event.id <= lastId) return;
      lastId = event.id;
      handlers.onEvent(event);
    };
    current.onerror = () => {
      handlers.onConnectedChange(false);
      if (current.readyState !== EventSource.CLOSED) return; // the browser is retrying
      current.close();
      failures += 1;
      const delay = Math.min(MAX_BACKOFF_MS, 1000 * 2 ** Math.min(failures, 5)) * (0.5 + Math.random() / 2);
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
