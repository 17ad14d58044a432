// The bell's sidebar: agent and SSH events as they happen, newest first, unread ones marked.

import { useEffect, useRef, useState } from 'preact/hooks';
import { describeError } from '../api/http';
import type { EventKind, EventView } from '../api/types';
import { eventTime } from '../format';
import { now } from '../state/clock';
import { groupTitle } from '../state/notificationModel';
import { markAllRead, notifications, notificationsOpen, readUpTo, unreadCount } from '../state/notifications';
import { CloseIcon } from './Icons';

const TITLES: Partial<Record<EventKind, string>> = {
  'agent.enrolled': 'Agent enrolled',
  'agent.approved': 'Agent approved',
  'agent.rejected': 'Agent rejected',
  'agent.revoked': 'Agent revoked',
  'agent.online': 'Agent online',
  'agent.offline': 'Agent offline',
  'agent.pending_limit': 'Enrollment limit reached',
  'agent.not_responding': 'Agent not responding',
};

function title(event: EventView): string {
  if (event.kind === 'session.state' && event.session) return `SSH ${event.session.state}`;
  return TITLES[event.kind] ?? event.kind;
}

export function NotificationsSidebar() {
  const panel = useRef<HTMLDivElement>(null);
  const [error, setError] = useState<string | null>(null);
  const open = notificationsOpen.value;

  // Focus comes in when it opens and goes back to what opened it (the bell) when it closes.
  useEffect(() => {
    if (!open) return undefined;
    const opener = document.activeElement instanceof HTMLElement ? document.activeElement : null;
    panel.current?.focus();
    // After the sidebar has left the DOM (this runs while it unmounts).
    return () => {
      setTimeout(() => {
        if (opener?.isConnected) opener.focus();
      }, 0);
    };
  }, [open]);

  if (!open) return null;
  const marker = readUpTo.value;
  const list = notifications.value;
  const markRead = () => {
    setError(null);
    markAllRead().catch((e: unknown) => setError(describeError(e)));
  };
  return (
    <div
      class="notifications"
      ref={panel}
      tabIndex={-1}
      role="dialog"
      aria-label="Notifications"
      onKeyDown={(event) => {
        if (event.key === 'Escape') notificationsOpen.value = false;
      }}
    >
      {/* A div, not a header: a header here would be a second banner landmark. */}
      <div class="panel-header">
        <h2>Notifications</h2>
        <span class="spacer" />
        <button type="button" class="button" disabled={unreadCount.value === 0} onClick={markRead}>
          Mark all as read
        </button>
        <button
          type="button"
          class="button icon-button"
          aria-label="Close notifications"
          title="Close notifications"
          onClick={() => (notificationsOpen.value = false)}
        >
          <CloseIcon />
        </button>
      </div>
      {error && (
        <p class="notice error" role="alert">
          {error}
        </p>
      )}
      {list.length === 0 ? (
        <p class="empty">Nothing yet. Agent and SSH events appear here as they happen.</p>
      ) : (
        // Focusable, so that a keyboard can scroll it.
        <ol
          class="notification-list"
          tabIndex={0}
          aria-label="Agent and SSH events, newest first"
          aria-live="polite"
          aria-relevant="additions"
        >
          {list.map((row) => {
            const event = row.event;
            const group = groupTitle(row);
            return (
              <li key={row.id} class={`notification ${row.id > marker ? 'unread' : ''}`} data-kind={event.kind}>
                <div class="notification-head">
                  <strong>{group ?? title(event)}</strong>
                  {event.agent && (
                    <span class="notification-agent">{group ? `latest: ${event.agent.name}` : event.agent.name}</span>
                  )}
                  <time class="muted small" dateTime={new Date(event.time).toISOString()}>
                    {eventTime(event.time, now.peek())}
                  </time>
                </div>
                {!group && (
                  <p class="notification-detail">
                    {event.detail}
                    {event.actor !== 'system' && <span class="muted"> · by {event.actor}</span>}
                  </p>
                )}
                {row.id > marker && <span class="visually-hidden">unread</span>}
              </li>
            );
          })}
        </ol>
      )}
    </div>
  );
}
