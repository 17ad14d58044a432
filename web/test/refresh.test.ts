// The one fetch many causes share: requests made together run it once, a request made while
// it runs runs it again after, and a failure is retried until it succeeds.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ApiError } from '../src/api/http';
import { Refresh } from '../src/state/refresh';

test('a thousand requests run one fetch', async () => {
  let runs = 0;
  let done!: () => void;
  const finished = new Promise<void>((resolve) => (done = resolve));
  const refresh = new Refresh(10, async () => {
    runs += 1;
    done();
  });
  for (let i = 0; i < 1000; i++) refresh.request();
  await finished;
  assert.equal(runs, 1);
});

test('a request during a run runs it once more afterwards', async () => {
  const seen: number[] = [];
  let release!: () => void;
  let started!: () => void;
  let second!: () => void;
  const blocked = new Promise<void>((resolve) => (release = resolve));
  const firstStarted = new Promise<void>((resolve) => (started = resolve));
  const ranTwice = new Promise<void>((resolve) => (second = resolve));
  const refresh = new Refresh(0, async () => {
    seen.push(seen.length);
    if (seen.length === 1) {
      started();
      await blocked;
    } else second();
  });
  refresh.request();
  await firstStarted;
  refresh.request();
  refresh.request();
  release();
  await ranTwice;
  assert.equal(seen.length, 2);
});

test('failures are retried until the fetch succeeds; a logout stops them', async () => {
  let attempts = 0;
  let done!: () => void;
  const succeeded = new Promise<void>((resolve) => (done = resolve));
  const refresh = new Refresh(0, async () => {
    attempts += 1;
    if (attempts < 3) throw new ApiError(0, 'network', 'refused');
    done();
  });
  refresh.request();
  await succeeded;
  assert.equal(attempts, 3);

  let refused!: () => void;
  const ran = new Promise<void>((resolve) => (refused = resolve));
  const loggedOut = new Refresh(0, async () => {
    refused();
    throw new ApiError(401, 'unauthorized', 'expired');
  });
  loggedOut.request();
  await ran;
  await new Promise((resolve) => setImmediate(resolve)); // the rejection is handled
  assert.ok(loggedOut.idle, 'a 401 is not retried: nothing is planned');
});
