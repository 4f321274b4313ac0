import { randomBytes } from 'node:crypto';
import { mkdtempSync, readdirSync, utimesSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { referencedBlobs } from '../../src/jobs/references.js';
import { applyRetention } from '../../src/jobs/retention.js';
import { checkRepository } from '../../src/repository/check.js';
import type { Manifest } from '../../src/repository/manifest.js';
import { prune } from '../../src/repository/prune.js';
import { Repository } from '../../src/repository/repository.js';
import { emptyStats } from '../../src/repository/types.js';
import { encodeTree } from '../../engines/file/tree.js';
import { MemStorage } from '../helpers/memstorage.js';
import { LocalStorage } from '../../src/storage/local.js';

function m(id: string, name: string, ts: string, root = '0'.repeat(64)): Manifest {
  return { version: 1, id, name, host: 'h', engine: 'file', root, source: { kind: 'path', path: '/x' }, dataTimestamp: ts, startedAt: ts, finishedAt: ts, stats: emptyStats(), tags: {} };
}

describe('retention', () => {
  const days = Array.from({ length: 10 }, (_, i) => m(`${i}`.padStart(16, '0'), 'a', new Date(Date.UTC(2026, 10, 1 + i, 12)).toISOString()));
  const twiceADay = days.map((d, i) => m(`${i + 100}`.padStart(16, '0'), 'a', new Date(Date.parse(d.dataTimestamp) + 3600_000).toISOString()));

  it.each([
    [{ last: 3 }, 3],
    [{ daily: 4 }, 4],
    [{ last: 1, daily: 3 }, 3],
    [{ weekly: 2 }, 2],
    [{ monthly: 5 }, 1],
  ])('%j keeps %i of 20', (policy, kept) => {
    const r = applyRetention([...days, ...twiceADay], policy);
    expect(r.keep.size).toBe(kept);
    expect(r.forget.length).toBe(20 - kept);
  });

  it('keeps the newest of each day, and never mixes series', () => {
    const r = applyRetention([...days, ...twiceADay, m('f'.repeat(16), 'b', days[0]!.dataTimestamp)], { daily: 1 });
    expect([...r.keep.keys()].sort()).toEqual(['0000000000000109', 'f'.repeat(16)]);
  });
});

describe('prune', () => {
  async function backup(repo: Repository, data: Buffer[], name: string): Promise<Manifest> {
    const ids = await Promise.all(data.map((d) => repo.saveBlob('data', d)));
    const tree = encodeTree({ nodes: [{ name: 'f', type: 'file', mode: 0o644, uid: 0, gid: 0, size: 1, mtimeNs: '0', ctimeNs: '0', atimeNs: '0', inode: '1', content: ids.map((i) => i.id) }] } as never);
    const root = await repo.saveBlob('tree', tree);
    await repo.flush();
    const man = m(Repository.newBackupId(), name, new Date().toISOString(), root.id);
    await repo.saveManifest(man);
    return man;
  }

  it('removes the temporary pack file of a killed backup (local storage), once it is stale', async () => {
    const root = mkdtempSync(join(tmpdir(), 'pf-prune-'));
    const st = new LocalStorage(root);
    const repo = await Repository.init(st, { packSize: 16 << 10 });
    await backup(repo, [randomBytes(20_000)], 'n');
    // What a backup killed halfway leaves: a staged pack never committed.
    st.stage().append(randomBytes(5000));
    const temps = () => readdirSync(root).filter((n) => n.includes('.tmp-'));
    expect(temps()).toHaveLength(1);
    const refs = (x: Manifest) => referencedBlobs(repo, x);
    expect((await prune(repo, { forget: [], references: refs, graceMs: 0 })).tempFilesRemoved).toBe(0);
    const old = new Date(Date.now() - 2 * 3600_000);
    utimesSync(join(root, temps()[0]!), old, old);
    expect((await prune(repo, { forget: [], references: refs, graceMs: 0 })).tempFilesRemoved).toBe(1);
    expect(temps()).toHaveLength(0);
    await repo.close();
    const again = await Repository.open(st);
    expect((await checkRepository(again, { readData: true, references: (x) => referencedBlobs(again, x) })).errors).toEqual([]);
    await again.close();
  });

  it('deletes only what no remaining backup references, after the grace period', async () => {
    const st = new MemStorage();
    const repo = await Repository.init(st, { packSize: 16 << 10 });
    const shared = randomBytes(20_000);
    const a = await backup(repo, [shared, randomBytes(20_000)], 'n');
    const b = await backup(repo, [shared, randomBytes(20_000)], 'n');
    const refs = (x: Manifest) => referencedBlobs(repo, x);
    const inGrace = await prune(repo, { forget: [a], references: refs, graceMs: 3600_000 });
    expect(inGrace.packsDeleted).toBe(0);
    const res = await prune(repo, { forget: [], references: refs, graceMs: 0 });
    expect(res.packsDeleted).toBeGreaterThan(0);
    await repo.close();
    const again = await Repository.open(st);
    const check = await checkRepository(again, { readData: true, references: (x) => referencedBlobs(again, x) });
    expect(check.errors).toEqual([]);
    expect(check.backups).toBe(1);
    expect((await again.loadManifests()).map((x) => x.id)).toEqual([b.id]);
    await again.close();
  });
});
