// A full disk in the browser: the server's data directory sits on a small tmpfs that is then
// filled; creating an enrollment token in the app answers 507 `storage_full`, and the page
// says so in words (the disk is full, nothing was saved, what to do). Once space is freed, the
// same click works. Mounting needs root: elsewhere the test is skipped with the reason.
//
//   POSTERN_BIN=target/debug/postern node --test web/e2e/storage.test.mjs

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdir, mkdtemp, open, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { apiClient, freePort, launchChromium, start, stopAll, transcript, waitForOutput } from './harness.mjs';

const repoRoot = fileURLToPath(new URL('../../', import.meta.url));
const postern = process.env.POSTERN_BIN ? resolve(process.env.POSTERN_BIN) : join(repoRoot, 'target/debug/postern');

/** Mounts an 8 MiB tmpfs at `dir`; the reason it cannot, or null. */
function mountSmallDisk(dir) {
  if (process.getuid?.() !== 0) return 'mounting a small tmpfs needs root';
  const mounted = spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=8m', 'tmpfs', dir], { encoding: 'utf8' });
  if (mounted.error) return `cannot run mount: ${mounted.error.message}`;
  if (mounted.status !== 0) return `cannot mount a tmpfs: ${mounted.stderr.trim()}`;
  return null;
}

/** Writes `path` until the disk says it is full. */
async function fill(path) {
  const file = await open(path, 'w');
  const chunk = Buffer.alloc(64 * 1024, 0xa5);
  try {
    for (let size = chunk.length; size >= 1; ) {
      try {
        await file.write(chunk.subarray(0, size));
      } catch (error) {
        if (error.code !== 'ENOSPC') throw error;
        size = Math.floor(size / 2); // what is left is less than this: take it too
      }
    }
  } finally {
    await file.close();
  }
}

test('a full disk shows a clear message in the app, and the app works again once space is freed', async (t) => {
  const base = await mkdtemp(join(tmpdir(), 'postern-storage-'));
  const disk = join(base, 'disk');
  await mkdir(disk);
  const why = mountSmallDisk(disk);
  if (why) {
    t.skip(why);
    await rm(base, { recursive: true, force: true });
    return;
  }
  let browser;
  try {
    const [http, gateway] = [await freePort(), await freePort()];
    const data = join(disk, 'server');
    const server = start('server', postern, [
      'server', '--data-dir', data, '--http', `127.0.0.1:${http}`, '--agent-listen', `127.0.0.1:${gateway}`,
    ]);
    await waitForOutput(server, /agent gateway:/);
    const password = server.stdout.match(/^\s*password:\s+(\S+)/m)?.[1];
    assert.ok(password, `no initial password\n${transcript(server)}`);
    const url = `http://127.0.0.1:${http}`;
    // Logged in before the disk fills: a login is a write too.
    const api = await apiClient(url, 'admin', password);
    browser = await launchChromium();
    const page = await (await browser.newContext({ viewport: { width: 1400, height: 900 } })).newPage();
    await page.goto(url);
    await page.getByLabel('User name').fill('admin');
    await page.getByLabel('Password').fill(password);
    await page.getByRole('button', { name: 'Log in' }).click();
    await page.getByRole('link', { name: 'Admin' }).click();
    await page.getByRole('heading', { name: 'Admin', level: 1 }).waitFor();

    const filler = join(disk, 'filler');
    await fill(filler);
    // SQLite writes into space it already holds for as long as it can; one write soon needs
    // more. The API's own answer is what is waited for.
    let refused = null;
    for (let i = 0; i < 5000 && !refused; i += 1) {
      try {
        await api.post('/tokens', { ttl_secs: 60, uses: 1 });
      } catch (error) {
        refused = error.message;
      }
    }
    assert.match(refused ?? 'every write succeeded on a full disk', /: 507 .*storage_full/);

    const form = page.getByRole('form', { name: 'Create an enrollment token' });
    await form.getByRole('button', { name: 'Create token' }).click();
    const alert = form.getByRole('alert');
    await alert.waitFor();
    const message = await alert.innerText();
    assert.match(message, /disk is full/, message);
    assert.match(message, /not saved/, message);
    assert.match(message, /free space/, message);

    await rm(filler);
    await form.getByRole('button', { name: 'Create token' }).click();
    await page.getByText('Copy this token now:').waitFor();
    assert.equal(await form.getByRole('alert').count(), 0, 'the error went with the retry');
  } finally {
    await browser?.close().catch(() => undefined);
    await stopAll();
    spawnSync('umount', ['-l', disk]);
    await rm(base, { recursive: true, force: true });
  }
});
