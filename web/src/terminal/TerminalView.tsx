// A real terminal on the session's shell: xterm.js fitted to its box, wired to the terminal
// WebSocket. Loaded on demand (xterm.js is most of the app's weight). Unmounting detaches;
// the shell goes on and a later mount replays it. Once the session ended, the last screen
// stays, read-only and dimmed, until the panel closes.

import '@xterm/xterm/css/xterm.css';
import '../styles/terminal.css';
import { effect } from '@preact/signals';
import { FitAddon } from '@xterm/addon-fit';
import { Terminal } from '@xterm/xterm';
import { useEffect, useRef, useState } from 'preact/hooks';
import { refreshSession } from '../state/sessions';
import { TerminalConnection, type ConnectionStatus } from './connection';
import { setTerminalFocuser } from './focus';
import { KeyBar, withCtrl } from './KeyBar';
import { installTerminalKeys, LEAVE_KEY_ARIA } from './keys';
import { terminalFontSize } from './fontSize';
import { terminalTheme } from './theme';

export interface TerminalProps {
  sessionId: string;
  agentName: string;
  /** The session ended: keep the last screen, take no input. */
  ended: boolean;
  /** The leave key was pressed: move focus out of the terminal. */
  onLeave(): void;
}

export default function TerminalView({ sessionId, agentName, ended, onLeave }: TerminalProps) {
  const host = useRef<HTMLDivElement>(null);
  const connection = useRef<TerminalConnection | null>(null);
  const terminal = useRef<Terminal | null>(null);
  const leave = useRef(onLeave);
  leave.current = onLeave;
  const [status, setStatus] = useState<ConnectionStatus>({ kind: 'connecting' });
  const [term, setTerm] = useState<Terminal | null>(null);
  // The key bar's Ctrl: applied to the next key typed, then released.
  const [ctrl, setCtrl] = useState(false);
  const ctrlArmed = useRef(false);
  ctrlArmed.current = ctrl;

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
      // Detached: the device keeps the shell while it is out of reach; keep trying.
      sessionStillRunning: () =>
        refreshSession(sessionId).then((s) => s.state === 'running' || s.state === 'detached'),
    });
    connection.current = conn;
    const subscriptions = [
      term.onData((data) => {
        if (ctrlArmed.current) {
          ctrlArmed.current = false;
          setCtrl(false);
          conn.sendInput(withCtrl(data));
        } else conn.sendInput(data);
      }),
      // onBinary carries bytes as a string of char codes 0–255 (some mouse reports).
      term.onBinary((data) => conn.sendInput(Uint8Array.from(data, (c) => c.charCodeAt(0) & 0xff))),
      term.onResize(({ cols, rows }) => conn.resize(cols, rows)),
    ];
    installTerminalKeys(term, () => leave.current());
    terminal.current = term;
    setTerm(term);
    setTerminalFocuser(() => term.focus());

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
      setTerminalFocuser(null);
      terminal.current = null;
      stopFontEffect();
      observer.disconnect();
      cancelAnimationFrame(frame);
      for (const subscription of subscriptions) subscription.dispose();
      conn.dispose();
      connection.current = null;
      term.dispose();
    };
  }, [sessionId]);

  useEffect(() => {
    const term = terminal.current;
    if (!term) return;
    term.options.disableStdin = ended;
    term.options.cursorBlink = !ended;
    // Out of the tab order once read-only: there is nothing to type into.
    if (term.textarea) term.textarea.tabIndex = ended ? -1 : 0;
    if (ended) term.blur();
  }, [ended]);

  return (
    <div class={`terminal-view${ended ? ' is-ended' : ''}`}>
      <div
        class="terminal-host"
        ref={host}
        role="group"
        aria-label={ended ? `Last screen of the terminal on ${agentName} (read-only)` : `Terminal on ${agentName}`}
        aria-keyshortcuts={ended ? undefined : LEAVE_KEY_ARIA}
      />
      {!ended && <StatusBanner status={status} onNewShell={() => connection.current?.startNewShell()} />}
      {!ended && term && (
        <KeyBar term={term} send={(data) => connection.current?.sendInput(data)} ctrl={ctrl} setCtrl={setCtrl} />
      )}
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
    case 'detached':
      return (
        <p class="terminal-banner warning" role="status">
          The device is out of reach{status.reason ? ` (${status.reason})` : ''}; it keeps the shell. Waiting for it
          to come back — what you type is sent then.
        </p>
      );
    case 'input-refused':
      return (
        <p class="terminal-banner error" role="alert">
          {status.unconfirmed
            ? `Maybe not delivered: ${status.bytes} bytes typed before the connection was lost could not be matched to what the shell took (another tab typed too), so they were not sent again.`
            : `Not sent: ${status.bytes} bytes typed while the shell was out of reach, past what is held until it is back.`}
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
            {status.gone
              ? `The shell is gone: ${status.gone}.`
              : `The shell exited${
                  status.signal
                    ? ` (signal ${status.signal})`
                    : status.status !== undefined
                      ? ` (status ${status.status})`
                      : ''
                }.`}
          </span>
          <button type="button" class="button primary" onClick={onNewShell}>
            Start a new shell
          </button>
        </div>
      );
  }
}
