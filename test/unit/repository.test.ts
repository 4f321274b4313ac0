import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { IntegrityError, LockedError, NoRepositoryError, NotFoundError, UsageError, WrongKeyError } from '../../src/errors.js';
import { decodeStructured, encodeStructured } from '../../src/repository/crypto.js';
import type { Manifest } from '../../src/repository/manifest.js';
import { readPackHeader } from '../../src/repository/pack.js';
import { Repository } from '../../src/repository/repository.js';
import { emptyStats } from '../../src/repository/types.js';
import { keyFile } from '../helpers/keyfile.js';
import { MemStorage } from '../helpers/memstorage.js';

function manifest(id: string, root: string): Manifest {
  const now = new Date().toISOString();
  return { version: 1, id, name: 'n', host: 'h', engine: 'file', root, source: { kind: 'path', path: '/x' }, dataTimestamp: now, startedAt: now, finishedAt: now, stats: emptyStats(), tags: {} };
}

describe.each([
  ['plain', undefined],
  ['encrypted', keyFile()],
])('repository (%s)', (_name, kf) => {
  it('stores, deduplicates and reads back blobs through packs and index', async () => {
    const st = new MemStorage();
    const repo = await Repository.init(st, { keyFile: kf, packSize: 64 << 10 });
    const blobs = Array.from({ length: 50 }, (_, i) => (i % 2 ? randomBytes(10_000) : Buffer.alloc(20_000, i)));
    const results = await Promise.all(blobs.map((b) => repo.saveBlob('data', b)));
    expect(results.every((r) => r.isNew)).toBe(true);
    expect((await repo.saveBlob('data', blobs[3]!)).isNew).toBe(false);
    await repo.flush();
    const packs = [...st.objects.keys()].filter((k) => k.startsWith('data/'));
    expect(packs.length).toBeGreaterThan(1);
    expect([...st.objects.keys()].filter((k) => k.startsWith('index/'))).toHaveLength(1);
    await repo.close();

    const again = await Repository.open(st, { keyFile: kf });
    await again.loadIndex();
    expect(again.index.size).toBe(50);
    for (const [i, b] of blobs.entries()) expect((await again.loadBlob('data', results[i]!.id)).equals(b)).toBe(true);
    // Compressible blobs are stored smaller than they are.
    const loc = again.index.get(results[0]!.id)!;
    expect(loc.length).toBeLessThan(2000);
    // Packs describe themselves.
    const header = await readPackHeader(st, loc.pack, again.keys.encKey);
    expect(header.some((e) => e[0] === results[0]!.id)).toBe(true);
    await again.close();
  });

  it('detects a corrupted blob on read', async () => {
    const st = new MemStorage();
    const repo = await Repository.init(st, { keyFile: kf });
    const { id } = await repo.saveBlob('data', randomBytes(5000));
    await repo.flush();
    const loc = repo.index.get(id)!;
    const obj = st.objects.get(`data/${loc.pack.slice(0, 2)}/${loc.pack}`)!;
    obj.data[loc.offset + 20] ^= 0xff;
    await expect(repo.loadBlob('data', id)).rejects.toBeInstanceOf(IntegrityError);
    await repo.close();
  });

  it('writes manifests once and resolves ID prefixes', async () => {
    const st = new MemStorage();
    const repo = await Repository.init(st, { keyFile: kf });
    const { id: root } = await repo.saveBlob('tree', Buffer.from('{}'));
    await repo.flush();
    const id = Repository.newBackupId();
    await repo.saveManifest(manifest(id, root));
    await expect(repo.saveManifest(manifest(id, root))).rejects.toThrow();
    expect(await repo.resolveBackupId(id.slice(0, 6))).toBe(id);
    expect((await repo.loadManifest(id)).root).toBe(root);
    await expect(repo.loadManifest('0000000000000000')).rejects.toBeInstanceOf(NotFoundError);
    await repo.close();
  });
});

describe('repository opening', () => {
  it('refuses a missing repository, a second init, a wrong or missing key', async () => {
    const st = new MemStorage();
    await expect(Repository.open(st)).rejects.toBeInstanceOf(NoRepositoryError);
    const kf = keyFile();
    await (await Repository.init(st, { keyFile: kf })).close();
    await expect(Repository.init(st)).rejects.toBeInstanceOf(UsageError);
    await expect(Repository.open(st)).rejects.toBeInstanceOf(WrongKeyError);
    await expect(Repository.open(st, { keyFile: keyFile() })).rejects.toBeInstanceOf(WrongKeyError);
    const ok = await Repository.open(st, { keyFile: kf });
    await ok.close();
  });

  it('treats a config that is not ours as no repository', async () => {
    const st = new MemStorage();
    await st.put('config', Buffer.from('hello'));
    await expect(Repository.open(st)).rejects.toBeInstanceOf(NoRepositoryError);
  });

  it('encrypted repositories reveal no plaintext', async () => {
    const st = new MemStorage();
    const repo = await Repository.init(st, { keyFile: keyFile() });
    const secret = Buffer.from('TOP-SECRET-PAYLOAD '.repeat(100));
    await repo.saveBlob('data', secret);
    await repo.flush();
    for (const [, o] of st.objects) expect(o.data.includes(Buffer.from('TOP-SECRET'))).toBe(false);
    await repo.close();
  });

  it('an unflushed session leaves no index and loses nothing stored', async () => {
    const st = new MemStorage();
    const repo = await Repository.init(st);
    await repo.saveBlob('data', randomBytes(1000));
    await repo.close(); // like a crash before flush
    const again = await Repository.open(st);
    await again.loadIndex();
    expect(again.index.size).toBe(0);
    await again.close();
  });
});

describe('repository locks', () => {
  it('shared locks coexist, exclusive ones conflict, stale ones are taken over', async () => {
    const st = new MemStorage();
    await (await Repository.init(st)).close();
    const a = await Repository.open(st);
    const b = await Repository.open(st);
    await a.lock(false, 'backup');
    await b.lock(false, 'backup');
    const c = await Repository.open(st);
    await expect(c.lock(true, 'prune')).rejects.toBeInstanceOf(LockedError);
    await a.close();
    await b.close();
    await c.lock(true, 'prune');
    await c.close();
    // A lock left by a process that is gone (same host, dead pid) is stale.
    const { hostname } = await import('node:os');
    const now = new Date().toISOString();
    await st.put('locks/dead', Buffer.from(JSON.stringify({ host: hostname(), pid: 999999, exclusive: true, createdAt: now, refreshedAt: now, purpose: 'prune' })));
    const d = await Repository.open(st);
    await d.lock(true, 'prune');
    await d.close();
    expect(st.objects.has('locks/dead')).toBe(false);
  });
});

describe('index repair', () => {
  it('rebuilds the index from the packs alone, dropping unreadable index files', async () => {
    const { rebuildIndex } = await import('../../src/repository/rebuild.js');
    const st = new MemStorage();
    const repo = await Repository.init(st, { packSize: 32 << 10 });
    const blobs = Array.from({ length: 20 }, () => randomBytes(8000));
    const ids = (await Promise.all(blobs.map((b) => repo.saveBlob('data', b)))).map((r) => r.id);
    await repo.flush();
    await repo.close();
    // Lose the index: one file corrupted.
    for (const k of [...st.objects.keys()].filter((k) => k.startsWith('index/'))) st.objects.get(k)!.data[5] ^= 0xff;
    const broken = await Repository.open(st);
    await expect(broken.loadIndex()).rejects.toBeInstanceOf(IntegrityError);
    await broken.close();
    const r2 = await Repository.open(st);
    const res = await rebuildIndex(r2);
    expect(res.unreadablePacks).toEqual([]);
    expect(res.reindexed).toBeGreaterThan(1);
    expect(res.rewrittenIndex).not.toBeNull();
    await r2.close();
    const r3 = await Repository.open(st);
    await r3.loadIndex();
    for (const [i, id] of ids.entries()) expect((await r3.loadBlob('data', id)).equals(blobs[i]!)).toBe(true);
    await r3.close();
  });
});

describe('structured data (manifests, index files)', () => {
  it('unencrypted: a damaged byte is refused (IntegrityError), never decoded into other values', () => {
    const value = { id: '0123456789abcdef', name: 'data', stats: { files: 12345, bytes: 67890 }, tags: ['a', 'b'], note: 'x'.repeat(200) };
    const enc = encodeStructured(undefined, value);
    expect(decodeStructured(undefined, enc, 'manifest t')).toEqual(value);
    for (let i = 0; i < enc.length; i++) {
      for (const mask of [0x01, 0x80, 0xff]) {
        const bad = Buffer.from(enc);
        bad[i]! ^= mask;
        // A bit the format does not use may decode to the very same value; anything else must be refused.
        let got: unknown;
        try {
          got = decodeStructured(undefined, bad, 'manifest t');
        } catch (err) {
          expect(err, `byte ${i} ^ ${mask}`).toBeInstanceOf(IntegrityError);
          continue;
        }
        expect(got, `byte ${i} ^ ${mask} decoded`).toEqual(value);
      }
    }
  });
});

describe.each([
  ['plain', undefined],
  ['encrypted', keyFile()],
])('tree packs (%s)', (_name, kf) => {
  /** A storage that counts ranged reads of packs. */
  function counting(st: MemStorage): { reads: () => number } {
    let n = 0;
    const get = st.get.bind(st);
    st.get = (key, range) => {
      if (key.startsWith('data/')) n++;
      return get(key, range);
    };
    return { reads: () => n };
  }

  async function fill(st: MemStorage) {
    const repo = await Repository.init(st, { keyFile: kf, packSize: 256 << 10 });
    const data = Array.from({ length: 40 }, () => randomBytes(20_000));
    const trees = Array.from({ length: 300 }, (_, i) => Buffer.from(JSON.stringify({ nodes: [{ name: `f${i}`, pad: randomBytes(200).toString('hex') }] })));
    // Interleaved, as a backup saves them.
    const saves: Promise<{ id: string }>[] = [];
    for (let i = 0; i < 300; i++) {
      saves.push(repo.saveBlob('tree', trees[i]!));
      if (i < 40) saves.push(repo.saveBlob('data', data[i]!));
    }
    await Promise.all(saves);
    await repo.flush();
    await repo.close();
    const treeIds = trees.map((t) => repo.hash(t));
    const dataIds = data.map((d) => repo.hash(d));
    return { trees, data, treeIds, dataIds };
  }

  it('keeps tree blobs and data blobs in separate packs', async () => {
    const st = new MemStorage();
    const { treeIds, dataIds } = await fill(st);
    const r = await Repository.open(st, { keyFile: kf });
    await r.loadIndex();
    const treePacks = new Set(treeIds.map((id) => r.index.get(id)!.pack));
    const dataPacks = new Set(dataIds.map((id) => r.index.get(id)!.pack));
    for (const p of treePacks) expect(dataPacks.has(p)).toBe(false);
    for (const p of treePacks) expect(r.index.packInfo(p)!.hasData).toBe(false);
    for (const p of dataPacks) expect(r.index.packInfo(p)!.hasData).toBe(true);
    // Still self-describing: every tree pack's header names its blobs as trees.
    for (const p of treePacks) for (const e of await readPackHeader(st, p, r.keys.encKey)) expect(e[1]).toBe('t');
    await r.close();
  });

  it('loads trees from whole cached tree packs, one read per pack, every blob verified', async () => {
    const st = new MemStorage();
    const { trees, treeIds } = await fill(st);
    const r = await Repository.open(st, { keyFile: kf });
    await r.loadIndex();
    const treePacks = new Set(treeIds.map((id) => r.index.get(id)!.pack));
    const c = counting(st);
    const loaded = await Promise.all(treeIds.map((id) => r.loadBlob('tree', id)));
    for (const [i, b] of loaded.entries()) expect(b.equals(trees[i]!)).toBe(true);
    expect(c.reads()).toBe(treePacks.size);
    // Again: from the cache.
    for (const [i, id] of treeIds.entries()) expect((await r.loadBlob('tree', id)).equals(trees[i]!)).toBe(true);
    expect(c.reads()).toBe(treePacks.size);
    await r.close();
  });

  it('a corrupted tree pack fails with IntegrityError for the damaged blob only', async () => {
    const st = new MemStorage();
    const { trees, treeIds } = await fill(st);
    const r = await Repository.open(st, { keyFile: kf });
    await r.loadIndex();
    const bad = treeIds[7]!;
    const loc = r.index.get(bad)!;
    st.objects.get(`data/${loc.pack.slice(0, 2)}/${loc.pack}`)!.data[loc.offset + Math.floor(loc.length / 2)] ^= 0x55;
    await expect(r.loadBlob('tree', bad)).rejects.toBeInstanceOf(IntegrityError);
    // Its neighbours in the same cached pack still load and verify.
    for (const i of [6, 8]) {
      if (r.index.get(treeIds[i]!)!.pack === loc.pack) expect((await r.loadBlob('tree', treeIds[i]!)).equals(trees[i]!)).toBe(true);
    }
    await expect(r.loadBlob('tree', bad)).rejects.toBeInstanceOf(IntegrityError);
    await r.close();
  });

  it('rebuilds the index from a repository with tree packs', async () => {
    const { rebuildIndex } = await import('../../src/repository/rebuild.js');
    const st = new MemStorage();
    const { trees, data, treeIds, dataIds } = await fill(st);
    for (const k of [...st.objects.keys()].filter((k) => k.startsWith('index/'))) st.objects.delete(k);
    const r = await Repository.open(st, { keyFile: kf });
    const res = await rebuildIndex(r);
    expect(res.unreadablePacks).toEqual([]);
    await r.close();
    const r2 = await Repository.open(st, { keyFile: kf });
    await r2.loadIndex();
    for (const [i, id] of treeIds.entries()) expect((await r2.loadBlob('tree', id)).equals(trees[i]!)).toBe(true);
    for (const [i, id] of dataIds.entries()) expect((await r2.loadBlob('data', id)).equals(data[i]!)).toBe(true);
    await expect(r2.loadBlob('data', treeIds[0]!)).rejects.toBeInstanceOf(IntegrityError);
    await r2.close();
  });
});

describe('windowed reads of small data blobs', () => {
  it('reads neighbouring small blobs with one request per window and still verifies each', async () => {
    const st = new MemStorage();
    const repo = await Repository.init(st, { packSize: 1 << 20 });
    const blobs = Array.from({ length: 200 }, (_, i) => randomBytes(1000 + i));
    const ids = (await Promise.all(blobs.map((b) => repo.saveBlob('data', b)))).map((r) => r.id);
    const big = randomBytes(600 << 10);
    const bigId = (await repo.saveBlob('data', big)).id;
    await repo.flush();
    await repo.close();
    const r = await Repository.open(st);
    await r.loadIndex();
    let reads = 0;
    const get = st.get.bind(st);
    st.get = (key, range) => {
      if (key.startsWith('data/')) reads++;
      return get(key, range);
    };
    for (const [i, id] of ids.entries()) expect((await r.loadBlob('data', id)).equals(blobs[i]!)).toBe(true);
    const packs = new Set(ids.map((id) => r.index.get(id)!.pack));
    expect(reads).toBe(packs.size);
    expect((await r.loadBlob('data', bigId)).equals(big)).toBe(true);
    // A damaged blob inside a window is still caught.
    const victim = ids[50]!;
    const loc = r.index.get(victim)!;
    const r2 = await Repository.open(st);
    await r2.loadIndex();
    st.objects.get(`data/${loc.pack.slice(0, 2)}/${loc.pack}`)!.data[loc.offset + 3] ^= 0x10;
    await expect(r2.loadBlob('data', victim)).rejects.toBeInstanceOf(IntegrityError);
    expect((await r2.loadBlob('data', ids[51]!)).equals(blobs[51]!)).toBe(true);
    await r.close();
    await r2.close();
  });
});
