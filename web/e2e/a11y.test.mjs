// Everyone can use the app: axe-core finds no violation on any page or panel, in the light
// and the dark theme; and a keyboard alone goes from the login to a shell and back to "Close
// SSH connection", never trapped in the terminal, with focus restored sensibly each time.
//
//   node --test web/e2e/a11y.test.mjs        (POSTERN_BIN: the postern binary)

import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { freePort, launchChromium, start, stopAll, transcript, waitForOutput } from './harness.mjs';

const repoRoot = fileURLToPath(new URL('../../', import.meta.url));
const postern = process.env.POSTERN_BIN ? resolve(process.env.POSTERN_BIN) : join(repoRoot, 'target/debug/postern');
const axeSource = createRequire(import.meta.url).resolve('axe-core/axe.min.js');
const WAIT_MS = 20_000;

/** Every rule axe runs by default (WCAG A/AA and best practices), plus label-in-name. */
async function violations(page) {
  if (!(await page.evaluate(() => 'axe' in window))) await page.addScriptTag({ path: axeSource });
  return page.evaluate(async () => {
    const result = await window.axe.run(document, { rules: { 'label-content-name-mismatch': { enabled: true } } });
    return result.violations.map((v) => ({
      id: v.id,
      help: v.help,
      nodes: v.nodes.slice(0, 5).map((n) => `${n.target.join(' ')}: ${n.failureSummary?.split('\n')[1] ?? ''}`),
    }));
  });
}

async function startQuickstart(dir) {
  const [http, gateway] = [await freePort(), await freePort()];
  const quickstart = start('quickstart', postern, [
    'quickstart',
    '--data-dir',
    dir,
    '--http',
    `127.0.0.1:${http}`,
    '--agent-listen',
    `127.0.0.1:${gateway}`,
  ]);
  await waitForOutput(quickstart, /Ctrl-C stops everything\./, 60_000);
  const url = quickstart.stdout.match(/^\s*URL:\s+(\S+)/m)?.[1];
  const password = quickstart.stdout.match(/^\s*password:\s+(\S+)/m)?.[1];
  const agentName = quickstart.stdout.match(/^\s*agent:\s+(\S+) \(did:key:\S+\)/m)?.[1];
  assert.ok(url && password && agentName, `cannot read the quickstart banner\n${transcript(quickstart)}`);
  return { url, password, agentName };
}

/** What has focus, as a person would name it. */
function focused(page) {
  return page.evaluate(() => {
    const el = document.activeElement;
    if (!el || el === document.body) return 'body';
    const label = el.labels?.[0]?.querySelector('span')?.textContent ?? el.labels?.[0]?.textContent;
    return el.getAttribute('aria-label') || label?.trim() || el.textContent?.trim() || el.tagName.toLowerCase();
  });
}

/** Presses Tab (or Shift+Tab) until `wanted` has focus; fails after `limit` presses. */
async function tabTo(page, wanted, { back = false, limit = 60 } = {}) {
  for (let i = 0; i < limit; i++) {
    const name = await focused(page);
    if (typeof wanted === 'string' ? name === wanted : wanted.test(name)) return;
    await page.keyboard.press(back ? 'Shift+Tab' : 'Tab');
  }
  throw new Error(`${wanted} never got focus (last: ${await focused(page)})`);
}

async function terminalLine(page, pattern) {
  await page.waitForFunction(
    (source) =>
      [...(document.querySelector('.ssh-panel .xterm-rows')?.children ?? [])].some((row) =>
        new RegExp(source).test((row.textContent ?? '').replace(/\u00a0/g, ' ').trimEnd()),
      ),
    pattern.source,
    { timeout: WAIT_MS },
  );
}

test('accessibility: axe on every page and panel, light and dark; keyboard only from login to a shell and back', { timeout: 240_000 }, async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'postern-a11y-'));
  let browser;
  try {
    const { url, password, agentName } = await startQuickstart(dir);
    browser = await launchChromium();
    // axe is injected as a script: the app's CSP (rightly) refuses that, so only this test
    // context bypasses it.
    const context = await browser.newContext({ viewport: { width: 1400, height: 900 }, bypassCSP: true });
    context.setDefaultTimeout(WAIT_MS);
    const page = await context.newPage();
    const errors = [];
    page.on('pageerror', (error) => errors.push(error.message));

    await t.test('keyboard only: login, a shell, out of the terminal, close the connection', async () => {
      await page.goto(url);
      await tabTo(page, 'User name');
      await page.keyboard.type('admin');
      await page.keyboard.press('Tab');
      await page.keyboard.type(password);
      await page.keyboard.press('Enter');
      await page.getByRole('heading', { name: 'Agents', level: 1 }).waitFor();
      await page.locator('article.agent-card[data-liveness="online"]').first().waitFor();

      const sshButton = `Open SSH connection to ${agentName}`;
      await tabTo(page, sshButton);
      await page.keyboard.press('Enter');
      await page.locator('.ssh-panel .panel-header .badge', { hasText: 'running' }).waitFor();
      await terminalLine(page, /[$#]$/);
      // The terminal takes focus; what is typed goes to the shell.
      await page.waitForFunction(() => document.activeElement?.classList.contains('xterm-helper-textarea'));
      await page.keyboard.type('echo kb-$((40+2))');
      await page.keyboard.press('Enter');
      await terminalLine(page, /^kb-42$/);

      // Tab stays in the shell (completion); the documented key leaves.
      await page.locator('.ssh-panel').getByText('Ctrl+Shift+E').waitFor();
      await page.keyboard.press('Tab');
      assert.ok(await page.evaluate(() => document.activeElement?.classList.contains('xterm-helper-textarea')));
      await page.keyboard.press('Control+Shift+E');
      assert.equal(await focused(page), 'Close SSH connection');

      // The font buttons give focus back to the terminal.
      // Shift+Tab would enter the terminal again (Tab is the shell's there): go round forward.
      await tabTo(page, 'A+ larger font', { limit: 80 });
      await page.keyboard.press('Enter');
      assert.ok(
        await page.evaluate(() => document.activeElement?.classList.contains('xterm-helper-textarea')),
        'after A+ typing goes to the shell',
      );
      await page.keyboard.type('echo font-ok');
      await page.keyboard.press('Enter');
      await terminalLine(page, /^font-ok$/);
      await page.keyboard.press('Control+Shift+E');

      await page.keyboard.press('Enter'); // Close SSH connection
      await page.locator('.ssh-panel .panel-header .badge', { hasText: 'stopped' }).waitFor();
      await page.locator('.ssh-panel .terminal-view.is-ended').waitFor();
      await page
        .waitForFunction(() => document.activeElement?.textContent?.trim() === 'Open a new SSH connection')
        .catch(async (e) => {
          throw new Error(`focus is on ${await focused(page)}: ${e}`);
        });

      await tabTo(page, 'Close panel (the SSH connection stays open)', { back: true });
      await page.keyboard.press('Enter');
      await page.locator('.ssh-panel').waitFor({ state: 'detached' });
      // Focus returns to what opened the panel.
      await page.waitForFunction((name) => document.activeElement?.getAttribute('aria-label') === name, sshButton);

      await tabTo(page, /^Notifications/, { back: true });
      await page.keyboard.press('Enter');
      await page.getByRole('dialog', { name: 'Notifications' }).waitFor();
      await page.keyboard.press('Escape');
      await page.getByRole('dialog', { name: 'Notifications' }).waitFor({ state: 'detached' });
      // Focus returns to the bell.
      await page.waitForFunction(() => document.activeElement?.getAttribute('aria-label')?.startsWith('Notifications'));
    });

    const audit = async (what) => {
      for (const scheme of ['light', 'dark']) {
        await page.emulateMedia({ colorScheme: scheme });
        const found = await violations(page);
        assert.deepEqual(found, [], `${what} (${scheme}): ${JSON.stringify(found, null, 2)}`);
      }
    };

    await t.test('axe: agents page, SSH panel running and ended, notifications', async () => {
      await audit('agents page');
      await page.getByRole('button', { name: `Open SSH connection to ${agentName}` }).click();
      await page.locator('.ssh-panel .panel-header .badge', { hasText: 'running' }).waitFor();
      await terminalLine(page, /[$#]$/);
      await audit('SSH panel');
      await page.getByRole('button', { name: 'Close SSH connection' }).click();
      await page.locator('.ssh-panel .terminal-view.is-ended').waitFor();
      await audit('SSH panel after the connection closed');
      await page.getByRole('button', { name: 'Close panel (the SSH connection stays open)' }).click();
      await page.getByRole('button', { name: /^Notifications/ }).click();
      await page.getByRole('dialog', { name: 'Notifications' }).locator('.notification').first().waitFor();
      await audit('notifications');
      await page.keyboard.press('Escape');
    });

    await t.test('axe: sessions and admin pages', async () => {
      await page.getByRole('link', { name: 'Sessions' }).click();
      await page.getByRole('heading', { name: 'Sessions', level: 1 }).waitFor();
      await page.locator('table tbody tr').first().waitFor();
      await audit('sessions page');
      await page.getByRole('link', { name: 'Admin' }).click();
      await page.getByRole('heading', { name: 'Admin', level: 1 }).waitFor();
      await audit('admin page');
    });

    await t.test('the theme button overrides the system', async () => {
      await page.emulateMedia({ colorScheme: 'light' });
      const background = () => page.evaluate(() => getComputedStyle(document.body).backgroundColor);
      const light = await background();
      await page.getByRole('button', { name: /^Colour theme: as the system/ }).click(); // → light
      assert.equal(await background(), light);
      await page.getByRole('button', { name: /^Colour theme: light/ }).click(); // → dark
      const dark = await background();
      assert.notEqual(dark, light);
      await audit('admin page, dark chosen');
      await page.emulateMedia({ colorScheme: 'light' });
      assert.equal(await background(), dark, 'the choice wins over the system');
      await page.reload();
      await page.getByRole('heading', { name: 'Admin', level: 1 }).waitFor();
      assert.equal(await background(), dark, 'the choice is remembered');
      await page.getByRole('button', { name: /^Colour theme: dark/ }).click(); // → system
      assert.equal(await background(), light);
    });

    await t.test('axe: login page', async () => {
      await page.getByRole('button', { name: 'Log out' }).click();
      await page.getByLabel('User name').waitFor();
      await audit('login page');
    });

    assert.deepEqual(errors, [], 'no page error');
  } finally {
    await browser?.close().catch(() => undefined);
    await stopAll();
    await rm(dir, { recursive: true, force: true });
  }
});
