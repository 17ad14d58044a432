// A fetch that many causes may ask for at once (events naming unknown agents, a reconnected
// stream, a timer): it runs once for all of them, again if asked while running, and retries
// a failure with backoff until it succeeds — a refused request is never simply dropped.

import { ApiError } from '../api/http';

const FIRST_RETRY_MS = 500;
/** Retries stay frequent enough to show the truth within seconds of the server's return. */
const MAX_RETRY_MS = 4000;

export class Refresh {
  private timer: ReturnType<typeof setTimeout> | undefined;
  private running = false;
  private again = false;
  private failures = 0;
  /** Bumped by `cancel`, so that a run already under way schedules nothing after it. */
  private generation = 0;
  private readonly delayMs: number;
  private readonly run: () => Promise<void>;

  /** `delayMs`: how long to gather requests before running. */
  constructor(delayMs: number, run: () => Promise<void>) {
    this.delayMs = delayMs;
    this.run = run;
  }

  request(): void {
    if (this.running) {
      this.again = true;
      return;
    }
    this.timer ??= setTimeout(() => void this.fire(), this.delayMs);
  }

  /** Nothing planned and nothing running. */
  get idle(): boolean {
    return this.timer === undefined && !this.running;
  }

  /** Forgets what was asked (on logout); `request` works again afterwards. */
  cancel(): void {
    this.generation += 1;
    clearTimeout(this.timer);
    this.timer = undefined;
    this.again = false;
    this.failures = 0;
    this.running = false;
  }

  private async fire(): Promise<void> {
    this.timer = undefined;
    const generation = this.generation;
    this.running = true;
    this.again = false;
    let retryIn: number | null = null;
    try {
      await this.run();
      this.failures = 0;
    } catch (error) {
      // Logged out: the login page takes over; nothing to retry.
      if (!(error instanceof ApiError && error.status === 401)) {
        this.failures += 1;
        retryIn = Math.min(MAX_RETRY_MS, FIRST_RETRY_MS * 2 ** (this.failures - 1));
      }
    }
    if (generation !== this.generation) return;
    this.running = false;
    if (retryIn !== null) {
      this.timer = setTimeout(() => void this.fire(), retryIn);
    } else if (this.again) {
      this.request();
    }
  }
}
