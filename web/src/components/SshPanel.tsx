// The SSH panel: the session's progress, then its terminal. × hides the panel and leaves
// the session running; "Close SSH connection" stops it. Escape does not close it: the shell
// needs that key (vi, less).

import { useEffect, useRef, useState } from 'preact/hooks';
import { stopSession } from '../api/endpoints';
import { describeError } from '../api/http';
import type { SessionView } from '../api/types';
import { agentIds, agentSignal } from '../state/agents';
import { canOpenSsh } from '../state/auth';
import { isOpen, putSession, refreshSession, sessionIds, sessionSignal, watchSession } from '../state/sessions';
import { hideSshPanel, openSsh, sshPanelSession } from '../state/sshPanel';
import { canGrow, canShrink, changeFontSize, resetFontSize, terminalFontSize } from '../terminal/fontSize';
import { CloseIcon } from './Icons';
import { LazyTerminal } from './LazyTerminal';
import { SessionProgress } from './SessionProgress';
import { SessionStateBadge } from './StatusBadge';
import { Troubleshooting } from './Troubleshooting';

export function SshPanel() {
  const id = sshPanelSession.value;
  return id ? <SshPanelFor key={id} sessionId={id} /> : null;
}

function SshPanelFor({ sessionId }: { sessionId: string }) {
  const panel = useRef<HTMLDivElement>(null);
  const [loadError, setLoadError] = useState<string | null>(null);

  // The store may hold a list view (no history), or nothing yet after a reload.
  useEffect(() => {
    watchSession(sessionId);
    refreshSession(sessionId).catch((error: unknown) => setLoadError(describeError(error)));
    return () => watchSession(null);
  }, [sessionId]);

  // Give focus back to what opened the panel when it goes.
  useEffect(() => {
    const opener = document.activeElement instanceof HTMLElement ? document.activeElement : null;
    if (!panel.current?.contains(document.activeElement)) panel.current?.focus();
    return () => opener?.focus();
  }, []);

  void sessionIds.value; // re-render when this session first reaches the store
  const session = sessionSignal(sessionId)?.value;
  void agentIds.value;
  const agent = session ? agentSignal(session.agent.id)?.value : undefined;
  const name = session?.agent.name ?? 'agent';

  return (
    <div class="ssh-panel" ref={panel} tabIndex={-1} role="dialog" aria-label={`SSH connection to ${name}`}>
      <header class="panel-header">
        <h2>
          SSH <span class="muted">·</span> {name}
        </h2>
        {session && <SessionStateBadge state={session.state} />}
        <span class="spacer" />
        {session?.state === 'running' && <FontSizeButtons />}
        <button
          type="button"
          class="button icon-button"
          aria-label="Close panel (the SSH connection stays open)"
          title="Close panel (the SSH connection stays open)"
          onClick={hideSshPanel}
        >
          <CloseIcon />
        </button>
      </header>
      {loadError && !session && <p class="notice error">{loadError}</p>}
      {session && <PanelBody session={session} />}
      {session && (
        <div class="panel-troubleshooting">
          <Troubleshooting session={session} agent={agent} />
        </div>
      )}
      {session && <PanelActions session={session} agentUsable={agent?.status === 'approved' && agent.online} />}
    </div>
  );
}

function PanelBody({ session }: { session: SessionView }) {
  if (session.state === 'running') {
    return (
      <>
        <details class="progress-summary">
          <summary>Connection details</summary>
          <SessionProgress session={session} />
        </details>
        <div class="terminal-area">
          <LazyTerminal sessionId={session.id} agentName={session.agent.name} />
        </div>
      </>
    );
  }
  return (
    <div class="panel-progress">
      <SessionProgress session={session} />
    </div>
  );
}

function PanelActions({ session, agentUsable }: { session: SessionView; agentUsable: boolean }) {
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const run = (action: () => Promise<void>) => {
    setBusy(true);
    setError(null);
    action()
      .catch((e: unknown) => setError(describeError(e)))
      .finally(() => setBusy(false));
  };
  const closeConnection = () =>
    run(async () => {
      putSession(await stopSession(session.id));
    });
  const connectAgain = () => run(() => openSsh(session.agent.id));
  const open = isOpen(session.state);
  return (
    <footer class="panel-footer">
      {error && (
        <p class="notice error" role="alert">
          {error}
        </p>
      )}
      {open && session.state !== 'stopping' && (
        <button type="button" class="button danger" disabled={busy} onClick={closeConnection}>
          {busy ? 'Closing…' : 'Close SSH connection'}
        </button>
      )}
      {!open && canOpenSsh.value && agentUsable && (
        <button type="button" class="button primary" disabled={busy} onClick={connectAgain}>
          Open a new SSH connection
        </button>
      )}
    </footer>
  );
}

function FontSizeButtons() {
  const size = terminalFontSize.value;
  return (
    <span class="font-size" role="group" aria-label={`Terminal font size ${size}`}>
      <button
        type="button"
        class="button icon-button"
        aria-label="Smaller font"
        title="Smaller font"
        disabled={!canShrink()}
        onClick={() => changeFontSize(-1)}
      >
        A−
      </button>
      <button
        type="button"
        class="button icon-button"
        aria-label="Reset font size"
        title="Reset font size"
        onClick={resetFontSize}
      >
        {size}
      </button>
      <button
        type="button"
        class="button icon-button"
        aria-label="Larger font"
        title="Larger font"
        disabled={!canGrow()}
        onClick={() => changeFontSize(1)}
      >
        A+
      </button>
    </span>
  );
}
