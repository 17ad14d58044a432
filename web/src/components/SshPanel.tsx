// The SSH panel: the session's progress, then its terminal. × hides the panel and leaves
// the session running; "Close SSH connection" stops it, and the terminal's last screen
// stays, read-only and dimmed, until the panel closes. Escape does not close it: the shell
// needs that key (vi, less); Ctrl+Shift+E leaves the terminal (see terminal/keys.ts).

import { useEffect, useRef, useState } from 'preact/hooks';
import { stopSession } from '../api/endpoints';
import { describeError } from '../api/http';
import type { SessionView } from '../api/types';
import { agentSignal, knownAgents, pinAgent } from '../state/agents';
import { canOpenSsh } from '../state/auth';
import { hasShell, isOpen, putSession, refreshSession, sessionIds, sessionSignal, watchSession } from '../state/sessions';
import { terminalPath } from '../state/router';
import { hideSshPanel, openSsh, restoreFocusAfterPanel, sshPanelSession } from '../state/sshPanel';
import { focusTerminal } from '../terminal/focus';
import { canGrow, canShrink, changeFontSize, resetFontSize, terminalFontSize } from '../terminal/fontSize';
import { LEAVE_KEY } from '../terminal/keys';
import { CloseIcon, MaximiseIcon, NewTabIcon, RestoreIcon } from './Icons';
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
  const [maximised, setMaximised] = useState(false);

  // The store may hold a list view (no history), or nothing yet after a reload.
  useEffect(() => {
    watchSession(sessionId);
    refreshSession(sessionId).catch((error: unknown) => setLoadError(describeError(error)));
    return () => watchSession(null);
  }, [sessionId]);

  // Focus comes into the panel, and goes back to what opened it when it closes.
  useEffect(() => {
    if (!panel.current?.contains(document.activeElement)) panel.current?.focus();
    return restoreFocusAfterPanel;
  }, []);

  void sessionIds.value; // re-render when this session first reaches the store
  const session = sessionSignal(sessionId)?.value;
  void knownAgents.value; // re-render when the agent's view first reaches the store
  const agentId = session?.agent.id ?? null;
  // The agent may be off the Agents page (another page, a filter): keep it known and true.
  useEffect(() => {
    pinAgent(agentId);
    return () => pinAgent(null);
  }, [agentId]);
  const agent = agentId ? agentSignal(agentId)?.value : undefined;
  const name = session?.agent.name ?? 'agent';
  // Once the terminal was shown, its last screen stays when the session ends.
  const hadTerminal = useRef(false);
  if (session && hasShell(session.state)) hadTerminal.current = true;
  // Out of the terminal: to the panel's main action, else to its close button.
  const leaveTerminal = () =>
    (
      panel.current?.querySelector<HTMLElement>('.panel-footer .button') ??
      panel.current?.querySelector<HTMLElement>('.panel-close')
    )?.focus();

  return (
    <div class={`ssh-panel${maximised ? ' is-maximised' : ''}`} ref={panel} tabIndex={-1} role="dialog" aria-label={`SSH connection to ${name}`}>
      {/* A div, not a header: a header here would be a second banner landmark. */}
      <div class="panel-header">
        <h2>
          SSH <span class="muted">·</span> {name}
        </h2>
        {session && <SessionStateBadge state={session.state} />}
        <span class="spacer" />
        {session?.state === 'running' && <FontSizeButtons />}
        {session?.state === 'running' && (
          <>
            <button
              type="button"
              class="button icon-button"
              aria-pressed={maximised}
              aria-label={maximised ? 'Restore the panel' : 'Maximise the terminal'}
              title={maximised ? 'Restore the panel' : 'Maximise the terminal'}
              onClick={() => {
                setMaximised(!maximised);
                focusTerminal();
              }}
            >
              {maximised ? <RestoreIcon /> : <MaximiseIcon />}
            </button>
            <a
              class="button icon-button"
              href={terminalPath(sessionId)}
              target="_blank"
              rel="noopener"
              aria-label="Open the terminal in a new tab"
              title="Open the terminal in a new tab"
              // The shell moves to the new tab: this one stops showing it.
              onClick={hideSshPanel}
            >
              <NewTabIcon />
            </a>
          </>
        )}
        <button
          type="button"
          class="button icon-button panel-close"
          aria-label="Close panel (the SSH connection stays open)"
          title="Close panel (the SSH connection stays open)"
          onClick={hideSshPanel}
        >
          <CloseIcon />
        </button>
      </div>
      {loadError && !session && <p class="notice error">{loadError}</p>}
      {session && <PanelBody session={session} keepScreen={hadTerminal.current} onLeave={leaveTerminal} />}
      {session && (
        <div class="panel-troubleshooting">
          <Troubleshooting session={session} agent={agent} />
        </div>
      )}
      {session && (
        <PanelActions
          session={session}
          agentUsable={agent?.status === 'approved' && agent.online}
          onEnded={leaveTerminal}
        />
      )}
    </div>
  );
}

function PanelBody({ session, keepScreen, onLeave }: { session: SessionView; keepScreen: boolean; onLeave(): void }) {
  // Detached: the device keeps the shell while out of reach; the terminal stays live.
  const running = hasShell(session.state);
  if (running || keepScreen) {
    return (
      <>
        {running ? (
          // Keys: the terminal must survive the switch from one to the other unmounted.
          <details key="details" class="progress-summary">
            <summary>Connection details</summary>
            <SessionProgress session={session} />
          </details>
        ) : (
          <div key="progress" class="panel-progress compact">
            <SessionProgress session={session} />
          </div>
        )}
        <div key="terminal" class="terminal-area">
          <LazyTerminal sessionId={session.id} agentName={session.agent.name} ended={!running} onLeave={onLeave} />
        </div>
        {running && (
          <p class="terminal-hint muted">
            <kbd>{LEAVE_KEY}</kbd> leaves the terminal · <kbd>Ctrl+Shift+C</kbd> and <kbd>Ctrl+Shift+V</kbd> copy and
            paste
          </p>
        )}
      </>
    );
  }
  return (
    <div class="panel-progress">
      <SessionProgress session={session} />
    </div>
  );
}

function PanelActions({
  session,
  agentUsable,
  onEnded,
}: {
  session: SessionView;
  agentUsable: boolean;
  onEnded(): void;
}) {
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const open = isOpen(session.state);
  // The button that had focus ("Close SSH connection") is gone once the session ends: focus
  // moves on to what comes next rather than falling back to the page.
  // Waits until the buttons are enabled again (a disabled button cannot take focus).
  const wasOpen = useRef(open);
  const closing = useRef(false);
  useEffect(() => {
    if (open) {
      wasOpen.current = true;
      return;
    }
    if (busy || !wasOpen.current) return;
    const lost = document.activeElement === document.body || document.activeElement === null;
    if (closing.current || lost) onEnded();
    closing.current = false;
    wasOpen.current = false;
  }, [open, busy]);
  const run = (action: () => Promise<void>) => {
    setBusy(true);
    setError(null);
    action()
      .catch((e: unknown) => setError(describeError(e)))
      .finally(() => setBusy(false));
  };
  const closeConnection = () => {
    closing.current = true;
    run(async () => {
      putSession(await stopSession(session.id));
    });
  };
  const connectAgain = () => run(() => openSsh(session.agent.id));
  return (
    <div class="panel-footer">
      {error && (
        <p class="notice error" role="alert">
          {error}
        </p>
      )}
      {open && (
        <button type="button" class="button danger" disabled={busy} onClick={closeConnection}>
          {busy ? 'Closing…' : 'Close SSH connection'}
        </button>
      )}
      {!open && canOpenSsh.value && agentUsable && (
        <button type="button" class="button primary" disabled={busy} onClick={connectAgain}>
          Open a new SSH connection
        </button>
      )}
    </div>
  );
}

function FontSizeButtons() {
  const size = terminalFontSize.value;
  return (
    // Accessible names contain the visible text (A−, 14, A+): speech users say what they see.
    <span class="font-size" role="group" aria-label={`Terminal font size ${size}`}>
      <button
        type="button"
        class="button icon-button"
        aria-label="A− smaller font"
        title="Smaller font"
        disabled={!canShrink()}
        onClick={() => {
          changeFontSize(-1);
          focusTerminal();
        }}
      >
        A−
      </button>
      <button
        type="button"
        class="button icon-button"
        aria-label={`Reset font size ${size}`}
        title="Reset font size"
        onClick={() => {
          resetFontSize();
          focusTerminal();
        }}
      >
        {size}
      </button>
      <button
        type="button"
        class="button icon-button"
        aria-label="A+ larger font"
        title="Larger font"
        disabled={!canGrow()}
        onClick={() => {
          changeFontSize(1);
          focusTerminal();
        }}
      >
        A+
      </button>
    </span>
  );
}
