/**
 * Deterministic pseudo-random sources for the benchmark dataset.
 *
 * - `Rng`: sfc32 (small fast counter), seeded from a string through cyrb128.
 *   Used for every *choice* (sizes, names, offsets, which file to mutate).
 * - `randomBlock`: incompressible bytes as the AES-256-CTR keystream of a key
 *   derived from (seed, stream name). Deterministic, never repeats (so random
 *   regions cannot be deduplicated by accident, unlike slices of a small pool),
 *   seekable by block, and produced by OpenSSL at GB/s — no per-byte JS loop.
 */
import { createCipheriv, createHash } from 'node:crypto';

/** cyrb128: a string → four 32-bit seeds. */
function cyrb128(str: string): [number, number, number, number] {
  let h1 = 1779033703,
    h2 = 3144134277,
    h3 = 1013904242,
    h4 = 2773480762;
  for (let i = 0; i < str.length; i++) {
    const k = str.charCodeAt(i);
    h1 = h2 ^ Math.imul(h1 ^ k, 597399067);
    h2 = h3 ^ Math.imul(h2 ^ k, 2869860233);
    h3 = h4 ^ Math.imul(h3 ^ k, 951274213);
    h4 = h1 ^ Math.imul(h4 ^ k, 2716044179);
  }
  h1 = Math.imul(h3 ^ (h1 >>> 18), 597399067);
  h2 = Math.imul(h4 ^ (h2 >>> 22), 2869860233);
  h3 = Math.imul(h1 ^ (h3 >>> 17), 951274213);
  h4 = Math.imul(h2 ^ (h4 >>> 19), 2716044179);
  return [(h1 ^ h2 ^ h3 ^ h4) >>> 0, (h2 ^ h1) >>> 0, (h3 ^ h1) >>> 0, (h4 ^ h1) >>> 0];
}

export class Rng {
  #a: number;
  #b: number;
  #c: number;
  #d: number;

  constructor(seed: string) {
    [this.#a, this.#b, this.#c, this.#d] = cyrb128(seed);
    for (let i = 0; i < 15; i++) this.u32();
  }

  /** Next 32-bit unsigned integer (sfc32). */
  u32(): number {
    let a = this.#a,
      b = this.#b,
      c = this.#c,
      d = this.#d;
    const t = (((a + b) | 0) + d) | 0;
    d = (d + 1) | 0;
    a = b ^ (b >>> 9);
    b = (c + (c << 3)) | 0;
    c = (c << 21) | (c >>> 11);
    c = (c + t) | 0;
    this.#a = a;
    this.#b = b;
    this.#c = c;
    this.#d = d;
    return t >>> 0;
  }

  /** Uniform in [0, 1). */
  float(): number {
    return this.u32() / 4294967296;
  }

  /** Integer in [lo, hi] (inclusive). */
  int(lo: number, hi: number): number {
    return lo + Math.floor(this.float() * (hi - lo + 1));
  }

  /** Log-uniform integer in [lo, hi]: many small values, a few large ones. */
  logInt(lo: number, hi: number): number {
    return Math.min(hi, Math.floor(Math.exp(Math.log(lo) + this.float() * (Math.log(hi + 1) - Math.log(lo)))));
  }

  pick<T>(arr: readonly T[]): T {
    return arr[Math.floor(this.float() * arr.length)]!;
  }

  chance(p: number): boolean {
    return this.float() < p;
  }

  /** k distinct integers from [0, n), in random order (partial Fisher–Yates). */
  sample(n: number, k: number): number[] {
    k = Math.min(k, n);
    const idx = new Uint32Array(n);
    for (let i = 0; i < n; i++) idx[i] = i;
    const out: number[] = [];
    for (let i = 0; i < k; i++) {
      const j = i + Math.floor(this.float() * (n - i));
      const t = idx[i]!;
      idx[i] = idx[j]!;
      idx[j] = t;
      out.push(idx[i]!);
    }
    return out;
  }

  /** A derived seed string, for sub-streams. */
  fork(label: string): string {
    return `${label}:${this.u32().toString(16)}:${this.u32().toString(16)}`;
  }
}

const ZEROS = Buffer.alloc(1 << 20);

/**
 * `length` incompressible bytes: the AES-256-CTR keystream of `stream`,
 * starting at byte `offset` (a multiple of 16).
 */
export function randomBytesAt(stream: string, offset: number, length: number): Buffer {
  if (offset % 16 !== 0) throw new Error('randomBytesAt: offset must be a multiple of 16');
  const key = createHash('sha256').update(`permafrost-bench/random/${stream}`).digest();
  const iv = Buffer.alloc(16);
  iv.writeBigUInt64BE(BigInt(offset / 16), 8);
  const c = createCipheriv('aes-256-ctr', key, iv);
  const parts: Buffer[] = [];
  let left = length;
  while (left > 0) {
    const n = Math.min(left, ZEROS.length);
    parts.push(c.update(ZEROS.subarray(0, n)));
    left -= n;
  }
  return parts.length === 1 ? parts[0]! : Buffer.concat(parts, length);
}
