/**
 * Small helpers shared by block backup and restore: device sizing, zero
 * detection and a byte budget that bounds the work in flight.
 */
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { stat } from 'node:fs/promises';
import type { Stats } from 'node:fs';
import type { FileHandle } from 'node:fs/promises';
import { DeviceError, InterruptedError, UsageError, fromSystemError } from '../../src/errors.js';

const execFileP = promisify(execFile);

/** What a source or target path is. */
export interface DeviceInfo {
  kind: 'block' | 'file';
  size: number;
  stats: Stats;
}

/** Size of a block device in bytes (`blockdev --getsize64`; fstat reports 0 for devices). */
export async function blockDeviceSize(path: string): Promise<number> {
  let out: string;
  try {
    ({ stdout: out } = await execFileP('blockdev', ['--getsize64', path], { encoding: 'utf8' }));
  } catch (err) {
    const e = err as { stderr?: string; message?: string };
    throw new DeviceError(`cannot read the size of ${path}: ${(e.stderr || e.message || String(err)).trim()}`, { cause: err });
  }
  const size = Number(out.trim());
  if (!Number.isSafeInteger(size) || size < 0) throw new DeviceError(`blockdev reported an invalid size for ${path}: ${out.trim()}`);
  return size;
}

/** Stat a path (following symlinks such as /dev/disk/by-id/…) and size it; block devices and regular files only. */
export async function probeDevice(path: string): Promise<DeviceInfo> {
  let st: Stats;
  try {
    st = await stat(path);
  } catch (err) {
    throw fromSystemError(err, path);
  }
  if (st.isBlockDevice()) return { kind: 'block', size: await blockDeviceSize(path), stats: st };
  if (st.isFile()) return { kind: 'file', size: st.size, stats: st };
  throw new UsageError(`${path} is neither a block device nor a regular file`);
}

/** True when `buf` is all zeros; `zeros` is a zero-filled buffer at least as long. */
export function isZeroBlock(buf: Uint8Array, zeros: Buffer): boolean {
  // Buffer.compare is a native memcmp (tens of GB/s); it stops at the first non-zero byte.
  return Buffer.compare(buf, zeros.subarray(0, buf.length)) === 0;
}

/**
 * A budget of bytes for work in flight (uploads, downloads). `acquire` waits
 * until the budget has room (a single item larger than the whole budget is
 * admitted when nothing else is in flight), and wakes up early to fail when the
 * signal aborts or `fail` was called.
 */
export class ByteBudget {
  private used = 0;
  private count = 0;
  private waiters: (() => void)[] = [];
  /** First error reported by a task; once set, acquire throws it. */
  error: unknown;

  constructor(
    private readonly maxBytes: number,
    private readonly maxCount: number,
    private readonly signal: AbortSignal,
  ) {
    signal.addEventListener('abort', () => this.wake(), { once: true });
  }

  /** Bytes in flight. */
  get inFlight(): number {
    return this.used;
  }

  /** Wait for room for `bytes`; throws the first task error or InterruptedError. */
  async acquire(bytes: number): Promise<void> {
    for (;;) {
      if (this.error !== undefined) throw this.error;
      if (this.signal.aborted) throw new InterruptedError();
      if (this.count === 0 || (this.used + bytes <= this.maxBytes && this.count < this.maxCount)) break;
      await new Promise<void>((resolve) => this.waiters.push(resolve));
    }
    this.used += bytes;
    this.count++;
  }

  /** Return `bytes` to the budget. */
  release(bytes: number): void {
    this.used -= bytes;
    this.count--;
    this.wake();
  }

  /** Record a task failure (the first one wins) and wake the waiters. */
  fail(err: unknown): void {
    if (this.error === undefined) this.error = err;
    this.wake();
  }

  /** Wait until nothing is in flight (tasks still settle after a failure). */
  async drain(): Promise<void> {
    while (this.count > 0) await new Promise<void>((resolve) => this.waiters.push(resolve));
  }

  private wake(): void {
    const w = this.waiters;
    this.waiters = [];
    for (const f of w) f();
  }
}

/** Fill `buf` from file position `pos`; returns the bytes read (short only at end of file). */
export async function readFully(fh: FileHandle, buf: Buffer, pos: number): Promise<number> {
  let off = 0;
  while (off < buf.length) {
    const { bytesRead } = await fh.read(buf, off, buf.length - off, pos + off);
    if (bytesRead === 0) break;
    off += bytesRead;
  }
  return off;
}

/** Write all of `buf` at file position `pos`. */
export async function writeFully(fh: FileHandle, buf: Uint8Array, pos: number): Promise<void> {
  let off = 0;
  while (off < buf.length) {
    const { bytesWritten } = await fh.write(buf, off, buf.length - off, pos + off);
    if (bytesWritten <= 0) throw new DeviceError(`short write at offset ${pos + off}`);
    off += bytesWritten;
  }
}

/**
 * Read the first `size` bytes of `fh` sequentially in chunks of `readSize`,
 * keeping `buffers - 1` reads in flight ahead of the consumer. Buffers are
 * reused: a yielded chunk is valid only until the next iteration. A source
 * shorter than `size` is a DeviceError.
 */
export async function* readChunks(
  fh: FileHandle,
  what: string,
  size: number,
  readSize: number,
  buffers = 3,
): AsyncGenerator<{ pos: number; data: Buffer }> {
  const nChunks = Math.ceil(size / readSize);
  const pool = Array.from({ length: Math.max(1, Math.min(buffers, nChunks)) }, () => Buffer.allocUnsafeSlow(readSize));
  const reads: (Promise<number> | undefined)[] = [];
  const start = (c: number): void => {
    if (c >= nChunks) return;
    const len = Math.min(readSize, size - c * readSize);
    const p = readFully(fh, pool[c % pool.length]!.subarray(0, len), c * readSize);
    p.catch(() => {}); // awaited below; an abandoned read must not reject unhandled
    reads[c] = p;
  };
  for (let c = 0; c < pool.length - 1; c++) start(c);
  for (let c = 0; c < nChunks; c++) {
    start(c + pool.length - 1);
    const want = Math.min(readSize, size - c * readSize);
    let got: number;
    try {
      got = await reads[c]!;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'EIO') throw new DeviceError(`${what}: I/O error reading at offset ${c * readSize}`, { cause: err });
      throw fromSystemError(err, what);
    }
    reads[c] = undefined;
    if (got !== want) throw new DeviceError(`${what}: read ${got} bytes at offset ${c * readSize}, expected ${want} (device shrank?)`);
    yield { pos: c * readSize, data: pool[c % pool.length]!.subarray(0, got) };
  }
}
