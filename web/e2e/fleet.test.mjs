// The Agents page tells the truth at fleet scale: ~2,000 agents held by `postern-bench
// agents` connect, the server restarts (every link drops and comes back), then the whole
// fleet is killed. Each time the page must converge to what the server says — every card's
// online state and status, and the fleet's counts — without a request per agent, without
// reading the whole fleet, and without a failed request outside the moments the server is
// down. How long it took, and how responsive search, paging and scrolling are, is printed, not
// asserted.
//
//   POSTERN_BIN=target/debug/postern POSTERN_BENCH_BIN=target/debug/postern-bench node --test web/e2e/fleet.test.mjs
//   POSTERN_FLEET_AGENTS=500 for a smaller fleet.

import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { request as httpRequest } from 'node:http';
import { join, resolve } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import {
  apiClient,
  freePort,
  launchChromium,
  start,
  stopAll,
  transcript,
  waitForExit,
  waitForOutput,
  waitForState,
} from './harness.mjs';

const repoRoot = fileURLToPath(new URL('../../', import.meta.url));
const bin = (variable, name) =>
  process.env[variable] ? resolve(process.env[variable]) : join(repoRoot, 'target/debug', name);
const postern = bin('POSTERN_BIN', 'postern');
const bench = bin('POSTERN_BENCH_BIN', 'postern-bench');
const AGENTS = Number(process.env.POSTERN_FLEET_AGENTS ?? 2000);

/** Generous: a slow CI machine connecting 2,000 agents to a debug build. */
const FLEET_MS = 240_000;
/** How long the page may take to converge before the test says it did not. */
const CONVERGE_MS = 60_000;

/** The bench's agents that are up, from its event lines. */
function upCount(load) {
  const online = new Set();
  for (const line of load.stdout.split('\n')) {
    const m = line.match(/^\{"type":"(up|down)","i":(\d+)/);
    if (!m) continue;
    if (m[1] === 'up') online.add(m[2]);
    else online.delete(m[2]);
  }
  return online.size;
}

/** The server's truth, as compact as the page's: name → "online|offline status". */
async function serverTruth(api) {
  const agents = await api.get('/agents');
  return Object.fromEntries(agents.map((a) => [a.name, `${a.online ? 'online' : 'offline'} ${a.status}`]));
}

/** Waits until the server itself lists `online` agents as online (asking it every 250 ms). */
async function serverSettles(api, online, what) {
  const deadline = Date.now() + FLEET_MS;
  for (;;) {
    const truth = await serverTruth(api);
    const count = Object.values(truth).filter((v) => v.startsWith('online')).length;
    if (count === online) return truth;
    if (Date.now() > deadline) throw new Error(`${what}: the server lists ${count} of ${online} online`);
    // The server's count is what is waited on; this only paces the asking.
    await new Promise((r) => setTimeout(r, 250));
  }
}

/**
 * Waits until the page shows what the server says: the counts over the whole fleet, and every
 * card it renders (a page of them); returns how long it took (ms).
 */
async function pageConverges(page, truth, since) {
  const online = Object.values(truth).filter((v) => v.startsWith('online')).length;
  await page.waitForFunction(
    ({ expected, total, online }) => {
      const summary = document.querySelector('[data-total]');
      if (Number(summary?.dataset.total) !== total || Number(summary?.dataset.online) !== online) return false;
      const cards = document.querySelectorAll('article.agent-card');
      if (cards.length !== Math.min(total, 120)) return false;
      for (const card of cards) {
        const name = card.querySelector('.agent-name')?.textContent ?? '';
        const state = card.dataset.liveness === 'offline' ? 'offline' : 'online';
        const status = card.querySelector('.agent-card-header .badge')?.textContent ?? '';
        if (expected[name] !== `${state} ${status}`) return false;
      }
      return true;
    },
    { expected: truth, total: Object.keys(truth).length, online },
    { timeout: CONVERGE_MS, polling: 100 },
  );
  return Date.now() - since;
}

/** Every agent through the API's pages: each once, in name order, as many as it counts. */
async function pageThroughApi(api) {
  const names = [];
  let cursor = '';
  for (;;) {
    const response = await api.raw(`/agents?limit=500${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`);
    assert.equal(response.status, 200);
    assert.equal(Number(response.headers.get('x-total-count')), AGENTS);
    names.push(...(await response.json()).map((a) => a.name));
    cursor = response.headers.get('x-next-cursor') ?? '';
    if (!cursor) break;
  }
  assert.equal(names.length, AGENTS);
  assert.deepEqual(names, [...names].sort(), 'in name order, none twice');
  const online = await api.raw('/agents?online=true&limit=1&q=load-');
  assert.equal(Number(online.headers.get('x-total-count')), AGENTS);
}

/** The bytes on the wire for a GET (not decompressed) and its content-encoding. */
function wire(url, headers) {
  return new Promise((resolve, reject) => {
    httpRequest(url, { headers }, (response) => {
      let bytes = 0;
      response.on('data', (chunk) => (bytes += chunk.length));
      response.on('end', () => resolve({ bytes, encoding: response.headers['content-encoding'] ?? 'identity' }));
      response.on('error', reject);
    })
      .on('error', reject)
      .end();
  });
}

/** What the page's requests weigh with the whole fleet: printed, and compression checked. */
async function wireWeight(base, api) {
  const auth = { authorization: api.authorization };
  const list = `${base}/api/v1/agents`;
  const plain = await wire(list, auth);
  const gzip = await wire(list, { ...auth, 'accept-encoding': 'gzip, br' });
  assert.equal(gzip.encoding, 'gzip', 'JSON answers are compressed');
  const full = await wire(`${base}/api/v1/presence/changes`, auth);
  const { cursor } = await api.get('/presence/changes');
  const quiet = await wire(`${base}/api/v1/presence/changes?since=${encodeURIComponent(cursor)}`, auth);
  const html = await (await fetch(base)).text();
  const script = html.match(/src="(\/assets\/index-[^"]+\.js)"/)?.[1];
  assert.ok(script, 'the app names its script');
  const scriptPlain = await wire(`${base}${script}`, {});
  const scriptBr = await wire(`${base}${script}`, { 'accept-encoding': 'gzip, deflate, br' });
  assert.equal(scriptBr.encoding, 'br', 'the app is served precompressed');
  const kib = (n) => `${(n / 1024).toFixed(1)} KiB`;
  console.log(
    `# fleet: agent list ${kib(plain.bytes)} → ${kib(gzip.bytes)} gzip; presence full ${kib(full.bytes)}, ` +
      `nothing changed ${quiet.bytes} B; app script ${kib(scriptPlain.bytes)} → ${kib(scriptBr.bytes)} brotli`,
  );
}

/** Time (ms) from an action to the condition it should bring about on the page. */
async function timed(action, condition) {
  const started = Date.now();
  await action();
  await condition();
  return Date.now() - started;
}

test(`the agents page converges to the server's truth with ${AGENTS} agents`, { timeout: 900_000 }, async () => {
  const dirs = [];
  const tempDir = async (name) => {
    const dir = await mkdtemp(join(tmpdir(), `postern-fleet-${name}-`));
    dirs.push(dir);
    return dir;
  };
  let browser;
  try {
    const [http, gateway] = [await freePort(), await freePort()];
    const data = await tempDir('server');
    // The fleet dials from one address, where a real one dials from many: the handshake caps
    // (16 per source) would only pace its return after the restart.
    const serverArgs = [
      'server', '--data-dir', data, '--http', `127.0.0.1:${http}`, '--agent-listen', `127.0.0.1:${gateway}`,
      '--max-handshakes', '65536', '--max-handshakes-per-source', '65536',
    ];
    let server = start('server', postern, serverArgs);
    await waitForOutput(server, /agent gateway:/);
    const password = server.stdout.match(/^\s*password:\s+(\S+)/m)?.[1];
    assert.ok(password, `no initial password\n${transcript(server)}`);
    const base = `http://127.0.0.1:${http}`;
    const api = await apiClient(base, 'admin', password);
    const { token } = await api.post('/tokens', { uses: AGENTS, ttl_secs: 3600 });

    const load = start(
      'postern-bench agents',
      bench,
      ['agents', '--server', `127.0.0.1:${gateway}`, '--count', String(AGENTS), '--data-dir', await tempDir('load'), '--events'],
      { env: { POSTERN_TOKEN: token } },
    );
    await waitForState(load, () => upCount(load) === AGENTS, `bring ${AGENTS} agents online`, FLEET_MS);

    browser = await launchChromium();
    const page = await (await browser.newContext({ viewport: { width: 1400, height: 900 } })).newPage();
    // Requests that failed, and when; the windows in which the server was down on purpose.
    const failures = [];
    const outages = [];
    let perAgentFetches = 0;
    let wholeListFetches = 0;
    page.on('requestfailed', (request) =>
      failures.push({ at: Date.now(), url: request.url(), error: request.failure()?.errorText ?? '' }),
    );
    page.on('console', (message) => {
      if (message.type() === 'error') failures.push({ at: Date.now(), url: '(console)', error: message.text() });
    });
    page.on('pageerror', (error) => failures.push({ at: Date.now(), url: '(page)', error: error.message }));
    page.on('request', (request) => {
      const url = new URL(request.url());
      if (/\/api\/v1\/agents\/[^/?]+$/.test(url.pathname)) perAgentFetches += 1;
      if (url.pathname === '/api/v1/agents' && !url.searchParams.has('limit')) wholeListFetches += 1;
    });

    await page.goto(base);
    await page.getByLabel('User name').fill('admin');
    await page.getByLabel('Password').fill(password);
    await page.getByRole('button', { name: 'Log in' }).click();
    const loaded = Date.now();
    const first = await pageConverges(page, await serverTruth(api), loaded);
    console.log(`# fleet: ${AGENTS} agents shown after login in ${first} ms`);
    await pageThroughApi(api);
    await wireWeight(base, api);

    // Responsiveness with the whole fleet connected: a search (the server searches), the next
    // page, and scrolling the page to its last card.
    const search = page.getByRole('searchbox', { name: 'Search' });
    const last = `load-${String(AGENTS - 1).padStart(5, '0')}`;
    const cards = page.locator('article.agent-card');
    const firstCard = () => page.locator('article.agent-card .agent-name').first().textContent();
    const filterMs = await timed(
      () => search.fill(last),
      () => page.waitForFunction(() => document.querySelectorAll('article.agent-card').length === 1),
    );
    const clearMs = await timed(
      () => search.fill(''),
      () => page.waitForFunction(() => document.querySelectorAll('article.agent-card').length === 120),
    );
    const nextClickMs = await timed(
      () => page.getByRole('button', { name: 'Next page' }).click(),
      () =>
        page.waitForFunction(
          () => document.querySelector('article.agent-card .agent-name')?.textContent === 'load-00120',
        ),
    );
    // The same in the page, without Playwright's round trips and actionability checks.
    await page.getByRole('button', { name: 'Previous page' }).click();
    await page.waitForFunction(() => document.querySelector('article.agent-card .agent-name')?.textContent === 'load-00000');
    const nextMs = await page.evaluate(async () => {
      const started = performance.now();
      [...document.querySelectorAll('button')].find((b) => b.textContent === 'Next page')?.click();
      await new Promise((shown) => {
        const check = () =>
          document.querySelector('article.agent-card .agent-name')?.textContent === 'load-00120'
            ? shown(undefined)
            : requestAnimationFrame(check);
        check();
      });
      return Math.round(performance.now() - started);
    });
    assert.equal(await cards.count(), 120, 'a page is 120 cards, whatever the fleet');
    const scrollMs = await page.evaluate(async () => {
      const started = performance.now();
      document.querySelector('article.agent-card:last-of-type')?.scrollIntoView();
      // Two frames: the scroll painted.
      await new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r)));
      return Math.round(performance.now() - started);
    });
    const domNodes = await page.evaluate(() => document.getElementsByTagName('*').length);
    const pageJson = await wire(`${base}/api/v1/agents?limit=120`, { authorization: api.authorization });
    console.log(
      `# fleet: search to one card ${filterMs} ms, back to all ${clearMs} ms, next page ${nextMs} ms (${nextClickMs} ms by Playwright's click), ` +
        `scroll to the last card ${scrollMs} ms; ${domNodes} DOM nodes; a page of agents ${(pageJson.bytes / 1024).toFixed(1)} KiB`,
    );
    await page.getByRole('button', { name: 'Previous page' }).click();
    await page.waitForFunction(() => document.querySelector('article.agent-card .agent-name')?.textContent === 'load-00000');
    assert.equal(await firstCard(), 'load-00000');

    // A server restart: every link drops; the agents reconnect with their backoff.
    const down = Date.now();
    process.kill(-server.child.pid, 'SIGTERM');
    await waitForExit(server);
    server = start('server (restarted)', postern, serverArgs);
    await waitForOutput(server, /agent gateway:/);
    outages.push([down, Date.now()]);
    const restarted = await serverSettles(api, AGENTS, 'after the restart');
    const settled = Date.now();
    const afterRestart = await pageConverges(page, restarted, settled);
    console.log(
      `# fleet: after a server restart the page matched the server ${afterRestart} ms after the server had every agent back (${Date.now() - down} ms after the restart began)`,
    );

    // The whole fleet dies at once.
    const killed = Date.now();
    process.kill(-load.child.pid, 'SIGKILL');
    const dead = await serverSettles(api, 0, 'after the fleet was killed');
    const serverSaw = Date.now();
    const afterKill = await pageConverges(page, dead, serverSaw);
    console.log(
      `# fleet: after killing the fleet the page matched the server ${afterKill} ms after the server saw it (${Date.now() - killed} ms after the kill)`,
    );

    // A flood is one row per kind in the bell, not 2,000. The bell holds the enrollment's
    // last events (the stream replays the recent ones at login: enrolled, approved and online
    // interleaved, in an order the agents' race decides), then the restart's and the kill's
    // presence changes: three storms, so at most three rows of any kind, whatever the order.
    await page.getByRole('button', { name: /^Notifications/ }).click();
    const sidebar = page.getByRole('dialog', { name: 'Notifications' });
    await sidebar.getByText(/^[\d,]+ agents went offline$/).first().waitFor();
    const rows = await sidebar
      .locator('.notification')
      .evaluateAll((items) => items.map((item) => [item.dataset.kind, item.innerText.replace(/\s+/g, ' ')]));
    console.log(`# fleet: the bell, ${rows.length} rows: ${rows.map(([, text]) => text).join(' | ')}`);
    const perKind = new Map();
    for (const [kind] of rows) perKind.set(kind, (perKind.get(kind) ?? 0) + 1);
    for (const [kind, count] of perKind) {
      assert.ok(count <= 3, `floods are grouped: ${count} rows of ${kind}: ${rows.join(' | ')}`);
    }

    assert.equal(perAgentFetches, 0, 'no request per agent: events carry their state, the rest is one list call');
    assert.equal(wholeListFetches, 0, 'the page reads a page of agents at a time, never the whole fleet');
    const unexpected = failures.filter(
      ({ at, error }) =>
        /INSUFFICIENT_RESOURCES/.test(error) || !outages.some(([from, to]) => at >= from && at <= to + 2000),
    );
    assert.deepEqual(unexpected, [], 'no failed request outside the restart');
  } finally {
    await browser?.close().catch(() => undefined);
    await stopAll();
    await Promise.all(dirs.map((dir) => rm(dir, { recursive: true, force: true })));
  }
});
