// Open and recent SSH sessions: who, where, state, when, how long, and why they ended.
// Admins may stop any session; operators their own (the only ones they see).

import { signal } from '@preact/signals';
import { useState } from 'preact/hooks';
import { stopSession } from '../api/endpoints';
import { describeError } from '../api/http';
import type { SessionView } from '../api/types';
import { SessionStateBadge } from '../components/StatusBadge';
import { Table } from '../components/Table';
import { dateTime, duration } from '../format';
import { canOpenSsh, currentUser, isAdmin } from '../state/auth';
import { now } from '../state/clock';
import { isOpen, putSession, sessionIds, sessionSignal, sessionsLoaded } from '../state/sessions';
import { showSshPanel } from '../state/sshPanel';

const onlyOpen = signal(false);

export function SessionsPage() {
  const sessions = sessionIds.value
    .map((id) => sessionSignal(id)?.value)
    .filter((s): s is SessionView => s !== undefined && (!onlyOpen.value || isOpen(s.state)));
  return (
    <section class="page" aria-labelledby="sessions-title">
      <div class="page-header">
        <h1 id="sessions-title">Sessions</h1>
        <label class="checkbox">
          <input
            type="checkbox"
            checked={onlyOpen.value}
            onChange={(e) => (onlyOpen.value = e.currentTarget.checked)}
          />
          Open sessions only
        </label>
      </div>
      {!sessionsLoaded.value && <p class="muted">Loading…</p>}
      {sessionsLoaded.value && sessions.length === 0 && (
        <p class="empty">{onlyOpen.value ? 'No open session.' : 'No session yet.'}</p>
      )}
      {sessions.length > 0 && (
        <Table columns={['User', 'Agent', 'State', 'Started', 'Duration', 'Ended']}>
          {sessions.map((session) => (
            <SessionRow key={session.id} session={session} />
          ))}
        </Table>
      )}
    </section>
  );
}

function SessionRow({ session }: { session: SessionView }) {
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const me = currentUser.value?.name;
  const open = isOpen(session.state);
  const mayStop = open && session.state !== 'stopping' && (isAdmin.value || session.user === me);
  const end = session.ended_at ?? (open ? now.value : session.updated_at);
  const stop = () => {
    setBusy(true);
    setError(null);
    stopSession(session.id)
      .then(putSession)
      .catch((e: unknown) => setError(describeError(e)))
      .finally(() => setBusy(false));
  };
  return (
    <tr>
      <td>{session.user}</td>
      <td>{session.agent.name}</td>
      <td>
        <SessionStateBadge state={session.state} />
      </td>
      <td>{dateTime(session.created_at)}</td>
      <td class="numeric">{duration(end - session.created_at)}</td>
      <td>
        {session.ended_at ? dateTime(session.ended_at) : '—'}
        {session.reason && <div class="muted small">{session.reason}</div>}
      </td>
      <td>
        <div class="row-actions">
          {open && session.user === me && canOpenSsh.value && (
            <button type="button" class="button" onClick={() => showSshPanel(session.id)}>
              Show terminal
            </button>
          )}
          {mayStop && (
            <button
              type="button"
              class="button danger-outline"
              disabled={busy}
              aria-label={`Stop the SSH session of ${session.user} on ${session.agent.name}`}
              onClick={stop}
            >
              Stop
            </button>
          )}
          {error && (
            <span class="error-text" role="alert">
              {error}
            </span>
          )}
        </div>
      </td>
    </tr>
  );
}
