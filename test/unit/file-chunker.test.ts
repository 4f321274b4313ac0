import { describe, expect, it } from 'vitest';
import { createHash } from 'node:crypto';
import { Chunker, DEFAULT_CHUNKER, chunkBoundaries, gearTable, type ChunkerOptions } from '../../engines/file/chunker.js';

/** Deterministic pseudo-random bytes (xorshift32), independent of Node's crypto. */
function prng(n: number, seed = 1): Buffer {
  const b = Buffer.allocUnsafe(n);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    b[i] = x & 0xff;
  }
  return b;
}

/** Straightforward byte-at-a-time FastCDC, the specification the optimized scanner must match. */
function reference(buf: Uint8Array, o: Required<Omit<ChunkerOptions, 'seed'>> & { seed?: string }): number[] {
  const g = gearTable(o.seed);
  const bits = Math.round(Math.log2(o.avgSize));
  const top = (n: number) => (n <= 0 ? 0 : (-1 << (32 - n)) | 0);
  const maskS = top(bits + o.normalization);
  const maskL = top(bits - o.normalization);
  const out: number[] = [];
  let start = 0;
  while (start < buf.length) {
    const len = buf.length - start;
    if (len <= o.minSize) {
      out.push(buf.length);
      break;
    }
    let h = 0;
    let cut = Math.min(len, o.maxSize);
    for (let i = o.minSize; i < Math.min(len, o.maxSize); i++) {
      h = ((h << 1) + g[buf[start + i]!]!) | 0;
      const mask = i < o.avgSize ? maskS : maskL;
      if ((h & mask) === 0) {
        cut = i + 1;
        break;
      }
    }
    start += cut;
    out.push(start);
  }
  return out;
}

/** Boundaries of prng(6 MiB, 99) with the defaults, hashed: pinned so an accidental format change fails here. */
const BOUNDARY_FP = '76ceba4a31256647';

const small = { minSize: 2048, avgSize: 8192, maxSize: 65536, normalization: 2 };

function chunksOf(buf: Buffer, ends: number[]): string[] {
  let p = 0;
  return ends.map((e) => {
    const h = createHash('sha256').update(buf.subarray(p, e)).digest('hex');
    p = e;
    return h;
  });
}

describe('FastCDC chunker', () => {
  it('has a stable gear table (changing it breaks deduplication)', () => {
    const t = gearTable();
    expect(t.length).toBe(256);
    expect(gearTable()).toBe(t);
    expect(DEFAULT_CHUNKER).toMatchObject({ minSize: 512 << 10, avgSize: 1 << 20, maxSize: 8 << 20, seed: 'permafrost-fastcdc-v1' });
    // Fixture: if this changes, every existing repository loses dedup against new backups.
    const fp = createHash('sha256').update(Buffer.from(t.buffer)).digest('hex');
    expect(fp).toBe('b998c1af688b8dc3f5b29fe50fd7f5a87ea406fda5b034c0235d4fc423c71c85');
    expect(Array.from(t.slice(0, 4))).toEqual([103441624, -169391441, 413573391, 586807745]);
    // And the boundaries of a fixed input with the default parameters.
    const ends = chunkBoundaries(prng(6 << 20, 99));
    expect(createHash('sha256').update(ends.join(',')).digest('hex').slice(0, 16)).toBe(BOUNDARY_FP);
    expect(gearTable('other-seed')[0]).not.toBe(t[0]);
  });

  it('matches the byte-at-a-time reference on random data, aligned or not', () => {
    const data = prng(3 << 20, 7);
    const ref = reference(data, small);
    expect(chunkBoundaries(data, small)).toEqual(ref);
    for (const shift of [1, 2, 3]) {
      const copy = Buffer.alloc(data.length + shift);
      data.copy(copy, shift);
      const view = copy.subarray(shift);
      expect(chunkBoundaries(view, small)).toEqual(ref);
    }
    const d2 = prng(24 << 20, 3);
    expect(chunkBoundaries(d2)).toEqual(reference(d2, { ...DEFAULT_CHUNKER }));
  });

  it('is deterministic and independent of how the stream is split', () => {
    const data = prng(2 << 20, 11);
    const whole = chunkBoundaries(data, small);
    expect(chunkBoundaries(data, small)).toEqual(whole);
    let seed = 5;
    const rnd = (n: number) => {
      seed = (seed * 1103515245 + 12345) & 0x7fffffff;
      return seed % n;
    };
    for (let round = 0; round < 5; round++) {
      const c = new Chunker(small);
      const ends: number[] = [];
      let pos = 0;
      while (pos < data.length) {
        const piece = Math.min(data.length - pos, 1 + rnd(round % 2 ? 70000 : 500));
        let at = pos;
        const stop = pos + piece;
        while (at < stop) {
          const cut = c.scan(data, at, stop);
          if (cut < 0) break;
          ends.push(cut);
          at = cut;
        }
        pos = stop;
      }
      if (c.pending > 0) ends.push(data.length);
      expect(ends).toEqual(whole);
    }
  });

  it('respects min and max sizes', () => {
    const data = prng(8 << 20, 13);
    const ends = chunkBoundaries(data, small);
    let p = 0;
    ends.forEach((e, i) => {
      const len = e - p;
      expect(len).toBeLessThanOrEqual(small.maxSize);
      if (i < ends.length - 1) expect(len).toBeGreaterThanOrEqual(small.minSize);
      p = e;
    });
    const mean = data.length / ends.length;
    expect(mean).toBeGreaterThan(small.avgSize * 0.75);
    expect(mean).toBeLessThan(small.avgSize * 2);
    // Low-entropy input: forced cuts at maxSize.
    const zeros = Buffer.alloc(300_000);
    const z = chunkBoundaries(zeros, small);
    expect(z.slice(0, -1).every((e, i) => e - (i === 0 ? 0 : z[i - 1]!) <= small.maxSize)).toBe(true);
  });

  it('skips long zero runs without changing the boundaries', () => {
    // Random data interleaved with zero runs of many lengths and alignments.
    const parts: Buffer[] = [];
    let seed = 3;
    for (let i = 0; i < 60; i++) {
      parts.push(prng(1000 + ((i * 7919) % 50000), seed++));
      parts.push(Buffer.alloc([0, 1, 31, 32, 33, 63, 64, 65, 100, 4096, 70000, 300000][i % 12]!));
    }
    const data = Buffer.concat(parts);
    expect(chunkBoundaries(data, small)).toEqual(reference(data, small));
    const big = Buffer.concat([prng(3 << 20, 5), Buffer.alloc(40 << 20), prng(1 << 20, 6), Buffer.alloc(9 << 20 + 3)]);
    expect(chunkBoundaries(big)).toEqual(reference(big, { ...DEFAULT_CHUNKER }));
  });

  it('makes inputs below the minimum one chunk', () => {
    expect(chunkBoundaries(Buffer.alloc(0))).toEqual([]);
    expect(chunkBoundaries(prng(1000))).toEqual([1000]);
    expect(chunkBoundaries(prng(512 << 10))).toEqual([512 << 10]);
  });

  it('keeps boundaries stable when a byte is inserted near the start', () => {
    const data = prng(40 << 20, 21);
    const a = chunksOf(data, chunkBoundaries(data));
    const ins = Buffer.concat([data.subarray(0, 1000), Buffer.from([0x42]), data.subarray(1000)]);
    const b = chunksOf(ins, chunkBoundaries(ins));
    const setA = new Set(a);
    const changed = b.filter((h) => !setA.has(h)).length;
    expect(a.length).toBeGreaterThan(10);
    expect(changed).toBeLessThanOrEqual(2);
    // Same with small chunks and an insertion in the middle.
    const s = prng(1 << 20, 9);
    const sa = new Set(chunksOf(s, chunkBoundaries(s, small)));
    const s2 = Buffer.concat([s.subarray(0, 500_000), Buffer.from('hello'), s.subarray(500_000)]);
    const sb = chunksOf(s2, chunkBoundaries(s2, small));
    expect(sb.filter((h) => !sa.has(h)).length).toBeLessThanOrEqual(2);
  });

  it('rejects bad parameters', () => {
    expect(() => new Chunker({ minSize: 10 })).toThrow(RangeError);
    expect(() => new Chunker({ minSize: 4096, avgSize: 1024 })).toThrow(RangeError);
    expect(() => new Chunker({ normalization: 5 })).toThrow(RangeError);
  });
});
