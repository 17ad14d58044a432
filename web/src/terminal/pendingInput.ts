// What the page typed that the shell may not have taken yet, so that none of it is lost or
// repeated when the server carrying the terminal dies (kill -9) or the socket drops.
//
// The shell numbers its input in bytes from its start; the server tells us that count on
// each socket's `attached` frame, and acknowledges each input frame we send with where it
// ends in that numbering (`input` frames). A server that dies loses what it had not passed
// on yet; the next socket's `attached` says how much the shell took, and we send again
// exactly what lies past it — then what was typed while no socket was attached.
//
// Frames not yet acknowledged when a socket drops have no known place: we take them to
// follow our last known one (true unless another tab typed into the same shell in that
// instant). When the shell took more than they could account for, another tab typed and
// we cannot tell whether ours arrived: they are not sent again (no repeat), and counted as
// unconfirmed, for the page to say. The same for anything older than what we keep.

/** Typed while not attached, plus sent but not yet acknowledged: past this, input is refused. */
export const PENDING_INPUT_MAX = 64 * 1024;
/** Acknowledged input kept to send again if a server dies before passing it on: far more
 * than one round trip of typing or a paste, which is what a dying server can lose. */
export const KEPT_INPUT_MAX = 64 * 1024;

interface Frame {
  bytes: Uint8Array;
  /** Where it ends in the shell's input, once a server acknowledged it. */
  end?: number;
}

export interface Reattached {
  /** To send now, in order: what the shell did not take, then what was held. */
  send: Uint8Array[];
  /** Bytes that may not have reached the shell and are not sent again (see above). */
  unconfirmed: number;
}

export class PendingInput {
  /** Acknowledged frames, oldest first, in the shell's order. */
  private kept: Frame[] = [];
  private keptBytes = 0;
  /** Sent on the current socket, not yet acknowledged, oldest first. */
  private unacked: Uint8Array[] = [];
  private unackedBytes = 0;
  /** Typed while not attached. */
  private held: Uint8Array[] = [];
  private heldBytes = 0;
  /** Where our next frame on the current socket starts at the earliest. */
  private base = 0;
  /** The end of the newest acknowledged frame dropped to stay within `KEPT_INPUT_MAX`. */
  private floor = 0;

  /** Room for `bytes` more in flight or held: false means refuse them (and say so). */
  fits(bytes: number): boolean {
    return this.unackedBytes + this.heldBytes + bytes <= PENDING_INPUT_MAX;
  }

  /** Typed while not attached: sent by the next `attached`. False when refused. */
  hold(bytes: Uint8Array): boolean {
    if (!this.fits(bytes.byteLength)) return false;
    this.held.push(bytes);
    this.heldBytes += bytes.byteLength;
    return true;
  }

  /** `bytes` went out on the current socket. */
  sent(bytes: Uint8Array): void {
    this.unacked.push(bytes);
    this.unackedBytes += bytes.byteLength;
  }

  /** The server acknowledged our oldest unacknowledged frame: it ends at `end`. */
  acknowledged(end: number): void {
    const bytes = this.unacked.shift();
    if (!bytes) return;
    this.unackedBytes -= bytes.byteLength;
    this.base = Math.max(this.base, end);
    this.keep({ bytes, end });
  }

  /**
   * A new socket's first `attached` frame: the shell (through this server) has `input`
   * bytes. Returns what to send now; from here on, our frames go on the new socket.
   */
  attached(input: number): Reattached {
    let unconfirmed = 0;
    const again: Uint8Array[] = [];
    // Acknowledged frames past `input`: the server that had them died before passing them on.
    while (this.kept.length > 0) {
      const last = this.kept[this.kept.length - 1];
      const end = last.end ?? 0;
      if (end <= input) break;
      const start = end - last.bytes.byteLength;
      this.kept.pop();
      this.keptBytes -= last.bytes.byteLength;
      if (start < input) {
        const taken = input - start;
        again.unshift(last.bytes.subarray(taken));
        this.keep({ bytes: last.bytes.subarray(0, taken), end: input });
        break;
      }
      again.unshift(last.bytes);
    }
    // Unacknowledged frames: after `base`, ours contiguous unless another tab typed.
    const taken = Math.max(0, input - this.base);
    if (taken > this.unackedBytes) {
      unconfirmed += this.unackedBytes;
    } else {
      let skip = taken;
      let at = this.base;
      for (const bytes of this.unacked) {
        const took = Math.min(skip, bytes.byteLength);
        skip -= took;
        if (took > 0) {
          at += took;
          this.keep({ bytes: bytes.subarray(0, took), end: at });
        }
        if (took < bytes.byteLength) again.push(bytes.subarray(took));
      }
    }
    // Older than what we kept: if the shell is behind that, some of it may have been ours.
    if (input < this.floor) {
      unconfirmed += this.floor - input;
      this.floor = input;
    }
    const send = [...again, ...this.held];
    this.unacked = [];
    this.unackedBytes = 0;
    this.held = [];
    this.heldBytes = 0;
    this.base = input;
    for (const bytes of send) this.sent(bytes);
    return { send, unconfirmed };
  }

  /**
   * The server attached us to another shell than the one we typed into: what was in
   * flight there is unconfirmed; what is held goes to the new shell.
   */
  otherShell(): number {
    const unconfirmed = this.unackedBytes;
    this.kept = [];
    this.keptBytes = 0;
    this.unacked = [];
    this.unackedBytes = 0;
    this.floor = 0;
    this.base = 0;
    return unconfirmed;
  }

  /** The shell is gone: nothing of ours is for it any more. */
  clear(): void {
    this.otherShell();
    this.held = [];
    this.heldBytes = 0;
  }

  private keep(frame: Frame): void {
    if (frame.bytes.byteLength === 0) return;
    this.kept.push(frame);
    this.keptBytes += frame.bytes.byteLength;
    while (this.keptBytes > KEPT_INPUT_MAX) {
      const oldest = this.kept.shift();
      if (!oldest) break;
      this.keptBytes -= oldest.bytes.byteLength;
      this.floor = Math.max(this.floor, oldest.end ?? 0);
    }
  }
}
