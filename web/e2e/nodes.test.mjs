// The web terminal across nodes: two `postern server` nodes on one database (a SQLite file
// both open), the agent linked to node A, the browser on node B. B authorises, and the shell's
// bytes cross the node-to-node stream to A, which holds the session's tunnel.
//
//   POSTERN_BIN=target/debug/postern node --test web/e2e/nodes.test.mjs

import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { apiClient, freePort, launchChromium, start, stopAll, transcript, waitForOutput } from './harness.mjs';

const repoRoot = fileURLToPath(new URL('../../', import.meta.url));
const postern = process.env.POSTERN_BIN ? resolve(process.env.POSTERN_BIN) : join(repoRoot, 'target/debug/postern');
const WAIT_MS = 20_000;

/** A node of the database `database`; resolves once it listens. */
async function node(name, base, database) {
  const [http, gateway, peers] = [await freePort(), await freePort(), await freePort()];
  const server = start(name, postern, [
    'server',
    '--data-dir', join(base, name),
    '--http', `127.0.0.1:${http}`,
    '--agent-listen', `127.0.0.1:${gateway}`,
    '--database', database,
    '--node-listen', `127.0.0.1:${peers}`,
  ]);
  await waitForOutput(server, /agent gateway:/);
  return { server, url: `http://127.0.0.1:${http}`, gateway: `127.0.0.1:${gateway}` };
}

/** The first event on `api`'s live stream that `pick` accepts (the stream opened before). */
async function nextEvent(stream, pick, what) {
  const reader = stream.reader;
  const deadline = setTimeout(() => reader.cancel(new Error(`no ${what} within ${WAIT_MS} ms`)), WAIT_MS);
  try {
    for (;;) {
      let end;
      while ((end = stream.buffer.indexOf('\n\n')) < 0) {
        const { value, done } = await reader.read();
        if (done) throw new Error(`the event stream ended before ${what}`);
        stream.buffer += new TextDecoder().decode(value);
      }
      const block = stream.buffer.slice(0, end);
      stream.buffer = stream.buffer.slice(end + 2);
      const data = block.split('\n').filter((l) => l.startsWith('data:')).map((l) => l.slice(5)).join('\n');
      if (!data) continue;
      const event = JSON.parse(data);
      if (pick(event)) return event;
    }
  } finally {
    clearTimeout(deadline);
  }
}

test('the web terminal through a node that is not the agent\'s', { timeout: 90_000 }, async () => {
  const base = await mkdtemp(join(tmpdir(), 'postern-nodes-'));
  let browser;
  try {
    const database = `sqlite://${join(base, 'nodes.db')}`;
    const a = await node('node A', base, database);
    const password = a.server.stdout.match(/^\s*password:\s+(\S+)/m)?.[1];
    assert.ok(password, `no initial password\n${transcript(a.server)}`);
    const b = await node('node B', base, database);
    const onA = await apiClient(a.url, 'admin', password);
    const onB = await apiClient(b.url, 'admin', password);

    // A's live events: A stores what its agent's link and the session's tunnel do.
    const response = await onA.raw('/events?limit=0');
    assert.equal(response.status, 200);
    const events = { reader: response.body.getReader(), buffer: '' };
    const { token } = await onA.post('/tokens', { ttl_secs: 600, uses: 1 });
    const agent = start('agent', postern, [
      'agent', '--server', a.gateway, '--data-dir', join(base, 'agent'), '--name', 'far-box', '--token', token,
    ]);
    await nextEvent(events, (e) => e.kind === 'agent.online' && e.agent?.name === 'far-box', 'agent.online')
      .catch((error) => assert.fail(`${error.message}\n${transcript(agent)}`));

    // The session is asked for on B; A's link starts it and A's gateway binds its tunnel.
    const session = await onB.post('/agents/far-box/sessions');
    if (session.state !== 'running') {
      await nextEvent(events, (e) => e.session?.id === session.id && e.session.state === 'running', 'running');
    }
    await events.reader.cancel();

    browser = await launchChromium();
    const context = await browser.newContext({ viewport: { width: 1200, height: 800 } });
    context.setDefaultTimeout(WAIT_MS);
    const page = await context.newPage();
    await page.goto(b.url);
    await page.getByLabel('User name').fill('admin');
    await page.getByLabel('Password').fill(password);
    await page.getByRole('button', { name: 'Log in' }).click();
    await page.getByRole('heading', { name: 'Agents', level: 1 }).waitFor();
    await page.goto(`${b.url}/terminal/${session.id}`);
    const line = (pattern) =>
      page.waitForFunction(
        (source) =>
          [...(document.querySelector('.xterm-rows')?.children ?? [])].some((row) =>
            new RegExp(source).test((row.textContent ?? '').replace(/\u00a0/g, ' ').trimEnd()),
          ),
        pattern.source,
        { timeout: WAIT_MS },
      );
    await line(/[$#]$/);
    const marker = `across-${Math.floor(Math.random() * 1e9)}`;
    await page.locator('.xterm-screen').click();
    await page.keyboard.type(`echo ${marker}`);
    await page.keyboard.press('Enter');
    await line(new RegExp(`^${marker}$`));
  } finally {
    await browser?.close().catch(() => undefined);
    await stopAll();
    await rm(base, { recursive: true, force: true });
  }
});
