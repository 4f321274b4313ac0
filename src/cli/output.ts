/**
 * What the CLI prints. stdout carries results only: a human summary, or one
 * JSON document with --json. Logs and progress go to stderr: a bar on a
 * terminal, a line every 10 s otherwise, nothing with --quiet.
 */
import cliProgress from 'cli-progress';
import { redact, setBeforeLogWrite } from '../util/log.js';
import type { Progress } from '../util/progress.js';
import { noProgress } from '../util/progress.js';

export function formatBytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  let v = n;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${i === 0 ? v : v.toFixed(v >= 100 ? 0 : v >= 10 ? 1 : 2)} ${units[i]}`;
}

export function formatDuration(ms: number): string {
  if (ms < 1000) return `${ms} ms`;
  const s = ms / 1000;
  if (s < 120) return `${s.toFixed(1)} s`;
  return `${Math.floor(s / 60)} min ${Math.round(s % 60)} s`;
}

/** Keys whose string values are secrets wherever they appear in a result. */
const SECRET_KEY = /password|secret|token|credential/i;

/**
 * A result as JSON with secrets masked inside its string values. Redacting the
 * serialised text instead would also hit JSON syntax: `"newKey": false` matched
 * the secret pattern and came out as `"newKey": ***`, which no script can parse.
 */
export function toSafeJson(value: unknown): string {
  return JSON.stringify(value, (key, v: unknown) => (typeof v === 'string' ? (key && SECRET_KEY.test(key) ? '***' : redact(v)) : v), 2);
}

export class Output {
  constructor(
    readonly json: boolean,
    readonly quiet: boolean,
  ) {}

  /** Print a command's result: JSON, or the human text. */
  result(value: unknown, human: () => string): void {
    if (this.json) process.stdout.write(toSafeJson(value) + '\n');
    else {
      const text = human();
      if (text) process.stdout.write(redact(text) + (text.endsWith('\n') ? '' : '\n'));
    }
  }

  /** A progress reporter suited to where stderr goes. */
  progress(label: string): Progress {
    if (this.quiet) return noProgress;
    if (process.stderr.isTTY && !this.json) return new BarProgress(label);
    return new LineProgress(label);
  }
}

class BarProgress implements Progress {
  #bar: cliProgress.SingleBar;
  #bytes = 0;
  #items = 0;
  #total = 0;
  #started = false;
  #msg = '';
  constructor(readonly label: string) {
    this.#bar = new cliProgress.SingleBar(
      {
        stream: process.stderr,
        format: `${label} [{bar}] {percentage}% {done}/{totalh} {items} files {rate} {eta_formatted} {msg}`,
        hideCursor: true,
        clearOnComplete: true,
        etaBuffer: 50,
        fps: 5,
      },
      cliProgress.Presets.shades_classic,
    );
    setBeforeLogWrite(() => {
      if (this.#started) process.stderr.write('\r\x1b[K');
    });
  }
  #payload() {
    const el = (Date.now() - this.t0) / 1000;
    return { done: formatBytes(this.#bytes), totalh: formatBytes(this.#total), items: this.#items, rate: `${formatBytes(el > 0 ? this.#bytes / el : 0)}/s`, msg: this.#msg };
  }
  t0 = Date.now();
  setTotal(bytes?: number): void {
    if (bytes !== undefined) this.#total = bytes;
    if (!this.#started) {
      this.#bar.start(Math.max(1, this.#total), 0, this.#payload());
      this.#started = true;
    } else this.#bar.setTotal(Math.max(1, this.#total));
  }
  advance(bytes: number, items = 0): void {
    this.#bytes += bytes;
    this.#items += items;
    if (!this.#started) this.setTotal();
    this.#bar.update(Math.min(this.#bytes, Math.max(1, this.#total)), this.#payload());
  }
  message(text: string): void {
    this.#msg = text.length > 40 ? '…' + text.slice(-39) : text;
  }
  done(): void {
    if (this.#started) this.#bar.stop();
    setBeforeLogWrite(undefined);
  }
}

class LineProgress implements Progress {
  #bytes = 0;
  #items = 0;
  #total = 0;
  #last = Date.now();
  #t0 = Date.now();
  constructor(readonly label: string) {}
  setTotal(bytes?: number): void {
    if (bytes !== undefined) this.#total = bytes;
  }
  advance(bytes: number, items = 0): void {
    this.#bytes += bytes;
    this.#items += items;
    const now = Date.now();
    if (now - this.#last >= 10_000) {
      this.#last = now;
      const pct = this.#total ? ` (${Math.min(100, Math.round((100 * this.#bytes) / this.#total))}%)` : '';
      const rate = formatBytes(this.#bytes / Math.max(0.001, (now - this.#t0) / 1000));
      process.stderr.write(`${this.label}: ${formatBytes(this.#bytes)}${this.#total ? ' of ' + formatBytes(this.#total) : ''}${pct}, ${this.#items} files, ${rate}/s\n`);
    }
  }
  message(): void {}
  done(): void {}
}
