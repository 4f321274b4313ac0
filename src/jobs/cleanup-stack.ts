/**
 * A stack of undo steps, unwound in reverse order on success, on error and on
 * interruption. A failing step is logged and the unwinding goes on; it never
 * hides the error that made the job fail.
 */
import type { Catalog } from '../catalog/catalog.js';
import { log } from '../util/log.js';

interface Step {
  what: string;
  undo: () => Promise<void>;
  /** Catalog resource row marked removed once the step succeeded. */
  resource?: number;
}

export class CleanupStack {
  #steps: Step[] = [];
  constructor(private readonly catalog?: Catalog) {}

  push(what: string, undo: () => Promise<void>, resource?: number): void {
    this.#steps.push({ what, undo, resource });
  }

  /** Run every step, newest first. Returns the descriptions of the steps that failed. */
  async unwind(): Promise<string[]> {
    const failed: string[] = [];
    while (this.#steps.length > 0) {
      const s = this.#steps.pop()!;
      try {
        await s.undo();
        if (s.resource !== undefined) this.catalog?.resourceRemoved(s.resource);
        log.debug(`cleanup: ${s.what}`);
      } catch (err) {
        failed.push(s.what);
        log.error(`cleanup: cannot ${s.what}: ${(err as Error).message} (run "permafrost cleanup" to retry)`);
      }
    }
    return failed;
  }
}
