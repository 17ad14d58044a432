// Processes for the end-to-end test: start them in their own process groups, wait for what
// they print, and kill every one of them (and their children) at the end, whatever happened.

import { spawn } from 'node:child_process';
import { createServer } from 'node:net';

const started = new Set();

/** A port that was free a moment ago (the OS picks it; we let it go for the server to take). */
export function freePort() {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.unref();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

/**
 * Starts a program. Its output is kept (stdout and stderr apart) so that tests can wait for
 * lines and show everything when something fails.
 */
export function start(name, command, args, { env = {}, input } = {}) {
  const child = spawn(command, args, {
    env: { ...process.env, ...env },
    stdio: ['pipe', 'pipe', 'pipe'],
    // Its own process group, so that stopping it also stops what it started (shells).
    detached: true,
  });
  const proc = { name, child, stdout: '', stderr: '', exited: null, waiters: new Set() };
  const notify = () => {
    for (const waiter of proc.waiters) waiter();
  };
  child.stdout.setEncoding('utf8').on('data', (chunk) => {
    proc.stdout += chunk;
    notify();
  });
  child.stderr.setEncoding('utf8').on('data', (chunk) => {
    proc.stderr += chunk;
    notify();
  });
  child.on('exit', (code, signal) => {
    proc.exited = { code, signal };
    started.delete(proc);
    notify();
  });
  child.on('error', (error) => {
    proc.exited = { code: null, signal: null, error };
    started.delete(proc);
    notify();
  });
  if (input !== undefined) child.stdin.end(input);
  started.add(proc);
  return proc;
}

/**
 * Settles once `probe(proc)` answers (re-asked whenever the program prints or exits):
 * `{ value }` resolves, `{ error }` rejects; fails after `timeoutMs` with `waitingFor`.
 */
function waitOn(proc, probe, waitingFor, timeoutMs) {
  return new Promise((resolve, reject) => {
    const check = () => {
      const answer = probe(proc);
      if (!answer) return;
      done();
      if ('error' in answer) reject(answer.error);
      else resolve(answer.value);
    };
    const timer = setTimeout(() => {
      done();
      reject(new Error(`${proc.name} did not ${waitingFor} within ${timeoutMs} ms\n${transcript(proc)}`));
    }, timeoutMs);
    const done = () => {
      clearTimeout(timer);
      proc.waiters.delete(check);
    };
    proc.waiters.add(check);
    check();
  });
}

/** Resolves with the match once stdout matches `pattern`; fails if the program exits first. */
export function waitForOutput(proc, pattern, timeoutMs = 60_000) {
  const probe = () => {
    const match = proc.stdout.match(pattern);
    if (match) return { value: match };
    if (proc.exited) {
      const why = `${proc.name} exited (${describeExit(proc)}) before printing ${pattern}`;
      return { error: new Error(`${why}\n${transcript(proc)}`) };
    }
    return null;
  };
  return waitOn(proc, probe, `print ${pattern}`, timeoutMs);
}

/**
 * Resolves with `probe(proc)`'s answer once it is truthy (asked again whenever the program
 * prints); fails if the program exits first.
 */
export function waitForState(proc, probe, waitingFor, timeoutMs = 60_000) {
  const check = () => {
    const value = probe(proc);
    if (value) return { value };
    if (proc.exited) {
      return { error: new Error(`${proc.name} exited (${describeExit(proc)}) before it would ${waitingFor}\n${transcript(proc)}`) };
    }
    return null;
  };
  return waitOn(proc, check, waitingFor, timeoutMs);
}

/** Resolves with the exit once the program has ended. */
export function waitForExit(proc, timeoutMs = 60_000) {
  return waitOn(proc, () => (proc.exited ? { value: proc.exited } : null), 'exit', timeoutMs);
}

function describeExit(proc) {
  const { code, signal, error } = proc.exited ?? {};
  return error ? error.message : signal ? `signal ${signal}` : `status ${code}`;
}

export function transcript(proc) {
  return `--- ${proc.name} stdout ---\n${proc.stdout.slice(-4000)}\n--- ${proc.name} stderr ---\n${proc.stderr.slice(-4000)}`;
}

/** Stops every program still running: TERM to its group, KILL to whatever is left after 5 s. */
export async function stopAll() {
  const running = [...started];
  for (const proc of running) signalGroup(proc, 'SIGTERM');
  await Promise.all(
    running.map(async (proc) => {
      await waitForExit(proc, 5000).catch(() => undefined);
      // Also whatever it left behind in its group (a shell, say).
      signalGroup(proc, 'SIGKILL');
    }),
  );
}

function signalGroup(proc, signal) {
  try {
    process.kill(-proc.child.pid, signal);
  } catch {
    // Already gone.
  }
}

// Last resort if the test runner itself is torn down: no program outlives it.
process.on('exit', () => {
  for (const proc of started) signalGroup(proc, 'SIGKILL');
});

/** Debian's Chromium, headless, without anything that would reach the network by itself. */
export async function launchChromium() {
  const { chromium } = await import('playwright-core');
  return chromium.launch({
    executablePath: '/usr/bin/chromium',
    headless: true,
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      '--no-first-run',
      '--disable-quic',
    ],
  });
}

/** A logged-in client of the HTTP API, for the server's own view of the truth. */
export async function apiClient(base, user, password) {
  const login = await fetch(`${base}/api/v1/login`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ user, password }),
  });
  if (!login.ok) throw new Error(`login failed: ${login.status} ${await login.text()}`);
  const { token } = await login.json();
  const call = async (method, path, body) => {
    const response = await fetch(`${base}/api/v1${path}`, {
      method,
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    if (!response.ok) throw new Error(`${method} ${path}: ${response.status} ${await response.text()}`);
    return response.status === 204 ? undefined : response.json();
  };
  const raw = (path) => fetch(`${base}/api/v1${path}`, { headers: { authorization: `Bearer ${token}` } });
  return {
    get: (path) => call('GET', path),
    post: (path, body) => call('POST', path, body ?? {}),
    raw,
    authorization: `Bearer ${token}`,
  };
}
