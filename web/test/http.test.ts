// Errors as people read them: the server's storage failures say what happened, that nothing
// was saved, and what to do.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { errorFrom } from '../src/api/http';

const answer = (status: number, body: unknown, contentType = 'application/json') =>
  new Response(typeof body === 'string' ? body : JSON.stringify(body), {
    status,
    headers: { 'content-type': contentType },
  });

test("a full disk (507 storage_full) is a clear message, not the server's terse words", async () => {
  const error = await errorFrom(answer(507, { error: 'storage_full', message: "the server's storage is full" }));
  assert.equal(error.status, 507);
  assert.equal(error.code, 'storage_full');
  assert.match(error.message, /disk is full/);
  assert.match(error.message, /not saved/);
  assert.match(error.message, /free space/);
});

test('a 507 from a proxy without the API body reads the same', async () => {
  const error = await errorFrom(answer(507, '<html>Insufficient Storage</html>', 'text/html'));
  assert.equal(error.code, 'http_507');
  assert.match(error.message, /disk is full/);
});

test('unavailable storage says to try again; other errors keep the server message', async () => {
  const unavailable = await errorFrom(
    answer(503, { error: 'storage_unavailable', message: "the server's storage is unavailable; try again later" }),
  );
  assert.match(unavailable.message, /Try again in a moment/);
  const conflict = await errorFrom(answer(409, { error: 'conflict', message: 'user "ann" already exists' }));
  assert.equal(conflict.message, 'user "ann" already exists');
});
