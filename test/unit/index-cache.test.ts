import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it, vi } from 'vitest';
import { MasterIndex } from '../../src/repository/index.js';
import { indexCachePath } from '../../src/repository/index-cache.js';
import type { PackEntry } from '../../src/repository/pack.js';
import { Repository } from '../../src/repository/repository.js';
import { keyFile } from '../helpers/keyfile.js';
import { MemStorage } from '../helpers/memstorage.js';

const dirs: string[] = [];
afterAll(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));
function tmp(): string {
  const d = mkdtempSync(join(tmpdir(), 'pf-idxc-'));
  dirs.push(d);
  return d;
}
const hex = () => randomBytes(32).toString('hex');

describe('MasterIndex (typed-array table)', () => {
  it('finds every blob after many resizes, first location wins, absent and malformed IDs are not found', () => {
    const idx = new MasterIndex();
    const packs = [hex(), hex(), hex()];
    const all: PackEntry[][] = packs.map(() => []);
    for (let i = 0; i < 30000; i++) all[i % 3]!.push([hex(), i % 7 === 0 ? 't' : 'd', i * 10, 10 + (i % 5), 20 + i, i % 2]);
    packs.forEach((p, i) => idx.addPack(p, all[i]!));
    expect(idx.size).toBe(30000);
    packs.forEach((p, i) => {
      for (const [id, t, offset, length, rawLength, flags] of all[i]!) {
        expect(idx.get(id)).toEqual({ pack: p, type: t === 'd' ? 'data' : 'tree', offset, length, rawLength, flags });
      }
    });
    const dup = all[0]![5]!;
    idx.addPack(hex(), [[dup[0], 'd', 1, 1, 1, 0]]);
    expect(idx.get(dup[0])!.pack).toBe(packs[0]);
    expect(idx.size).toBe(30000);
    expect(idx.has(hex())).toBe(false);
    expect(idx.has(dup[0].slice(0, 62))).toBe(false);
    expect(idx.has('zz' + dup[0].slice(2))).toBe(false);
    const seen = new Set<string>();
    for (const [id, loc] of idx.entries()) {
      expect(seen.has(id)).toBe(false);
      seen.add(id);
      expect(idx.get(id)).toEqual(loc);
    }
    expect(seen.size).toBe(30000);
    const last = all[2]!.reduce((m, e) => Math.max(m, e[2] + e[3]), 0);
    expect(idx.packInfo(packs[2]!)).toEqual({ blobsEnd: last, hasData: true });
    expect(idx.packInfo(hex())).toBeUndefined();
  });
});

describe('index cache in the state directory', () => {
  async function setup(encrypted: boolean) {
    const st = new MemStorage();
    const kf = encrypted ? keyFile() : undefined;
    const repo = await Repository.init(st, { keyFile: kf, packSize: 64 << 10 });
    const ids: string[] = [];
    for (let round = 0; round < 3; round++) {
      for (let i = 0; i < 40; i++) ids.push((await repo.saveBlob('data', randomBytes(3000))).id);
      await repo.flush();
    }
    await repo.close();
    return { st, kf, ids, repoId: repo.config.id };
  }

  for (const encrypted of [false, true]) {
    it(`is written, then read instead of the index files, and gives the same index (${encrypted ? 'encrypted' : 'plain'})`, async () => {
      const { st, kf, ids, repoId } = await setup(encrypted);
      const cacheDir = tmp();
      const plain = await Repository.open(st, { keyFile: kf });
      await plain.loadIndex();
      const first = await Repository.open(st, { keyFile: kf, cacheDir });
      await first.loadIndex();
      // Written when the session closes.
      const path = indexCachePath(cacheDir, repoId);
      expect(existsSync(path)).toBe(false);
      await first.close();
      expect(existsSync(path)).toBe(true);
      const get = vi.spyOn(st, 'get');
      const second = await Repository.open(st, { keyFile: kf, cacheDir });
      await second.loadIndex();
      expect(get.mock.calls.filter(([k]) => String(k).startsWith('index/'))).toHaveLength(0);
      get.mockRestore();
      expect(second.index.size).toBe(plain.index.size);
      for (const id of ids) expect(second.index.get(id)).toEqual(plain.index.get(id));
      expect([...second.index.files].sort()).toEqual([...plain.index.files].sort());
      expect(second.index.packIds().sort()).toEqual(plain.index.packIds().sort());
    });
  }

  it('is ignored when an index file it covers is gone, and takes new index files in addition', async () => {
    const { st, kf, ids } = await setup(false);
    const cacheDir = tmp();
    const a = await Repository.open(st, { keyFile: kf, cacheDir });
    await a.loadIndex();
    await a.close();
    // A new index file after the cache was written: read from the repository, cache rewritten.
    const w = await Repository.open(st, { keyFile: kf });
    await w.loadIndex();
    const extra = (await w.saveBlob('data', randomBytes(4000))).id;
    await w.flush();
    const b = await Repository.open(st, { keyFile: kf, cacheDir });
    await b.loadIndex();
    expect(b.index.has(extra)).toBe(true);
    await b.close();
    const get = vi.spyOn(st, 'get');
    const c = await Repository.open(st, { keyFile: kf, cacheDir });
    await c.loadIndex();
    expect(get.mock.calls.filter(([k]) => String(k).startsWith('index/'))).toHaveLength(0);
    get.mockRestore();
    expect(c.index.has(extra)).toBe(true);
    // Drop the index file naming the extra blob (as a prune that replaced it would).
    const victim = [...c.index.files].find((f) => f !== undefined && !a.index.files.has(f))!;
    await st.delete(`index/${victim}`);
    const d = await Repository.open(st, { keyFile: kf, cacheDir });
    await d.loadIndex();
    expect(d.index.has(extra)).toBe(false);
    for (const id of ids) expect(d.index.has(id)).toBe(true);
  });

  it('is ignored when damaged or made with another key, and never used by loadIndex(onError)', async () => {
    const { st, kf, ids, repoId } = await setup(true);
    const cacheDir = tmp();
    const a = await Repository.open(st, { keyFile: kf, cacheDir });
    await a.loadIndex();
    await a.close();
    const path = indexCachePath(cacheDir, repoId);
    const good = readFileSync(path);
    for (const bad of [Buffer.concat([good.subarray(0, 1000), Buffer.from([good[1000]! ^ 1]), good.subarray(1001)]), good.subarray(0, good.length - 7)]) {
      writeFileSync(path, bad);
      const r = await Repository.open(st, { keyFile: kf, cacheDir });
      await r.loadIndex();
      for (const id of ids) expect(r.index.has(id)).toBe(true);
      await r.close();
      // Rewritten whole from the index files.
      expect(readFileSync(path).length).toBe(good.length);
    }
    // Another repository's cache copied under this repository's name.
    const other = await setup(true);
    const od = tmp();
    const o = await Repository.open(other.st, { keyFile: other.kf, cacheDir: od });
    await o.loadIndex();
    await o.close();
    writeFileSync(path, readFileSync(indexCachePath(od, other.repoId)));
    const r = await Repository.open(st, { keyFile: kf, cacheDir });
    await r.loadIndex();
    for (const id of other.ids) expect(r.index.has(id)).toBe(false);
    for (const id of ids) expect(r.index.has(id)).toBe(true);
    // check/repair: every index file is read, the cache is not.
    const errors: string[] = [];
    const victim = [...r.index.files][0]!;
    await st.put(`index/${victim}`, Buffer.from('garbage'));
    const c = await Repository.open(st, { keyFile: kf, cacheDir });
    await c.loadIndex((_id, err) => errors.push((err as Error).message));
    expect(errors).toHaveLength(1);
  });

  it("covers the index files a session wrote itself, and only once they name everything it holds", async () => {
    const { st, kf } = await setup(false);
    const cacheDir = tmp();
    const indexGets = (spy: { mock: { calls: unknown[][] } }) => spy.mock.calls.filter(([k]) => String(k).startsWith('index/')).length;
    // A backup-like session: loads the index, saves blobs, flushes, closes.
    const w = await Repository.open(st, { keyFile: kf, cacheDir });
    await w.loadIndex();
    const added: string[] = [];
    for (let i = 0; i < 30; i++) added.push((await w.saveBlob('data', randomBytes(3000))).id);
    await w.flush();
    await w.close();
    // The next session reads no index file at all, its own included.
    let get = vi.spyOn(st, 'get');
    const n = await Repository.open(st, { keyFile: kf, cacheDir });
    await n.loadIndex();
    expect(indexGets(get)).toBe(0);
    get.mockRestore();
    for (const id of added) expect(n.index.has(id)).toBe(true);
    await n.close();
    // Another agent (no cache here) adds an index file: the next session here reads it, so its
    // cache is behind.
    const o = await Repository.open(st, { keyFile: kf });
    await o.loadIndex();
    await o.saveBlob('data', randomBytes(5000));
    await o.flush();
    await o.close();
    const before = readFileSync(indexCachePath(cacheDir, w.config.id));
    // A session that ends with a durable pack no index file names yet (its flush never came):
    // the cache stays as it was, it must not claim blobs the index files do not name.
    const f = await Repository.open(st, { keyFile: kf, cacheDir });
    await f.loadIndex();
    const packs = async () => {
      let k = 0;
      for await (const _ of st.list('data/')) k++;
      return k;
    };
    const had = await packs();
    for (let i = 0; i < 40; i++) await f.saveBlob('data', randomBytes(3000));
    // Packs of 64 KiB: wait until some are stored (none is indexed: no flush).
    for (let t = 0; t < 200 && (await packs()) === had; t++) await new Promise((r) => setTimeout(r, 10));
    expect(await packs()).toBeGreaterThan(had);
    await f.close();
    expect(readFileSync(indexCachePath(cacheDir, w.config.id)).equals(before)).toBe(true);
  });
});
