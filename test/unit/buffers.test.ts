import { randomBytes } from 'node:crypto';
import { mkdtempSync, readdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { newMasterKeyHex } from '../../src/repository/crypto.js';
import { PackBuilder, packKey, parsePack } from '../../src/repository/pack.js';
import { Repository } from '../../src/repository/repository.js';
import { LocalStorage } from '../../src/storage/local.js';
import { BufferPool, SLAB_SOURCE, SharedBufferPool } from '../../src/util/buffers.js';
import { addon, concatBytes, copyInto } from '../../src/util/native.js';
import { Worker } from 'node:worker_threads';
import { MemStorage } from '../helpers/memstorage.js';

describe('BufferPool', () => {
  it('hands out power-of-two classes of at least the minimum and reuses what comes back', () => {
    const pool = new BufferPool(2, 1000);
    const a = pool.take(10);
    expect(a.byteLength).toBe(1000);
    const b = pool.take(1500);
    expect(b.byteLength).toBe(2000);
    pool.give(a);
    expect(pool.take(999)).toBe(a);
    expect(pool.take(999)).not.toBe(a);
    // Detached buffers are ignored; at most `keep` per class are kept.
    const c = pool.take(1);
    structuredClone(c, { transfer: [c] });
    pool.give(c);
    const kept = [pool.take(1), pool.take(1), pool.take(1)];
    for (const k of kept) pool.give(k);
    const again = [pool.take(1), pool.take(1), pool.take(1)];
    expect(again.filter((x) => kept.includes(x))).toHaveLength(2);
  });
});

describe('PackBuilder', () => {
  const blobs = [randomBytes(100), randomBytes(5000), ...Array.from({ length: 40 }, () => randomBytes(20)), randomBytes(3 << 20)];
  function fill(builder: PackBuilder): void {
    for (const [i, b] of blobs.entries()) builder.add(i.toString(16).padStart(64, '0'), 'data', b, b.length, 0);
  }

  it('in memory: grows its buffer for a blob or a header that does not fit, and the pack parses', async () => {
    const st = new MemStorage();
    const builder = new PackBuilder(new BufferPool(4, 0), 256);
    fill(builder);
    const id = builder.finish(undefined);
    await builder.store(st);
    const bytes = await st.get(packKey(id));
    const entries = parsePack(bytes, id, undefined);
    expect(entries).toHaveLength(blobs.length);
    for (const [i, e] of entries.entries()) expect(bytes.subarray(e[2], e[2] + e[3]).equals(blobs[i]!)).toBe(true);
  });

  it('staged in a local directory: the same bytes and ID as in memory, no temporary file left', async () => {
    const root = mkdtempSync(join(tmpdir(), 'pf-stage-'));
    const local = new LocalStorage(root);
    const mem = new MemStorage();
    const a = new PackBuilder(new BufferPool(4, 0), 1 << 20);
    const b = new PackBuilder(new BufferPool(4, 0), 1 << 20, local.stage());
    fill(a);
    fill(b);
    const id = a.finish(undefined);
    expect(b.finish(undefined)).toBe(id);
    await a.store(mem);
    await b.store(local);
    expect((await local.get(packKey(id))).equals(await mem.get(packKey(id)))).toBe(true);
    // An abandoned staged pack leaves nothing behind either.
    const c = new PackBuilder(new BufferPool(4, 0), 1 << 20, local.stage());
    fill(c);
    await c.discard();
    const files = readdirSync(root, { recursive: true, withFileTypes: true }).filter((d) => d.isFile()).map((d) => d.name);
    expect(files).toEqual([id]);
  });
});

describe.each([
  ['plain, in memory', false, false],
  ['encrypted, in memory', true, false],
  ['encrypted, staged packs in a local directory', true, true],
])('saveBlob copies what it keeps (%s)', (_n, encrypted, local) => {
  it('a caller may overwrite its buffer as soon as saveBlob returns', async () => {
    const st = local ? new LocalStorage(mkdtempSync(join(tmpdir(), 'pf-repo-'))) : new MemStorage();
    let keyFile: string | undefined;
    if (encrypted) {
      keyFile = join(mkdtempSync(join(tmpdir(), 'pf-key-')), 'key');
      writeFileSync(keyFile, newMasterKeyHex() + '\n', { mode: 0o600 });
    }
    const repo = await Repository.init(st, { keyFile, packSize: 1 << 20 });
    // One reused buffer, as the file engine's read buffers are: small blobs,
    // blobs larger than a compression batch, compressible and random ones.
    const scratch = Buffer.alloc(6 << 20);
    const originals: Buffer[] = [];
    const saves: Promise<unknown>[] = [];
    const sizes = [10, 100, 70_000, 5 << 20, 3000, 1 << 20];
    for (let round = 0; round < 3; round++) {
      for (const [i, n] of sizes.entries()) {
        const data = i % 2 === 0 ? randomBytes(n) : Buffer.alloc(n, `${round}:${i}`);
        data.copy(scratch);
        originals.push(data);
        saves.push(repo.saveBlob('data', scratch.subarray(0, n)));
        scratch.fill(0xee);
      }
    }
    const ids = ((await Promise.all(saves)) as { id: string }[]).map((r) => r.id);
    await repo.flush();
    for (const [i, id] of ids.entries()) expect((await repo.loadBlob('data', id)).equals(originals[i]!)).toBe(true);
    await repo.close();
  });
});

describe('SharedBufferPool', () => {
  it('reuses buffers by class, ignores a second give and foreign buffers', () => {
    const pool = new SharedBufferPool(1024);
    const a = pool.take(10);
    expect(a).toBeInstanceOf(SharedArrayBuffer);
    expect(a.byteLength).toBe(1024);
    pool.give(a);
    pool.give(a);
    pool.give(new SharedArrayBuffer(1024));
    expect(pool.take(1000)).toBe(a);
    expect(pool.take(1000)).not.toBe(a);
    expect(pool.allocated).toBe(2048);
  });

  it('sends a buffer to each thread once, then only its number, and the thread writes the same memory', async () => {
    const pool = new SharedBufferPool(64);
    const b = pool.take(64);
    const first = pool.lend(b, 0);
    expect(first.sab).toBe(b);
    expect(pool.lend(b, 0)).toEqual({ slab: first.slab });
    expect(pool.lend(b, 1).sab).toBe(b);
    const w = new Worker(`const { parentPort } = require('node:worker_threads');${SLAB_SOURCE}
      parentPort.on('message', (m) => { const u = new Uint8Array(slabOf(m)); u[0] += m.add; parentPort.postMessage(u[0]); });`, { eval: true });
    try {
      const ask = (m: object) => new Promise((r) => { w.once('message', r); w.postMessage(m); });
      const pool2 = new SharedBufferPool(64);
      const c = pool2.take(1);
      expect(await ask({ ...pool2.lend(c, 0), add: 5 })).toBe(5);
      expect(await ask({ ...pool2.lend(c, 0), add: 2 })).toBe(7);
      expect(new Uint8Array(c)[0]).toBe(7);
    } finally {
      await w.terminate();
    }
  });
});

describe('native copies', () => {
  if (addon === undefined) console.warn('[buffers] skipping: the native addon is not built (engines/file/native; npm run install)');
  it.skipIf(addon === undefined)('copy and zero work on shared and plain buffers and refuse to overflow', () => {
    const dst = Buffer.from(new SharedArrayBuffer(32));
    const src = randomBytes(20);
    copyInto(dst, 5, src);
    expect(dst.subarray(5, 25).equals(src)).toBe(true);
    expect(() => addon!.copy(dst, 13, src)).toThrow(RangeError);
    expect(() => addon!.copy(dst, -1, src)).toThrow(RangeError);
    addon!.zero(dst.subarray(0, 10));
    expect(dst.subarray(0, 10).equals(Buffer.alloc(10))).toBe(true);
    expect(dst.subarray(10, 25).equals(src.subarray(5))).toBe(true);
  });

  it('concatBytes equals Buffer.concat', () => {
    const parts = [randomBytes(3), Buffer.from(new SharedArrayBuffer(7)), randomBytes(0), randomBytes(100)];
    expect(concatBytes(parts, 110).equals(Buffer.concat(parts))).toBe(true);
  });
});
