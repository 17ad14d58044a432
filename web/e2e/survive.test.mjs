// Shells that survive, in the web terminal: the server is killed (SIGKILL) while the shell
// prints a counter every 10 ms, and started again on the same data; the agent keeps the
// shell, links again, the browser re-attaches by itself, and the output it received is
// contiguous — no number missing or repeated. Meanwhile the page types numbered lines without
// pause, from before the kill until after the re-attach: every one reaches the shell once, in
// order — those typed while the server was down (held by the page), and those the page had
// sent that the dying server had not passed on (sent again from the shell's own count).
//
//   POSTERN_BIN=target/debug/postern node --test web/e2e/survive.test.mjs

import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { apiClient, freePort, launchChromium, start, stopAll, transcript, waitForExit, waitForOutput } from './harness.mjs';

const repoRoot = fileURLToPath(new URL('../../', import.meta.url));
const postern = process.env.POSTERN_BIN ? resolve(process.env.POSTERN_BIN) : join(repoRoot, 'target/debug/postern');
const WAIT_MS = 30_000;
// A counter every 10 ms; each typed line is appended to `file`, until the line `halt` (read,
// not an interrupt: bash may take an interrupt twice and drop what is typed meanwhile).
// `read -t 0` only asks whether a line is there: a `read` with a timeout may lose what it read
// when the timeout fires. No echo: typed keys would split the counter's lines on the screen.
const counterInto = (file) =>
  `stty -echo; i=0; while [ $i -lt 1000000 ]; do i=$((i+1)); echo c$i; while read -t 0; do read -r line; if [ "$line" = halt ]; then break 2; fi; echo "$line" >> ${file}; done; sleep 0.01; done; stty echo; echo "stopped-by-$line"`;

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
    const typedFile = join(base, 'typed');
    await page.keyboard.type(counterInto(typedFile));
    await page.keyboard.press('Enter');
    await until(async () => counter(received).length >= 30, 'the counter running');
    const before = counter(received).at(-1);
    const shellGot = async () => (await readFile(typedFile, 'utf8').catch(() => '')).split('\n').filter(Boolean);

    // Numbered lines, one key at a time, without pause until told to stop.
    let typing = true;
    let typed = 0;
    const typist = (async () => {
      while (typing) {
        typed += 1;
        await page.keyboard.type(`k${typed}`);
        await page.keyboard.press('Enter');
      }
    })();
    await until(async () => (await shellGot()).length >= 20, 'the shell taking typed lines');

    server.child.kill('SIGKILL');
    await waitForExit(server);
    // The page says it lost the shell; what is typed now is held until it is back.
    await page.getByRole('status').filter({ hasText: /reconnecting|out of reach/ }).waitFor();
    const typedWhileDown = typed;
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
    // Typing went on after the re-attach, and the shell took it.
    const reattachedAt = typed;
    await until(async () => (await shellGot()).includes(`k${reattachedAt + 20}`), 'lines typed after the re-attach');
    typing = false;
    await typist;
    await page.keyboard.type('halt');
    await page.keyboard.press('Enter');

    // Every line the page typed reached the shell once, in order: before the kill, in flight
    // when the server died, while it was down, after it came back.
    await until(async () => /stopped-by-halt\r\n[^]*[$#] $/.test(received), 'the prompt after the typed line').catch(
      (error) => assert.fail(`${error.message}; the terminal's last output: ${JSON.stringify(received.slice(-300))}`),
    );
    assert.equal(received.split('stopped-by-halt').length - 1, 1, 'the halt line arrived once');
    const got = await shellGot();
    const expected = Array.from({ length: typed }, (_, i) => `k${i + 1}`);
    const missing = expected.filter((line) => !got.includes(line));
    const extra = got.filter((line, i) => got.indexOf(line) !== i || !expected.includes(line));
    assert.ok(typedWhileDown > 20 && typed > typedWhileDown, `typed ${typedWhileDown} lines before the restart, ${typed} in all`);
    assert.deepEqual(
      got,
      expected,
      `the shell got ${got.length} of ${typed} typed lines; missing ${JSON.stringify(missing)}, repeated or garbled ${JSON.stringify(extra)}`,
    );
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
