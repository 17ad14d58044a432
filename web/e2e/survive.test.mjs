// Shells that survive, in the web terminal: the server is killed (SIGKILL) while the shell
// prints a counter every 10 ms, and started again on the same data; the agent keeps the
// shell, links again, the browser re-attaches by itself, and the output it received is
// contiguous — no number missing or repeated. A line typed while the server was down is held
// by the page and delivered once.
//
//   POSTERN_BIN=target/debug/postern node --test web/e2e/survive.test.mjs

import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { apiClient, freePort, launchChromium, start, stopAll, transcript, waitForExit, waitForOutput } from './harness.mjs';

const repoRoot = fileURLToPath(new URL('../../', import.meta.url));
const postern = process.env.POSTERN_BIN ? resolve(process.env.POSTERN_BIN) : join(repoRoot, 'target/debug/postern');
const WAIT_MS = 30_000;
// A counter every 10 ms until a line is typed (read, not an interrupt: bash may take an
// interrupt twice and drop what is typed meanwhile). `read -t 0` only asks whether a line
// is there: a `read` with a timeout may lose what it read when the timeout fires.
const COUNTER =
  'i=0; while [ $i -lt 1000000 ]; do i=$((i+1)); echo c$i; if read -t 0; then read -r line; echo "stopped-by-$line"; break; fi; sleep 0.01; done';

/** Resolves once `probe()` answers truthy (asked every 100 ms), or fails saying `what`. */
async function until(probe, what, timeoutMs = WAIT_MS) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe().catch(() => undefined);
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`${what}: not within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** The counter's numbers in the terminal output received, in order. */
function counter(text) {
  return text
    .split(/[\r\n]+/)
    .map((line) => /^c(\d+)$/.exec(line)?.[1])
    .filter((n) => n !== undefined)
    .map(Number);
}

function assertContiguous(text) {
  const numbers = counter(text);
  const expected = numbers.map((_, i) => i + 1);
  assert.deepEqual(numbers, expected, 'the counter is not contiguous');
}

test('the web terminal keeps its shell through a server killed and started again', { timeout: 120_000 }, async () => {
  const base = await mkdtemp(join(tmpdir(), 'postern-survive-'));
  let browser;
  try {
    const [http, gateway] = [await freePort(), await freePort()];
    const serverArgs = [
      'server',
      '--data-dir', join(base, 'server'),
      '--http', `127.0.0.1:${http}`,
      '--agent-listen', `127.0.0.1:${gateway}`,
    ];
    let server = start('server', postern, serverArgs);
    await waitForOutput(server, /agent gateway:/);
    const password = server.stdout.match(/^\s*password:\s+(\S+)/m)?.[1];
    assert.ok(password, `no initial password\n${transcript(server)}`);
    const url = `http://127.0.0.1:${http}`;
    let api = await apiClient(url, 'admin', password);
    const { token } = await api.post('/tokens', { ttl_secs: 600, uses: 1 });
    const agent = start('agent', postern, [
      'agent', '--server', `127.0.0.1:${gateway}`, '--data-dir', join(base, 'agent'), '--name', 'keeper', '--token', token,
    ]);
    await until(async () => (await api.get('/agents/keeper')).online, 'the agent online').catch((error) =>
      assert.fail(`${error.message}\n${transcript(agent)}`),
    );
    const session = await api.post('/agents/keeper/sessions');
    await until(async () => (await api.get(`/sessions/${session.id}`)).state === 'running', 'the session running');

    browser = await launchChromium();
    const context = await browser.newContext({ viewport: { width: 1200, height: 800 } });
    context.setDefaultTimeout(WAIT_MS);
    const page = await context.newPage();
    // Everything the terminal sockets delivered, in order, across reconnections: the page
    // writes exactly these bytes to the screen.
    let received = '';
    const sockets = [];
    page.on('websocket', (socket) => {
      if (!socket.url().includes('/terminal')) return;
      const index = sockets.push({ url: socket.url(), bytes: 0 }) - 1;
      socket.on('framereceived', ({ payload }) => {
        if (typeof payload === 'string') return;
        received += payload.toString('latin1');
        sockets[index].bytes += payload.length;
      });
    });
    await page.goto(url);
    await page.getByLabel('User name').fill('admin');
    await page.getByLabel('Password').fill(password);
    await page.getByRole('button', { name: 'Log in' }).click();
    await page.getByRole('heading', { name: 'Agents', level: 1 }).waitFor();
    await page.goto(`${url}/terminal/${session.id}`);
    await until(async () => /[$#] $/.test(received), 'a prompt');
    await page.locator('.xterm-screen').click();
    await page.keyboard.type(COUNTER);
    await page.keyboard.press('Enter');
    await until(async () => counter(received).length >= 30, 'the counter running');
    const before = counter(received).at(-1);

    server.child.kill('SIGKILL');
    await waitForExit(server);
    // The page says it lost the shell; what is typed now is held until it is back.
    await page.getByRole('status').filter({ hasText: /reconnecting|out of reach/ }).waitFor();
    await page.keyboard.type('halt');
    await page.keyboard.press('Enter');
    server = start('server again', postern, serverArgs);
    await waitForOutput(server, /agent gateway:/);
    api = await apiClient(url, 'admin', password);

    // Re-attached by itself: the counter went on, with nothing missing or repeated (the
    // shell counted while nobody watched; the page gets what it missed).
    await until(
      async () => sockets.length >= 2 && sockets.at(-1).bytes > 0 && counter(received).at(-1) > before,
      'the counter to go on after the restart, on a new socket',
    );
    assertContiguous(received);
    assert.ok(sockets.at(-1).url.includes('shell='), `the page named its shell: ${sockets.at(-1).url}`);

    // The line typed while the server was down stopped the counter, once; then a command
    // typed now runs once.
    await until(async () => /stopped-by-halt\r\n[^]*[$#] $/.test(received), 'the prompt after the typed line').catch(
      (error) => assert.fail(`${error.message}; the terminal's last output: ${JSON.stringify(received.slice(-300))}`),
    );
    assert.equal(received.split('stopped-by-halt').length - 1, 1, 'the line typed while down arrived once');
    await page.keyboard.type('echo typed-$((6*7))');
    await page.keyboard.press('Enter');
    await until(async () => received.includes('typed-42\r\n'), 'the command typed after the restart').catch((error) =>
      assert.fail(`${error.message}; the terminal's last output: ${JSON.stringify(received.slice(-300))}`),
    );
    assertContiguous(received);
    assert.equal(received.split('typed-42\r\n').length - 1, 1, 'the command ran once');

    // The session says what happened: detached by the restart, then running again.
    const now = await api.get(`/sessions/${session.id}`);
    const steps = now.history.map((step) => step.state);
    assert.deepEqual(steps.slice(-2), ['detached', 'running'], `session steps: ${steps}`);
    assert.equal(now.state, 'running');
  } finally {
    await browser?.close().catch(() => undefined);
    await stopAll();
    await rm(base, { recursive: true, force: true });
  }
});
