/** Small concurrency helpers for the file engine. */

/** A counting semaphore with FIFO waiters. */
export class Semaphore {
  private waiters: (() => void)[] = [];
  private head = 0;

  constructor(private free: number) {}

  /** Take one permit, waiting when none is free. */
  acquire(): Promise<void> | undefined {
    if (this.free > 0) {
      this.free--;
      return undefined;
    }
    return new Promise<void>((r) => this.waiters.push(r));
  }

  /** Return one permit (to the oldest waiter if any). */
  release(): void {
    if (this.head < this.waiters.length) {
      const w = this.waiters[this.head++]!;
      if (this.head > 1024 && this.head * 2 > this.waiters.length) {
        this.waiters.splice(0, this.head);
        this.head = 0;
      }
      w();
    } else this.free++;
  }
}

/** Tracks a set of promises; the first rejection is kept. */
export class TaskSet {
  private readonly pending = new Set<Promise<void>>();
  error: unknown;
  failed = false;

  /** Add a task; its rejection is recorded (never unhandled). */
  add(p: Promise<void>): void {
    const t = p.then(
      () => {
        this.pending.delete(t);
      },
      (err) => {
        this.pending.delete(t);
        if (!this.failed) {
          this.failed = true;
          this.error = err;
        }
      },
    );
    this.pending.add(t);
  }

  /** Number of unsettled tasks. */
  get size(): number {
    return this.pending.size;
  }

  /** Wait for every task added so far (and those added meanwhile); throw the first error. */
  async drain(): Promise<void> {
    while (this.pending.size > 0) await Promise.all([...this.pending]);
    if (this.failed) throw this.error;
  }
}
