/**
 * Progress reporting: the core reports, the CLI decides how to show it
 * (a bar on a terminal, periodic lines otherwise, nothing with --json unless asked).
 */
export interface Progress {
  /** Totals known so far; may be called again as the totals grow. */
  setTotal(bytes?: number, items?: number): void;
  /** Work done since the last call. */
  advance(bytes: number, items?: number): void;
  /** A short status line (current phase or path). */
  message(text: string): void;
  /** The task finished; clear the bar. */
  done(): void;
}

export const noProgress: Progress = {
  setTotal() {},
  advance() {},
  message() {},
  done() {},
};
