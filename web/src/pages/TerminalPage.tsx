// One session's terminal alone in a browser tab (/terminal/ID), opened from the SSH panel:
// the whole window for the shell. Once the session ends its last screen stays, read-only.

import { useEffect, useRef, useState } from 'preact/hooks';
import { describeError } from '../api/http';
import { LazyTerminal } from '../components/LazyTerminal';
import { SessionStateBadge } from '../components/StatusBadge';
import { hasShell, refreshSession, sessionIds, sessionSignal, watchSession } from '../state/sessions';
import { terminalSessionId } from '../state/router';
import { LEAVE_KEY } from '../terminal/keys';

export function TerminalPage() {
  const id = terminalSessionId();
  const heading = useRef<HTMLHeadingElement>(null);
  const [error, setError] = useState<string | null>(null);
  useEffect(() => {
    watchSession(id);
    refreshSession(id).catch((e: unknown) => setError(describeError(e)));
    return () => watchSession(null);
  }, [id]);
  void sessionIds.value; // re-render when the session first reaches the store
  const session = sessionSignal(id)?.value;
  const hadTerminal = useRef(false);
  if (session && hasShell(session.state)) hadTerminal.current = true;
  const showTerminal = session && (hasShell(session.state) || hadTerminal.current);
  return (
    <section class="page terminal-page" aria-labelledby="terminal-title">
      <div class="page-header">
        <h1 id="terminal-title" ref={heading} tabIndex={-1}>
          SSH · {session?.agent.name ?? 'session'}
        </h1>
        {session && <SessionStateBadge state={session.state} />}
        {session?.state === 'running' && (
          <p class="muted small">
            <kbd>{LEAVE_KEY}</kbd> leaves the terminal
          </p>
        )}
      </div>
      {error && !session && <p class="notice error">{error}</p>}
      {session && !showTerminal && <p class="notice">This session is {session.state}: there is no terminal to show.</p>}
      {session && showTerminal && (
        <div class="terminal-area">
          <LazyTerminal
            sessionId={session.id}
            agentName={session.agent.name}
            ended={!hasShell(session.state)}
            onLeave={() => heading.current?.focus()}
          />
        </div>
      )}
    </section>
  );
}
