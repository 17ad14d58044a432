// The page's input across lost servers and sockets: sent again exactly from the shell's own
// count, never twice, and what cannot be matched is counted, not dropped silently.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { KEPT_INPUT_MAX, PENDING_INPUT_MAX, PendingInput } from '../src/terminal/pendingInput';

const bytes = (text: string) => new TextEncoder().encode(text);
const text = (chunks: Uint8Array[]) => chunks.map((c) => new TextDecoder().decode(c)).join('');

/** A page attached at `input`, having sent `frames`, the first `acked` of them acknowledged. */
function typed(input: number, frames: string[], acked: number): PendingInput {
  const pending = new PendingInput();
  pending.attached(input);
  let end = input;
  frames.forEach((frame, i) => {
    pending.sent(bytes(frame));
    if (i < acked) {
      end += bytes(frame).byteLength;
      pending.acknowledged(end);
    }
  });
  return pending;
}

test('a killed server: what it had not passed on is sent again, once, then what was held', () => {
  // ab (10..12) and cd (12..14) acknowledged, ef and gh in flight when the server died.
  const pending = typed(10, ['ab', 'cd', 'ef', 'gh'], 2);
  assert.ok(pending.hold(bytes('held')));
  // The shell took up to 11: the dying server lost the rest of what it had.
  const again = pending.attached(11);
  assert.equal(text(again.send), 'bcdefghheld');
  assert.equal(again.unconfirmed, 0);
  // Those went out on the new socket; it dies too, before any acknowledgement, and the
  // shell took "bcd" of them meanwhile (counted, as ours: nobody else typed).
  const third = pending.attached(14);
  assert.equal(text(third.send), 'efghheld');
  assert.equal(third.unconfirmed, 0);
});

test('a dropped socket to a live server: what it acknowledged or took is not sent again', () => {
  // The server took all four; the acknowledgements of the last two were lost with the socket.
  const pending = typed(0, ['ab', 'cd', 'ef', 'gh'], 2);
  const again = pending.attached(8);
  assert.deepEqual(again, { send: [], unconfirmed: 0 });
  // It took one and a half of the unacknowledged frames: the rest goes again.
  const half = typed(0, ['ab', 'cd', 'ef', 'gh'], 2);
  assert.equal(text(half.attached(7).send), 'h');
});

test('a shell that is behind what a later server acknowledged gets those bytes again', () => {
  const pending = typed(0, ['ab', 'cd'], 2);
  // A socket blip: the live server had both.
  assert.deepEqual(pending.attached(4).send, []);
  // Then that server is killed before passing them on: the next says the shell has 1.
  assert.equal(text(pending.attached(1).send), 'bcd');
});

test('another tab typed too: our unacknowledged bytes are counted, not repeated or dropped silently', () => {
  const pending = typed(0, ['ab', 'cd', 'ef'], 1);
  // The shell took 10 bytes; at most 2 + 4 of them can be ours.
  const again = pending.attached(10);
  assert.deepEqual(again.send, []);
  assert.equal(again.unconfirmed, 4);
  // An idle tab sees another's typing without any alarm.
  const idle = typed(0, ['ab'], 1);
  assert.deepEqual(idle.attached(50), { send: [], unconfirmed: 0 });
});

test('acknowledged input beyond what is kept: a shell behind it is reported, not guessed', () => {
  const pending = typed(0, ['x'.repeat(KEPT_INPUT_MAX), 'yz'], 2);
  // The oldest frame was dropped to stay within bounds; the shell took only 100 bytes of it.
  const again = pending.attached(100);
  assert.equal(text(again.send), 'yz');
  assert.equal(again.unconfirmed, KEPT_INPUT_MAX - 100);
});

test('held and in-flight input is bounded: past it, input is refused', () => {
  const pending = new PendingInput();
  assert.ok(pending.hold(new Uint8Array(PENDING_INPUT_MAX - 1)));
  assert.ok(!pending.hold(bytes('ab')));
  assert.ok(pending.fits(1));
  const { send } = pending.attached(0);
  assert.equal(send.length, 1);
  // Sent but not acknowledged counts too, until the server acknowledges it.
  assert.ok(!pending.fits(2));
  pending.acknowledged(PENDING_INPUT_MAX - 1);
  assert.ok(pending.fits(PENDING_INPUT_MAX));
});

test('another shell: what was in flight to the old one is counted; held input goes to the new one', () => {
  const pending = typed(0, ['ab', 'cd'], 1);
  pending.hold(bytes('ls\r'));
  assert.equal(pending.otherShell(), 2);
  const again = pending.attached(0);
  assert.equal(text(again.send), 'ls\r');
  pending.clear();
  assert.deepEqual(pending.attached(0), { send: [], unconfirmed: 0 });
});
