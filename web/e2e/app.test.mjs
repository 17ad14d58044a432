// The web app end to end: a real Postern (quickstart: server + approved agent), a second
// agent that waits for approval, the CLI, and Debian's Chromium driven by playwright-core.
// Every wait is on a condition; every program started here is stopped at the end.
//
//   node --test web/e2e/        (POSTERN_BIN: the postern binary; default target/debug/postern)

import assert from 'node:assert/strict';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';
import { freePort, start, stopAll, transcript, waitForExit, waitForOutput } from './harness.mjs';

const repoRoot = fileURLToPath(new URL('../../', import.meta.url));
const HOSTILE_HOST = '<img src=x onerror=window.__pwned=1>';
const postern = process.env.POSTERN_BIN ? resolve(process.env.POSTERN_BIN) : join(repoRoot, 'target/debug/postern');
const screenshots = join(repoRoot, 'test-output/web');

/** How long a single condition may take before the test says which one failed. */
const WAIT_MS = 20_000;

/**
 * Waits until a line of the terminal in the SSH panel (as xterm's DOM renderer shows it)
 * matches `pattern`, and returns that line; with `absent`, until no line does.
 */
async function waitForTerminalLine(page, pattern, { absent = false } = {}) {
  const handle = await page.waitForFunction(
    ([source, absent]) => {
      const rows = document.querySelector('.ssh-panel .xterm-rows');
      if (!rows) return false;
      const re = new RegExp(source);
      const line = [...rows.children]
        .map((row) => (row.textContent ?? '').replace(/\u00a0/g, ' ').trimEnd())
        .find((text) => re.test(text));
      return absent ? line === undefined : (line ?? false);
    },
    [pattern.source, absent],
    { timeout: WAIT_MS },
  );
  return handle.jsonValue();
}

test('the web app: login, agents, approval, SSH terminal, notifications', { timeout: 110_000 }, async (t) => {
  const dirs = [];
  const tempDir = async (name) => {
    const dir = await mkdtemp(join(tmpdir(), `postern-web-${name}-`));
    dirs.push(dir);
    return dir;
  };
  await mkdir(screenshots, { recursive: true });
  let browser;
  const browserErrors = [];
  try {
    // The server and its approved agent.
    const [http, gateway] = [await freePort(), await freePort()];
    const quickstart = start('quickstart', postern, [
      'quickstart',
      '--data-dir',
      await tempDir('quickstart'),
      '--http',
      `127.0.0.1:${http}`,
      '--agent-listen',
      `127.0.0.1:${gateway}`,
    ]);
    await waitForOutput(quickstart, /Ctrl-C stops everything\./, 60_000);
    const url = quickstart.stdout.match(/^\s*URL:\s+(\S+)/m)?.[1];
    const password = quickstart.stdout.match(/^\s*password:\s+(\S+)/m)?.[1];
    const agentName = quickstart.stdout.match(/^\s*agent:\s+(\S+) \((did:key:\S+)\)/m)?.[1];
    assert.ok(url && password && agentName, `cannot read the quickstart banner\n${transcript(quickstart)}`);

    // An agent without a token: it enrolls and waits for an administrator. It runs with a
    // hostname of its own (a UTS namespace) that is HTML and a terminal escape: agent-supplied
    // text, which the app must show as inert text.
    const userns = process.getuid() === 0 ? [] : ['--map-root-user'];
    const pending = start('pending agent', 'unshare', [
      '--uts',
      ...userns,
      'sh',
      '-c',
      'printf %s "$1" > /proc/sys/kernel/hostname && shift && exec "$@"',
      'sh',
      `${HOSTILE_HOST}\x1b[31m`,
      postern,
      'agent',
      '--server',
      `127.0.0.1:${gateway}`,
      '--data-dir',
      await tempDir('pending-agent'),
      '--name',
      'pending-box',
    ]);

    browser = await chromium.launch({
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
    const context = await browser.newContext({ viewport: { width: 1400, height: 900 } });
    context.setDefaultTimeout(WAIT_MS);
    const page = await context.newPage();
    page.on('console', (message) => {
      if (message.type() === 'error') browserErrors.push(`console: ${message.text()}`);
    });
    page.on('pageerror', (error) => browserErrors.push(`page error: ${error.message}`));

    let shot = 0;
    let failed = false;
    const step = async (name, body) => {
      await t.test(name, { skip: failed && 'an earlier step failed' }, async () => {
        try {
          await body();
        } catch (error) {
          failed = true;
          throw error;
        } finally {
          shot += 1;
          const file = `${String(shot).padStart(2, '0')}-${name.replace(/[^a-z0-9]+/gi, '-').toLowerCase()}.png`;
          await page.screenshot({ path: join(screenshots, file) }).catch(() => undefined);
        }
      });
    };

    const card = (name) =>
      page.locator('article.agent-card', { has: page.getByRole('heading', { name, exact: true }) });
    const panel = page.locator('.ssh-panel');
    const typeCommand = async (command) => {
      await panel.locator('.xterm-screen').click();
      await page.keyboard.type(command);
      await page.keyboard.press('Enter');
    };
    const marker = `hello-${Math.floor(Math.random() * 1e9)}`;

    await step('login', async () => {
      await page.goto(url);
      await page.getByLabel('User name').fill('admin');
      await page.getByLabel('Password').fill(password);
      await page.getByRole('button', { name: 'Log in' }).click();
      await page.getByRole('heading', { name: 'Agents', level: 1 }).waitFor();
    });

    await step('agent online', async () => {
      const agent = card(agentName);
      await agent.getByText('Online', { exact: true }).waitFor();
      await agent.getByText('approved', { exact: true }).waitFor();
      await agent.getByRole('button', { name: `Open SSH connection to ${agentName}` }).waitFor();
    });

    await step('approve pending agent', async () => {
      const box = card('pending-box');
      await box.getByText('pending', { exact: true }).waitFor();
      // The server dropped the escape; the HTML is text, not an element.
      await box.getByText(`${HOSTILE_HOST}[31m`, { exact: true }).waitFor();
      assert.equal(await box.locator('img').count(), 0);
      assert.equal(await page.evaluate(() => window.__pwned), undefined);
      await box.getByRole('button', { name: 'Approve' }).click();
      await box.getByText('approved', { exact: true }).waitFor();
      await box.getByRole('button', { name: 'Open SSH connection to pending-box' }).waitFor();
    });

    await step('ssh states then prompt', async () => {
      await card(agentName)
        .getByRole('button', { name: `Open SSH connection to ${agentName}` })
        .click();
      await panel.waitFor();
      await panel.locator('.panel-header .badge', { hasText: 'running' }).waitFor();
      await panel.getByText('Connection details').click();
      for (const state of ['requested', 'starting', 'running']) {
        await panel.locator(`.progress .step[data-state="${state}"]`).waitFor();
      }
      await panel.locator('.progress .step[data-state="requested"] .step-took').waitFor();
      await waitForTerminalLine(page, /[$#]$/);
    });

    await step('echo in the terminal', async () => {
      await typeCommand(`echo ${marker}`);
      await waitForTerminalLine(page, new RegExp(`^${marker}$`));
    });

    await step('resize follows the window', async () => {
      await typeCommand('stty size');
      const before = (await waitForTerminalLine(page, /^\d+ \d+$/)).split(' ').map(Number);
      const rowCount = () => page.locator('.ssh-panel .xterm-rows > div').count();
      assert.equal(await rowCount(), before[0], 'the terminal shows as many rows as stty reports');
      await typeCommand('clear');
      await waitForTerminalLine(page, /^\d+ \d+$/, { absent: true });
      await page.setViewportSize({ width: 1000, height: 650 });
      await page.waitForFunction(
        (rows) => document.querySelectorAll('.ssh-panel .xterm-rows > div').length !== rows,
        before[0],
      );
      await typeCommand('stty size');
      const after = (await waitForTerminalLine(page, /^\d+ \d+$/)).split(' ').map(Number);
      assert.equal(after[0], await rowCount(), 'stty reports the rows the terminal shows');
      assert.ok(after[0] < before[0], `fewer rows after shrinking: ${before} → ${after}`);
      assert.ok(after[1] < before[1], `fewer columns after narrowing: ${before} → ${after}`);
      await typeCommand(`echo ${marker}`);
      await waitForTerminalLine(page, new RegExp(`^${marker}$`));
    });

    await step('close and reopen the panel', async () => {
      await panel.getByRole('button', { name: 'Close panel (the SSH connection stays open)' }).click();
      await panel.waitFor({ state: 'detached' });
      const agent = card(agentName);
      await agent.getByRole('button', { name: /Your SSH session running on / }).waitFor();
      await agent.getByRole('button', { name: `Open SSH connection to ${agentName}` }).click();
      await waitForTerminalLine(page, new RegExp(`^${marker}$`));
    });

    await step('reload and reattach', async () => {
      await page.reload();
      await waitForTerminalLine(page, new RegExp(`^${marker}$`));
      const again = `again-${Math.floor(Math.random() * 1e9)}`;
      await typeCommand(`echo ${again}`);
      await waitForTerminalLine(page, new RegExp(`^${again}$`));
    });

    await step('notifications live from the cli', async () => {
      await page.getByRole('button', { name: /^Notifications/ }).click();
      const sidebar = page.getByRole('dialog', { name: 'Notifications' });
      await sidebar.waitFor();
      const cliHome = await tempDir('cli');
      const login = start('cli login', postern, ['login', '--server', url, '--user', 'admin', '--password-stdin'], {
        env: { POSTERN_HOME: cliHome },
        input: `${password}\n`,
      });
      assert.equal((await waitForExit(login)).code, 0, transcript(login));
      const ssh = start('cli ssh', postern, ['ssh', 'pending-box', '--', 'echo', 'from-cli'], {
        env: { POSTERN_HOME: cliHome },
      });
      for (const state of ['requested', 'starting', 'running']) {
        await sidebar
          .locator('.notification[data-kind="session.state"]', { hasText: `SSH ${state}` })
          .filter({ hasText: 'pending-box' })
          .first()
          .waitFor();
      }
      await waitForOutput(ssh, /from-cli/);
      assert.equal((await waitForExit(ssh)).code, 0, transcript(ssh));
      await page.getByRole('button', { name: /^Notifications, \d+ unread$/ }).waitFor();
      await sidebar.getByRole('button', { name: 'Mark all as read' }).click();
      await page.getByRole('button', { name: 'Notifications', exact: true }).waitFor();
    });

    await step('close the ssh connection', async () => {
      await page.getByRole('button', { name: 'Close notifications' }).click();
      await panel.getByRole('button', { name: 'Close SSH connection' }).click();
      await panel.locator('.panel-header .badge', { hasText: 'stopped' }).waitFor();
      await panel.locator('.progress .step[data-state="stopping"]').waitFor();
      await panel.locator('.progress .step[data-state="stopped"]').waitFor();
      // The last screen stays, read-only and dimmed, until the panel closes.
      await panel.locator('.terminal-view.is-ended').waitFor();
      await waitForTerminalLine(page, new RegExp(`^${marker}$`));
      assert.notEqual(await page.evaluate(() => document.activeElement?.tagName), 'BODY', 'focus moved on, not lost');
      await card(agentName)
        .getByRole('button', { name: /Your SSH session/ })
        .waitFor({ state: 'detached' });
      await panel.getByRole('button', { name: 'Close panel (the SSH connection stays open)' }).click();
      await panel.waitFor({ state: 'detached' });
    });

    await step('offline agent: ssh icon disabled, with why', async () => {
      assert.equal(pending.exited, null, `the pending agent kept running\n${transcript(pending)}`);
      process.kill(-pending.child.pid, 'SIGTERM');
      await waitForExit(pending);
      const box = card('pending-box');
      await box.getByText('Offline', { exact: true }).waitFor();
      const ssh = box.getByRole('button', { name: 'Open SSH connection to pending-box' });
      assert.equal(await ssh.getAttribute('aria-disabled'), 'true');
      await box.getByText('SSH needs pending-box online').waitFor();
      await box.getByText(/^\d+ s ago$/).waitFor();
      await box.getByText(/Check that the device is on/).waitFor();
    });

    assert.ok(!failed, 'every step passed');
    assert.deepEqual(browserErrors, [], 'the browser logged no error');
  } finally {
    await browser?.close().catch(() => undefined);
    await stopAll();
    await Promise.all(dirs.map((dir) => rm(dir, { recursive: true, force: true })));
  }
});
