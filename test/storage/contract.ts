/**
 * The Storage contract (src/storage/storage.ts), one suite for every driver. A driver's test file calls
 * storageContract(name, makeStorage, opts); makeStorage returns a fresh, empty storage each call.
 */
import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { AlreadyExistsError, NotFoundError, UsageError } from '../../src/errors.js';
import type { ObjectInfo, Storage } from '../../src/storage/storage.js';

/** Options of the contract suite. */
export interface ContractOptions {
  /** Size of the large-object test; set the driver's multipart threshold below it (default 7 MiB). */
  largeObjectSize?: number;
  /** Multipart part size the driver was given, to test a range across a part boundary (default 5 MiB). */
  partSize?: number;
  /** Keys of the pagination test (default 1100: more than one S3 list page). */
  manyKeys?: number;
  /** Parallel puts in the pagination test (default 32). */
  concurrency?: number;
  /** Per-test timeout in ms (default 120 s). */
  timeoutMs?: number;
}

/** Collect a storage's list into an array. */
export async function listAll(s: Storage, prefix: string): Promise<ObjectInfo[]> {
  const out: ObjectInfo[] = [];
  for await (const o of s.list(prefix)) out.push(o);
  return out;
}

/** Run `fn` over items with at most `n` in flight. */
export async function mapLimit<T, R>(items: readonly T[], n: number, fn: (item: T, i: number) => Promise<R>): Promise<R[]> {
  const out: R[] = new Array(items.length);
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < items.length) {
      const i = next++;
      out[i] = await fn(items[i]!, i);
    }
  };
  await Promise.all(Array.from({ length: Math.min(n, items.length) }, worker));
  return out;
}

const sorted = (xs: string[]): string[] => [...xs].sort();

/** The shared suite. */
export function storageContract(name: string, makeStorage: () => Promise<Storage>, opts: ContractOptions = {}): void {
  const large = opts.largeObjectSize ?? 7 * 1024 * 1024;
  const partSize = opts.partSize ?? 5 * 1024 * 1024;
  const many = opts.manyKeys ?? 1100;
  const conc = opts.concurrency ?? 32;
  const timeout = opts.timeoutMs ?? 120_000;

  /** Run a test body with a fresh storage, closed afterwards. */
  const withStorage = (fn: (s: Storage) => Promise<void>) => async () => {
    const s = await makeStorage();
    try {
      await fn(s);
    } finally {
      await s.close();
    }
  };

  describe(`Storage contract: ${name}`, () => {
    it('put then get returns the same bytes; stat and list see it at once', withStorage(async (s) => {
      const data = randomBytes(4096);
      const before = Date.now();
      await s.put('config', data);
      expect(Buffer.compare(await s.get('config'), data)).toBe(0);
      const st = await s.stat('config');
      expect(st).toBeDefined();
      expect(st!.key).toBe('config');
      expect(st!.size).toBe(data.length);
      expect(st!.mtime).toBeInstanceOf(Date);
      // clocks of a remote store may differ a little
      expect(Math.abs(st!.mtime.getTime() - before)).toBeLessThan(10 * 60_000);
      const listed = await listAll(s, '');
      expect(listed.map((o) => o.key)).toEqual(['config']);
      expect(listed[0]!.size).toBe(data.length);
      expect(typeof s.location).toBe('string');
      expect(s.location.length).toBeGreaterThan(0);
    }), timeout);

    it('range get returns the slice; a range past the end is cut at the end', withStorage(async (s) => {
      const data = randomBytes(10_000);
      await s.put('data/ab/range', data);
      expect(Buffer.compare(await s.get('data/ab/range', { offset: 0, length: 10 }), data.subarray(0, 10))).toBe(0);
      expect(Buffer.compare(await s.get('data/ab/range', { offset: 1234, length: 5000 }), data.subarray(1234, 6234))).toBe(0);
      expect(Buffer.compare(await s.get('data/ab/range', { offset: 9990, length: 10 }), data.subarray(9990))).toBe(0);
      expect(Buffer.compare(await s.get('data/ab/range', { offset: 9000, length: 5000 }), data.subarray(9000))).toBe(0);
      expect((await s.get('data/ab/range', { offset: 10_000, length: 10 })).length).toBe(0);
      expect((await s.get('data/ab/range', { offset: 5, length: 0 })).length).toBe(0);
      await expect(s.get('data/ab/missing', { offset: 0, length: 10 })).rejects.toBeInstanceOf(NotFoundError);
    }), timeout);

    it('put overwrites an existing key', withStorage(async (s) => {
      await s.put('index/one', Buffer.from('first version, longer'));
      await s.put('index/one', Buffer.from('second'));
      expect((await s.get('index/one')).toString()).toBe('second');
      expect((await s.stat('index/one'))!.size).toBe(6);
      expect((await listAll(s, 'index/')).length).toBe(1);
    }), timeout);

    it('stat of a missing key is undefined', withStorage(async (s) => {
      expect(await s.stat('nope')).toBeUndefined();
      expect(await s.stat('data/00/nope')).toBeUndefined();
      await s.put('data/00/there', Buffer.from('x'));
      expect(await s.stat('data/00/there/below')).toBeUndefined();
      // a "directory" is not an object
      expect(await s.stat('data/00')).toBeUndefined();
    }), timeout);

    it('get of a missing key throws NotFoundError', withStorage(async (s) => {
      const err = await s.get('snapshots/missing').catch((e: unknown) => e);
      expect(err).toBeInstanceOf(NotFoundError);
      expect((err as NotFoundError).code).toBe('not_found');
      expect((err as Error).message).toContain('snapshots/missing');
    }), timeout);

    it('delete removes; deleting a missing key succeeds', withStorage(async (s) => {
      await s.put('locks/a', Buffer.from('lock'));
      await s.delete('locks/a');
      expect(await s.stat('locks/a')).toBeUndefined();
      await expect(s.get('locks/a')).rejects.toBeInstanceOf(NotFoundError);
      await s.delete('locks/a');
      await s.delete('locks/never-existed');
      await s.delete('no/such/dir/key');
      expect(await listAll(s, 'locks/')).toEqual([]);
    }), timeout);

    it('list returns exactly the keys under a prefix, also a partial segment', withStorage(async (s) => {
      const keys = ['config', 'data/00/aa', 'data/00/ab', 'data/01/ba', 'data/0a/ca', 'index/i1', 'index/i2', 'snapshots/s1', 'datax'];
      await Promise.all(keys.map((k, i) => s.put(k, Buffer.alloc(i + 1, i))));
      const keysOf = async (p: string) => sorted((await listAll(s, p)).map((o) => o.key));
      expect(await keysOf('')).toEqual(sorted(keys));
      expect(await keysOf('data/')).toEqual(['data/00/aa', 'data/00/ab', 'data/01/ba', 'data/0a/ca']);
      expect(await keysOf('data/0')).toEqual(['data/00/aa', 'data/00/ab', 'data/01/ba', 'data/0a/ca']);
      expect(await keysOf('data/00/')).toEqual(['data/00/aa', 'data/00/ab']);
      expect(await keysOf('data/00/a')).toEqual(['data/00/aa', 'data/00/ab']);
      expect(await keysOf('data/00/ab')).toEqual(['data/00/ab']);
      expect(await keysOf('data')).toEqual(['data/00/aa', 'data/00/ab', 'data/01/ba', 'data/0a/ca', 'datax']);
      expect(await keysOf('index/')).toEqual(['index/i1', 'index/i2']);
      expect(await keysOf('nothing/')).toEqual([]);
      expect(await keysOf('zzz')).toEqual([]);
      const sizes = Object.fromEntries((await listAll(s, '')).map((o) => [o.key, o.size]));
      keys.forEach((k, i) => expect(sizes[k]).toBe(i + 1));
    }), timeout);

    it(`list pages through many keys (${many})`, withStorage(async (s) => {
      const keys = Array.from({ length: many }, (_, i) => `many/${(i % 16).toString(16)}/${i.toString().padStart(5, '0')}`);
      await mapLimit(keys, conc, (k) => s.put(k, Buffer.from(k)));
      const listed = await listAll(s, 'many/');
      expect(listed.length).toBe(many);
      expect(new Set(listed.map((o) => o.key)).size).toBe(many);
      expect(sorted(listed.map((o) => o.key))).toEqual(sorted(keys));
      expect((await listAll(s, 'many/3/')).length).toBe(keys.filter((k) => k.startsWith('many/3/')).length);
    }), Math.max(timeout, 300_000));

    it('conditional create: the second create fails with AlreadyExistsError and changes nothing', withStorage(async (s) => {
      await s.put('locks/excl', Buffer.from('first'), { ifNoneMatch: true });
      const err = await s.put('locks/excl', Buffer.from('second'), { ifNoneMatch: true }).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(AlreadyExistsError);
      expect((err as AlreadyExistsError).code).toBe('already_exists');
      expect((await s.get('locks/excl')).toString()).toBe('first');
      // an unconditional put still overwrites; after delete a create works again
      await s.put('locks/excl', Buffer.from('third'));
      expect((await s.get('locks/excl')).toString()).toBe('third');
      await s.delete('locks/excl');
      await s.put('locks/excl', Buffer.from('fourth'), { ifNoneMatch: true });
      expect((await s.get('locks/excl')).toString()).toBe('fourth');
    }), timeout);

    it('non-durable puts (locks) store, overwrite and conditionally create like durable ones', withStorage(async (s) => {
      await s.put('locks/nd', Buffer.from('one'), { ifNoneMatch: true, durable: false });
      const err = await s.put('locks/nd', Buffer.from('two'), { ifNoneMatch: true, durable: false }).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(AlreadyExistsError);
      expect((await s.get('locks/nd')).toString()).toBe('one');
      await s.put('locks/nd', Buffer.from('three'), { durable: false });
      expect((await s.get('locks/nd')).toString()).toBe('three');
      expect((await listAll(s, 'locks/')).map((o) => o.key)).toEqual(['locks/nd']);
    }), timeout);

    it('conditional create: of racing creators exactly one wins', withStorage(async (s) => {
      for (let round = 0; round < 3; round++) {
        const key = `locks/race-${round}`;
        const n = 8;
        const results = await Promise.allSettled(
          Array.from({ length: n }, (_, i) => s.put(key, Buffer.from(`creator ${i}`), { ifNoneMatch: true })),
        );
        const won = results.flatMap((r, i) => (r.status === 'fulfilled' ? [i] : []));
        const lost = results.filter((r) => r.status === 'rejected') as PromiseRejectedResult[];
        expect(won.length).toBe(1);
        expect(lost.length).toBe(n - 1);
        for (const l of lost) expect(l.reason).toBeInstanceOf(AlreadyExistsError);
        expect((await s.get(key)).toString()).toBe(`creator ${won[0]}`);
      }
    }), timeout);

    it(`large object (${(large / 1048576).toFixed(1)} MiB, above the multipart threshold) round-trips`, withStorage(async (s) => {
      const data = randomBytes(large);
      await s.put('data/ff/large', data);
      expect((await s.stat('data/ff/large'))!.size).toBe(large);
      const back = await s.get('data/ff/large');
      expect(back.length).toBe(large);
      expect(Buffer.compare(back, data)).toBe(0);
      // a range across the first part boundary
      const off = partSize - 1000;
      expect(Buffer.compare(await s.get('data/ff/large', { offset: off, length: 2000 }), data.subarray(off, off + 2000))).toBe(0);
      // overwrite a large object with a small one
      await s.put('data/ff/large', Buffer.from('small'));
      expect((await s.get('data/ff/large')).toString()).toBe('small');
    }), Math.max(timeout, 300_000));

    it('keys that are not clean relative paths are refused with UsageError', withStorage(async (s) => {
      for (const bad of ['', '/abs', '../up', 'a/../b', 'a//b', 'a/./b', 'trailing/']) {
        await expect(s.put(bad, Buffer.from('x')), JSON.stringify(bad)).rejects.toBeInstanceOf(UsageError);
        await expect(s.get(bad), JSON.stringify(bad)).rejects.toBeInstanceOf(UsageError);
        await expect(s.stat(bad), JSON.stringify(bad)).rejects.toBeInstanceOf(UsageError);
        await expect(s.delete(bad), JSON.stringify(bad)).rejects.toBeInstanceOf(UsageError);
      }
    }), timeout);

    it('binary data keeps every byte: all byte values, empty object, odd key characters', withStorage(async (s) => {
      const all = Buffer.alloc(256 * 4);
      for (let i = 0; i < all.length; i++) all[i] = i % 256;
      await s.put('bin/all-bytes', all);
      expect(Buffer.compare(await s.get('bin/all-bytes'), all)).toBe(0);
      await s.put('bin/empty', new Uint8Array(0));
      expect((await s.get('bin/empty')).length).toBe(0);
      expect((await s.stat('bin/empty'))!.size).toBe(0);
      const crlf = Buffer.from('line1\r\nline2\n\0\xff\r', 'latin1');
      await s.put('bin/crlf', crlf);
      expect(Buffer.compare(await s.get('bin/crlf'), crlf)).toBe(0);
      const rnd = randomBytes(1024 * 1024 + 7);
      await s.put('bin/random', rnd);
      expect(Buffer.compare(await s.get('bin/random'), rnd)).toBe(0);
      // a Uint8Array view into a larger buffer must store only the view
      const backing = randomBytes(4096);
      const view = new Uint8Array(backing.buffer, backing.byteOffset + 100, 1000);
      await s.put('bin/view', view);
      expect(Buffer.compare(await s.get('bin/view'), backing.subarray(100, 1100))).toBe(0);
      const odd = 'bin/odd key with spaces+plus=eq,comma@at~tilde-ü';
      await s.put(odd, Buffer.from('odd'));
      expect((await s.get(odd)).toString()).toBe('odd');
      expect((await listAll(s, 'bin/odd')).map((o) => o.key)).toEqual([odd]);
    }), timeout);
  });
}
