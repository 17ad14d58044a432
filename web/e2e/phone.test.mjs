// The app on a phone (390×844, touch): the header stays reachable during SSH, pages do not
// overflow sideways, every target is at least 44 px, the terminal has a key bar (Esc, Ctrl,
// Tab, arrows), can be maximised and opened in a tab of its own. Screenshots of each screen
// go to test-output/web/phone-*.png.
//
//   node --test web/e2e/phone.test.mjs        (POSTERN_BIN: the postern binary)

import assert from 'node:assert/strict';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { freePort, launchChromium, start, stopAll, transcript, waitForOutput } from './harness.mjs';

const repoRoot = fileURLToPath(new URL('../../', import.meta.url));
const postern = process.env.POSTERN_BIN ? resolve(process.env.POSTERN_BIN) : join(repoRoot, 'target/debug/postern');
const screenshots = join(repoRoot, 'test-output/web');
const WAIT_MS = 20_000;

/** Interactive elements on screen smaller than 44×44 px, and whether the page scrolls sideways. */
function layoutProblems(page) {
  return page.evaluate(() => {
    const small = [];
    for (const el of document.querySelectorAll('button, a[href], select, input, summary')) {
      // A checkbox's target is its label.
      const target = el.type === 'checkbox' ? (el.closest('label') ?? el) : el;
      const box = target.getBoundingClientRect();
      const style = getComputedStyle(el);
      const hidden = box.width <= 1 || box.height <= 1 || style.visibility === 'hidden';
      const offscreen = box.bottom < 0 || box.top > innerHeight || box.right < 0 || box.left > innerWidth;
      if (hidden || offscreen || el.closest('.xterm')) continue;
      if (box.height < 44 || box.width < 44) {
        small.push(`${el.tagName.toLowerCase()} "${(el.getAttribute('aria-label') ?? el.textContent ?? '').trim().slice(0, 40)}" ${Math.round(box.width)}×${Math.round(box.height)}`);
      }
    }
    // The phone is 390 px wide: anything wider makes the browser widen the whole layout.
    const width = 390;
    const wide = [...document.querySelectorAll('body *')]
      // Inside a scroll box (a wide table) is fine: the box scrolls, not the page.
      .filter((el) => el.getBoundingClientRect().right > width + 1 && !el.closest('.xterm') && !el.parentElement?.closest('.table-wrap'))
      .slice(0, 5)
      .map((el) => `${el.tagName.toLowerCase()}.${el.className}`);
    const sideways =
      document.documentElement.scrollWidth > width || innerWidth > width
        ? { scrollWidth: document.documentElement.scrollWidth, innerWidth, wide }
        : false;
    // Row actions must be in view, not cut off at the right edge.
    const cut = [...document.querySelectorAll('.table td:last-child')].filter(
      (td) => td.getBoundingClientRect().right > innerWidth + 1,
    ).length;
    return { small, sideways, cut };
  });
}

async function terminalLine(page, pattern) {
  await page.waitForFunction(
    (source) =>
      [...(document.querySelector('.xterm-rows')?.children ?? [])].some((row) =>
        new RegExp(source).test((row.textContent ?? '').replace(/\u00a0/g, ' ').trimEnd()),
      ),
    pattern.source,
    { timeout: WAIT_MS },
  );
}

test('the app on a phone', { timeout: 180_000 }, async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'postern-phone-'));
  await mkdir(screenshots, { recursive: true });
  let browser;
  try {
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
    assert.ok(url && password && agentName, transcript(quickstart));

    browser = await launchChromium();
    const context = await browser.newContext({
      viewport: { width: 390, height: 844 },
      isMobile: true,
      hasTouch: true,
      deviceScaleFactor: 1,
    });
    context.setDefaultTimeout(WAIT_MS);
    const page = await context.newPage();
    const errors = [];
    page.on('pageerror', (error) => errors.push(error.message));
    const shot = (name) => page.screenshot({ path: join(screenshots, `phone-${name}.png`) });
    const checkLayout = async (what) => {
      const { small, sideways, cut } = await layoutProblems(page);
      assert.deepEqual(small, [], `${what}: targets under 44 px`);
      assert.equal(sideways, false, `${what}: the page scrolls sideways`);
      assert.equal(cut, 0, `${what}: row actions cut off`);
    };

    await t.test('login and agents', async () => {
      await page.goto(url);
      await shot('1-login');
      await checkLayout('login');
      await page.getByLabel('User name').fill('admin');
      await page.getByLabel('Password').fill(password);
      await page.getByRole('button', { name: 'Log in' }).tap();
      await page.locator('article.agent-card[data-liveness="online"]').first().waitFor();
      await shot('2-agents');
      await checkLayout('agents');
    });

    await t.test('ssh: header reachable, key bar, maximise', async () => {
      await page.getByRole('button', { name: `Open SSH connection to ${agentName}` }).tap();
      await page.locator('.ssh-panel .panel-header .badge', { hasText: 'running' }).waitFor();
      await terminalLine(page, /[$#]$/);
      await shot('3-ssh');
      await checkLayout('ssh panel');
      // The bell is on top, not under the panel.
      const bell = page.getByRole('button', { name: /^Notifications/ });
      const onTop = await bell.evaluate((el) => {
        const box = el.getBoundingClientRect();
        return el.contains(document.elementFromPoint(box.x + box.width / 2, box.y + box.height / 2));
      });
      assert.ok(onTop, 'the bell is reachable during SSH');

      // The key bar's Ctrl applies to the next key: Ctrl then c interrupts the shell.
      const bar = page.getByRole('toolbar', { name: 'Terminal keys' });
      await bar.waitFor();
      await page.keyboard.type('sleep 600');
      await page.keyboard.press('Enter');
      const ctrl = bar.getByRole('button', { name: 'Ctrl' });
      await ctrl.tap();
      assert.equal(await ctrl.getAttribute('aria-pressed'), 'true');
      await page.keyboard.type('c');
      await terminalLine(page, /\^C$/);
      assert.equal(await ctrl.getAttribute('aria-pressed'), 'false', 'Ctrl applies to one key');
      await page.keyboard.type('echo phone-$((6*7))');
      await bar.getByRole('button', { name: 'Left arrow' }).tap();
      await bar.getByRole('button', { name: 'Left arrow' }).tap();
      await page.keyboard.type('0');
      await page.keyboard.press('Enter');
      // Two steps left, inside "))": $((6*70)).
      await terminalLine(page, /^phone-420$/);

      await page.getByRole('button', { name: 'Maximise the terminal' }).tap();
      await page.locator('.ssh-panel.is-maximised').waitFor();
      await shot('4-ssh-maximised');
      await page.getByRole('button', { name: 'Restore the panel' }).tap();

      await bell.tap();
      await page.getByRole('dialog', { name: 'Notifications' }).waitFor();
      await shot('5-notifications');
      await page.getByRole('button', { name: 'Close notifications' }).tap();
    });

    await t.test('the terminal in a tab of its own', async () => {
      const [tab] = await Promise.all([
        context.waitForEvent('page'),
        page.getByRole('link', { name: 'Open the terminal in a new tab' }).tap(),
      ]);
      await tab.getByRole('heading', { name: `SSH · ${agentName}` }).waitFor();
      await terminalLine(tab, /[$#]$/);
      await tab.locator('.xterm-screen').tap();
      await tab.keyboard.type('echo own-tab');
      await tab.keyboard.press('Enter');
      await terminalLine(tab, /^own-tab$/);
      await tab.screenshot({ path: join(screenshots, 'phone-6-terminal-tab.png') });
      await tab.close();
      await page.locator('.ssh-panel').waitFor({ state: 'detached' });
    });

    await t.test('sessions and admin tables fit', async () => {
      await page.getByRole('link', { name: 'Sessions' }).tap();
      await page.locator('table tbody tr').first().waitFor();
      await shot('7-sessions');
      await checkLayout('sessions');
      await page.getByRole('link', { name: 'Admin' }).tap();
      await page.getByRole('heading', { name: 'Admin', level: 1 }).waitFor();
      await page.locator('table tbody tr').first().waitFor();
      await shot('8-admin');
      await checkLayout('admin');
    });

    assert.deepEqual(errors, [], 'no page error');
  } finally {
    await browser?.close().catch(() => undefined);
    await stopAll();
    await rm(dir, { recursive: true, force: true });
  }
});
