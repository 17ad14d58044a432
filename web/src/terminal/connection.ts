// The terminal WebSocket of one SSH session. The shell's output is numbered by byte offset;
// we track the next offset we expect, so that a dropped socket reconnects from there and the
// screen neither repeats nor misses anything, and a fresh terminal (from 0) gets the recent
// output replayed as it was. The device keeps the shell under a name the server tells us:
// we reconnect with it (and keep it for this tab across reloads), so that after a server
// restart — or through another server — the same shell continues. What is typed while we are
// not attached is held and sent once we are (up to a limit, past which it is refused, said so);
// what we sent that a dying server had not passed on is sent again once, from the shell's own
// count of what it took (see pendingInput).

import type { SessionState, TerminalClientMessage, TerminalServerMessage } from '../api/types';
import { PendingInput } from './pendingInput';

/** Where the output goes (an xterm.js terminal). */
export interface TerminalSink {
  write(bytes: Uint8Array): void;
  /** Clear the screen and the scrollback: the output that follows starts over. */
  reset(): void;
}

export type ConnectionStatus =
  | { kind: 'connecting' }
  | { kind: 'attached' }
  /** `lastError`: what the server said before the socket closed, if anything. */
  | { kind: 'reconnecting'; inMs: number; lastError?: string }
  | { kind: 'exited'; status?: number; signal?: string; gone?: string }
  /** The device is out of reach; it keeps the shell, and we attach again once it is back. */
  | { kind: 'detached'; reason?: string }
  /** Typing while not attached went past what is held: those keystrokes were not sent.
   * `unconfirmed`: sent, but a server was lost before passing them on and they could not be
   * matched to what the shell took (another tab typed too): they may not have arrived. */
  | { kind: 'input-refused'; bytes: number; unconfirmed?: boolean }
  | { kind: 'session-ended'; state: SessionState; reason?: string }
  | { kind: 'error'; message: string };

export interface ConnectionOptions {
  sessionId: string;
  sink: TerminalSink;
  size(): { cols: number; rows: number };
  onStatus(status: ConnectionStatus): void;
  /** Asked before each reconnection: a stopped session (or an expired login) ends the retries. */
  sessionStillRunning(): Promise<boolean>;
}

const BACKOFF_START_MS = 500;
const BACKOFF_MAX_MS = 10_000;
const ENDED_STATES = new Set<SessionState>(['stopping', 'stopped', 'failed']);

export class TerminalConnection {
  private socket: WebSocket | null = null;
  /** The offset of the next output byte we expect. */
  private offset = 0;
  /** Bytes of a replay that we already have (the server resent from before our offset). */
  private skip = 0;
  private attached = false;
  private failures = 0;
  private lastError: string | undefined;
  private retryTimer: ReturnType<typeof setTimeout> | undefined;
  /** Set when reconnecting would be wrong: we closed, the shell exited, the session ended. */
  private finished = false;
  private disposed = false;
  private readonly encoder = new TextEncoder();
  /** The shell's name on the device, once the server said it. */
  private shell: string | undefined;
  /** Typed while not attached, and sent but maybe not taken by the shell yet. Not kept across
   * reloads: keystrokes may be passwords, which must not be written to storage. */
  private readonly pending = new PendingInput();

  constructor(private readonly options: ConnectionOptions) {
    this.shell = loadShell(options.sessionId);
  }

  /** Attach from the start of what is kept: the screen is replayed as it was. */
  open(): void {
    this.offset = 0;
    this.connect();
  }

  /** After the shell exited (or is gone): attaching without its name starts a new shell. */
  startNewShell(): void {
    this.options.sink.reset();
    this.offset = 0;
    this.forgetShell();
    this.connect();
  }

  /** Keyboard input from xterm (a string of UTF-16 text) or raw bytes. */
  sendInput(data: string | Uint8Array<ArrayBuffer>): void {
    if (this.finished) return;
    const bytes = typeof data === 'string' ? this.encoder.encode(data) : data;
    if (!this.pending.fits(bytes.byteLength)) {
      this.options.onStatus({ kind: 'input-refused', bytes: bytes.byteLength });
    } else if (this.attached && this.socket?.readyState === WebSocket.OPEN) {
      this.socket.send(bytes);
      this.pending.sent(bytes);
    } else {
      this.pending.hold(bytes);
    }
  }

  resize(cols: number, rows: number): void {
    if (!this.attached || this.socket?.readyState !== WebSocket.OPEN) return;
    const message: TerminalClientMessage = { type: 'resize', cols, rows };
    this.socket.send(JSON.stringify(message));
  }

  /** Detach: the session and its shell go on without us. */
  dispose(): void {
    this.disposed = true;
    this.finished = true;
    clearTimeout(this.retryTimer);
    if (this.socket) closeQuietly(this.socket);
    this.socket = null;
  }

  private connect(): void {
    if (this.disposed) return;
    clearTimeout(this.retryTimer);
    this.finished = false;
    this.attached = false;
    if (this.socket) closeQuietly(this.socket);
    const { cols, rows } = this.options.size();
    const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
    const shell = this.shell ? `&shell=${encodeURIComponent(this.shell)}` : '';
    const url =
      `${scheme}://${location.host}/api/v1/sessions/${encodeURIComponent(this.options.sessionId)}/terminal` +
      `?from=${this.offset}&cols=${cols}&rows=${rows}${shell}`;
    const socket = new WebSocket(url);
    socket.binaryType = 'arraybuffer';
    this.socket = socket;
    this.options.onStatus({ kind: 'connecting' });
    socket.onmessage = (message) => {
      if (this.socket !== socket) return;
      if (typeof message.data === 'string') this.control(JSON.parse(message.data) as TerminalServerMessage);
      else this.output(new Uint8Array(message.data as ArrayBuffer));
    };
    socket.onclose = () => {
      if (this.socket !== socket) return;
      this.socket = null;
      this.attached = false;
      if (!this.finished) this.scheduleReconnect();
    };
  }

  private control(message: TerminalServerMessage): void {
    switch (message.type) {
      case 'attached': {
        // A socket's later `attached` (the output skipped ahead) says nothing new of input.
        const first = !this.attached;
        if (message.reset || message.offset >= this.offset) {
          if (message.reset) this.options.sink.reset();
          this.offset = message.offset;
          this.skip = 0;
        } else {
          this.skip = this.offset - message.offset;
        }
        let unconfirmed = 0;
        if (message.shell && message.shell !== this.shell) {
          if (this.shell) unconfirmed += this.pending.otherShell();
          this.shell = message.shell;
          saveShell(this.options.sessionId, message.shell);
        }
        this.attached = true;
        this.failures = 0;
        this.lastError = undefined;
        this.options.onStatus({ kind: 'attached' });
        // The size may have changed while the socket was opening.
        const { cols, rows } = this.options.size();
        this.resize(cols, rows);
        if (first) unconfirmed += this.resend(message.input);
        if (unconfirmed > 0) this.options.onStatus({ kind: 'input-refused', bytes: unconfirmed, unconfirmed: true });
        break;
      }
      case 'input':
        this.pending.acknowledged(message.end);
        break;
      case 'state':
        if (ENDED_STATES.has(message.state)) {
          this.finished = true;
          this.forgetShell();
          this.options.onStatus({ kind: 'session-ended', state: message.state, reason: message.reason });
        } else if (message.state === 'detached') {
          this.options.onStatus({ kind: 'detached', reason: message.reason });
        } else if (message.state === 'running' && this.attached) {
          this.options.onStatus({ kind: 'attached' });
        }
        break;
      case 'exit':
        this.finished = true;
        this.forgetShell();
        this.options.onStatus({ kind: 'exited', status: message.status, signal: message.signal });
        break;
      case 'gone':
        this.finished = true;
        this.forgetShell();
        this.options.onStatus({ kind: 'exited', gone: message.reason });
        break;
      case 'error':
        this.lastError = message.message;
        this.options.onStatus({ kind: 'error', message: message.message });
        break;
    }
  }

  /** On a new socket: what the shell did not take (it has `input` bytes), then what is held. */
  private resend(input: number): number {
    const { send, unconfirmed } = this.pending.attached(input);
    for (const bytes of send) this.socket?.send(bytes as Uint8Array<ArrayBuffer>);
    return unconfirmed;
  }

  private forgetShell(): void {
    this.shell = undefined;
    this.pending.clear();
    forgetShell(this.options.sessionId);
  }

  private output(bytes: Uint8Array): void {
    let data = bytes;
    if (this.skip > 0) {
      const dropped = Math.min(this.skip, data.byteLength);
      this.skip -= dropped;
      data = data.subarray(dropped);
      if (data.byteLength === 0) return;
    }
    this.offset += data.byteLength;
    this.options.sink.write(data);
  }

  private scheduleReconnect(): void {
    if (this.disposed) return;
    this.failures += 1;
    const cap = Math.min(BACKOFF_MAX_MS, BACKOFF_START_MS * 2 ** (this.failures - 1));
    // Jitter spreads the reconnections of many tabs after a server restart.
    const delay = Math.round(cap * (0.5 + Math.random() / 2));
    this.options.onStatus({ kind: 'reconnecting', inMs: delay, lastError: this.lastError });
    this.retryTimer = setTimeout(() => {
      this.options.sessionStillRunning().then(
        (running) => {
          if (this.disposed) return;
          if (running) this.connect();
          else this.options.onStatus({ kind: 'session-ended', state: 'stopped' });
        },
        // The server itself is unreachable: keep trying.
        () => this.scheduleReconnect(),
      );
    }, delay);
  }
}

// The shell's name, per session, for this tab: a reload after a server restart re-attaches to
// the same shell. Session storage is the tab's own; without it (private modes) the name lives
// as long as the page.
const SHELL_KEY = 'postern.shell.';

function loadShell(sessionId: string): string | undefined {
  try {
    return sessionStorage.getItem(SHELL_KEY + sessionId) ?? undefined;
  } catch {
    return undefined;
  }
}

function saveShell(sessionId: string, shell: string): void {
  try {
    sessionStorage.setItem(SHELL_KEY + sessionId, shell);
  } catch {
    // Not kept across reloads, then.
  }
}

function forgetShell(sessionId: string): void {
  try {
    sessionStorage.removeItem(SHELL_KEY + sessionId);
  } catch {
    // Nothing was kept.
  }
}

/** Closing a socket that is still connecting makes the browser log an error; wait for it. */
function closeQuietly(socket: WebSocket): void {
  socket.onmessage = null;
  socket.onclose = null;
  if (socket.readyState === WebSocket.CONNECTING) socket.onopen = () => socket.close(1000);
  else socket.close(1000);
}
