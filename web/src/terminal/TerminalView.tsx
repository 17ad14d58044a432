// A real terminal on the session's shell: xterm.js fitted to its box, wired to the terminal
// WebSocket. Loaded on demand (xterm.js is most of the app's weight). Unmounting detaches;
// the shell goes on and a later mount replays it.

import '@xterm/xterm/css/xterm.css';
import '../styles/terminal.css';
import { effect } from '@preact/signals';
import { FitAddon } from '@xterm/addon-fit';
import { Terminal } from '@xterm/xterm';
import { useEffect, useRef, useState } from 'preact/hooks';
import { refreshSession } from '../state/sessions';
import { installClipboardKeys } from './clipboardKeys';
import { TerminalConnection, type ConnectionStatus } from './connection';
import { terminalFontSize } from './fontSize';
import { terminalTheme } from './theme';

interface Props {
  sessionId: string;
  agentName: string;
}

export default function TerminalView({ sessionId, agentName }: Props) {
  const host = useRef<HTMLDivElement>(null);
  const connection = useRef<TerminalConnection | null>(null);
  const [status, setStatus] = useState<ConnectionStatus>({ kind: 'connecting' });

  useEffect(() => {
    const element = host.current;
    if (!element) return undefined;
    const term = new Terminal({
      fontFamily: 'ui-monospace, "Cascadia Mono", "DejaVu Sans Mono", Menlo, Consolas, monospace',
      fontSize: terminalFontSize.peek(),
      cursorBlink: true,
      scrollback: 10_000,
      theme: terminalTheme,
    });
    const fit = new FitAddon();
    term.loadAddon(fit);
    term.open(element);
    const fitToBox = () => {
      if (element.clientWidth > 0 && element.clientHeight > 0) fit.fit();
    };
    fitToBox();

    const conn = new TerminalConnection({
      sessionId,
      sink: { write: (bytes) => term.write(bytes), reset: () => term.reset() },
      size: () => ({ cols: term.cols, rows: term.rows }),
      onStatus: setStatus,
      sessionStillRunning: () => refreshSession(sessionId).then((s) => s.state === 'running'),
    });
    connection.current = conn;
    const subscriptions = [
      term.onData((data) => conn.sendInput(data)),
      // onBinary carries bytes as a string of char codes 0–255 (some mouse reports).
      term.onBinary((data) => conn.sendInput(Uint8Array.from(data, (c) => c.charCodeAt(0) & 0xff))),
      term.onResize(({ cols, rows }) => conn.resize(cols, rows)),
    ];
    installClipboardKeys(term);

    // The panel's size decides the terminal's: refit on every change, once per frame.
    let frame = 0;
    const observer = new ResizeObserver(() => {
      cancelAnimationFrame(frame);
      frame = requestAnimationFrame(fitToBox);
    });
    observer.observe(element);
    const stopFontEffect = effect(() => {
      term.options.fontSize = terminalFontSize.value;
      fitToBox();
    });

    conn.open();
    term.focus();
    return () => {
      stopFontEffect();
      observer.disconnect();
      cancelAnimationFrame(frame);
      for (const subscription of subscriptions) subscription.dispose();
      conn.dispose();
      connection.current = null;
      term.dispose();
    };
  }, [sessionId]);

  return (
    <div class="terminal-view">
      <div class="terminal-host" ref={host} role="group" aria-label={`Terminal on ${agentName}`} />
      <StatusBanner status={status} onNewShell={() => connection.current?.startNewShell()} />
    </div>
  );
}

function StatusBanner({ status, onNewShell }: { status: ConnectionStatus; onNewShell: () => void }) {
  switch (status.kind) {
    case 'attached':
    case 'session-ended': // the panel says how the session ended
      return null;
    case 'connecting':
      return (
        <p class="terminal-banner" role="status">
          Connecting to the shell…
        </p>
      );
    case 'reconnecting':
      return (
        <p class="terminal-banner warning" role="status">
          {status.lastError ?? 'Connection to the shell lost'}; reconnecting in {Math.ceil(status.inMs / 1000)} s…
        </p>
      );
    case 'error':
      return (
        <p class="terminal-banner error" role="alert">
          {status.message}
        </p>
      );
    case 'exited':
      return (
        <div class="terminal-banner" role="status">
          <span>
            The shell exited
            {status.signal
              ? ` (signal ${status.signal})`
              : status.status !== undefined
                ? ` (status ${status.status})`
                : ''}
            .
          </span>
          <button type="button" class="button primary" onClick={onNewShell}>
            Start a new shell
          </button>
        </div>
      );
  }
}
