/**
 * Events come in bursts (a replay, a reconnecting fleet, a session's steps): ids seen within
 * `delayMs` of each other are refreshed once each, together.
 */
export class Coalescer {
  private readonly pending = new Set<string>();
  private timer: ReturnType<typeof setTimeout> | undefined;
  private readonly delayMs: number;
  private readonly refresh: (id: string) => void;

  constructor(delayMs: number, refresh: (id: string) => void) {
    this.delayMs = delayMs;
    this.refresh = refresh;
  }

  add(id: string): void {
    this.pending.add(id);
    this.timer ??= setTimeout(() => this.flush(), this.delayMs);
  }

  /** Forgets what is waiting (on logout). */
  clear(): void {
    this.pending.clear();
    clearTimeout(this.timer);
    this.timer = undefined;
  }

  private flush(): void {
    this.timer = undefined;
    const ids = [...this.pending];
    this.pending.clear();
    for (const id of ids) this.refresh(id);
  }
}
