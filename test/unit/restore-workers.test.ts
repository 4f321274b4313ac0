/**
 * File-engine restore on the writer threads ("stored" mode) against a real
 * repository on local storage: the threads read blobs from the packs
 * themselves (O_DIRECT where the filesystem takes it), decode, verify and
 * write them. Compared with the main-thread path (writers: 0) and checked
 * against damaged blobs, a missing pack and descriptor leaks.
 *
 * Everything lives under /var/tmp: /tmp may be a tmpfs, which refuses O_DIRECT
 * (and so would only test the buffered fallback).
 */
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import { join } from 'node:path';
import { backupTree } from '../../engines/file/backup.js';
import { restoreTree, type RestoreResult } from '../../engines/file/restore.js';
import type { TreeNode } from '../../engines/file/tree.js';
import { loadTree, walkTree } from '../../engines/file/walk.js';
import { packKey } from '../../src/repository/pack.js';
import { Repository } from '../../src/repository/repository.js';
import { LocalStorage } from '../../src/storage/local.js';
import { keyFile } from '../helpers/keyfile.js';
import { memContext } from '../helpers/memstore.js';
import { expectSameTree, snapshot, type Entry } from '../helpers/tree-compare.js';

const MiB = 1 << 20;
const SMALL_FILES = 240;
const BIG = { 'big-1.bin': 12 * MiB, 'big-2.bin': 16 * MiB, 'big-3.bin': 20 * MiB } as const;
const SPARSE_SIZE = 64 * MiB;
/** Descriptors a restore may leave behind without leaking (vitest's own traffic). */
const FD_SLACK = 2;

let work: string;
let src: string;
let srcSnap: Map<string, Entry>;
let seq = 0;

function dir(name: string): string {
  const d = join(work, `${name}-${++seq}`);
  fs.mkdirSync(d, { recursive: true });
  return d;
}

function openFds(): number {
  return fs.readdirSync('/proc/self/fd').length;
}

/**
 * At most FD_SLACK more descriptors than `before`. A thread that is still exiting holds its event
 * loop's descriptors for a moment (a loaded CI machine once saw +3), so the count gets 2 s to settle;
 * a real leak stays.
 */
async function expectNoFdLeak(before: number): Promise<void> {
  for (let i = 0; i < 20 && openFds() > before + FD_SLACK; i++) await new Promise((r) => setTimeout(r, 100));
  expect(openFds(), fdTargets()).toBeLessThanOrEqual(before + FD_SLACK);
}

/** What the open descriptors are (for the message of a failed leak check). */
function fdTargets(): string {
  return fs
    .readdirSync('/proc/self/fd')
    .map((fd) => {
      try {
        return `${fd}→${fs.readlinkSync(`/proc/self/fd/${fd}`)}`;
      } catch {
        return `${fd}→?`;
      }
    })
    .join(' ');
}

/** Many small files, one single-chunk medium file, multi-chunk big files, a sparse file, an empty file, a symlink. */
function buildSource(): string {
  const s = dir('src');
  for (let i = 0; i < SMALL_FILES; i++) {
    const d = join(s, 'small', `d${i % 6}`);
    fs.mkdirSync(d, { recursive: true });
    fs.writeFileSync(join(d, `f${String(i).padStart(3, '0')}`), randomBytes(1 + ((i * 7919) % 9000)));
  }
  fs.writeFileSync(join(s, 'medium.bin'), randomBytes(300_000));
  for (const [name, size] of Object.entries(BIG)) fs.writeFileSync(join(s, name), randomBytes(size));
  const fd = fs.openSync(join(s, 'sparse.img'), 'w');
  fs.ftruncateSync(fd, SPARSE_SIZE);
  for (const off of [0, 20 * MiB, SPARSE_SIZE - MiB]) fs.writeSync(fd, randomBytes(MiB), 0, MiB, off);
  fs.closeSync(fd);
  fs.writeFileSync(join(s, 'empty'), '');
  fs.symlinkSync('small/d0/f000', join(s, 'link'));
  return s;
}

/** The file nodes of a backup, by path. */
async function fileNodes(repo: Repository, root: string): Promise<Map<string, TreeNode>> {
  const out = new Map<string, TreeNode>();
  const signal = new AbortController().signal;
  for await (const ev of walkTree(repo, await loadTree(repo, root), undefined, signal)) {
    if (ev.kind === 'node' && ev.node.type === 'file') out.set(ev.rel, ev.node);
  }
  return out;
}

/** The snapshot without some paths. */
function without(snap: Map<string, Entry>, paths: Iterable<string>): Map<string, Entry> {
  const out = new Map(snap);
  for (const p of paths) out.delete(p);
  return out;
}

beforeAll(() => {
  work = fs.mkdtempSync(join('/var/tmp', 'pf-rw-'));
  src = buildSource();
  srcSnap = snapshot(src);
  // The source really is sparse, or the check on the restored copy means nothing.
  expect(fs.statSync(join(src, 'sparse.img')).blocks * 512).toBeLessThan(8 * MiB);
});

afterAll(() => {
  if (work) fs.rmSync(work, { recursive: true, force: true });
});

describe.each([
  ['unencrypted', false],
  ['encrypted', true],
])('restore on writer threads from a local repository (%s)', (_name, encrypted) => {
  let repoDir: string;
  let kf: string | undefined;
  let root: string;

  beforeAll(async () => {
    kf = encrypted ? keyFile(dir('key')) : undefined;
    repoDir = dir('repo');
    const repo = await Repository.init(new LocalStorage(repoDir), { keyFile: kf });
    const ctx = memContext(repo);
    const res = await backupTree(src, {}, ctx);
    expect(res.stats.errors).toBe(0);
    expect(ctx.log.warnings).toEqual([]);
    await repo.flush();
    await repo.close();
    root = res.root;
  }, 60_000);

  /** The repository (or a copy of it, to damage) opened afresh with its index loaded. */
  async function open(copy: boolean): Promise<{ repo: Repository; storage: LocalStorage }> {
    let d = repoDir;
    if (copy) {
      d = dir('repo-copy');
      fs.cpSync(repoDir, d, { recursive: true });
    }
    const storage = new LocalStorage(d);
    const repo = await Repository.open(storage, { keyFile: kf });
    await repo.loadIndex();
    return { repo, storage };
  }

  it('restores every file, equal to the source and sparse, with writer threads and without', async () => {
    const { repo } = await open(false);
    try {
      const nodes = await fileNodes(repo, root);
      // The large-file path is what is under test: the big files have several chunks each.
      for (const name of Object.keys(BIG)) expect(nodes.get(name)!.content!.length, name).toBeGreaterThan(2);
      expect(nodes.get('sparse.img')!.holes!.length).toBeGreaterThan(0);
      const expected = { files: SMALL_FILES + 6, symlinks: 1, errors: 0, damaged: 0, skipped: 0 };

      // Writer threads (default count): blobs located in their packs, read by the threads.
      const locate = vi.spyOn(repo, 'locateStored');
      const load = vi.spyOn(repo, 'loadBlob');
      const dst = dir('dst-writers');
      const ctx = memContext(repo);
      const fds = openFds();
      const r = await restoreTree(root, dst, {}, ctx);
      await expectNoFdLeak(fds);
      expect(ctx.log.warnings).toEqual([]);
      expect(r).toMatchObject(expected);
      expect(locate.mock.calls.length).toBeGreaterThan(SMALL_FILES);
      expect(load.mock.calls.every(([type]) => type === 'tree')).toBe(true);
      expectSameTree(srcSnap, snapshot(dst));
      const st = fs.statSync(join(dst, 'sparse.img'));
      expect(st.size).toBe(SPARSE_SIZE);
      expect(st.blocks * 512).toBeLessThan(8 * MiB);

      // The main thread alone: every blob through loadBlob.
      locate.mockClear();
      load.mockClear();
      const dst0 = dir('dst-main');
      const ctx0 = memContext(repo);
      const r0 = await restoreTree(root, dst0, { writers: 0 }, ctx0);
      await expectNoFdLeak(fds);
      expect(ctx0.log.warnings).toEqual([]);
      expect(r0).toMatchObject(expected);
      expect(locate).not.toHaveBeenCalled();
      expect(load.mock.calls.filter(([type]) => type === 'data').length).toBeGreaterThan(SMALL_FILES);
      expectSameTree(srcSnap, snapshot(dst0));
      const st0 = fs.statSync(join(dst0, 'sparse.img'));
      expect(st0.size).toBe(SPARSE_SIZE);
      expect(st0.blocks * 512).toBeLessThan(8 * MiB);
      locate.mockRestore();
      load.mockRestore();
    } finally {
      await repo.close();
    }
  }, 60_000);

  it('reports damaged blobs of small and large files, restores everything else intact, leaks no descriptor', async () => {
    const { repo, storage } = await open(true);
    try {
      const nodes = await fileNodes(repo, root);
      // One byte flipped in the middle of the stored bytes of one blob per file: single-blob files
      // (the batch writers) and the first, a middle and the last chunk of large files (the
      // chunk-by-chunk writers). Several large files, so that a descriptor leaked per damaged
      // file is more than the slack allowed for.
      const pick = (rel: string, which: (n: number) => number) => {
        const c = nodes.get(rel)!.content!;
        return { rel, id: c[which(c.length)]! };
      };
      const damaged = [
        pick('small/d3/f045', () => 0),
        pick('small/d0/f000', () => 0),
        pick('medium.bin', () => 0),
        pick('big-1.bin', (n) => n - 1),
        pick('big-2.bin', (n) => n >> 1),
        pick('big-3.bin', () => 0),
        pick('sparse.img', (n) => n - 1),
      ];
      for (const d of damaged.slice(0, 3)) expect(nodes.get(d.rel)!.content, d.rel).toHaveLength(1);
      for (const { id } of damaged) {
        const loc = repo.index.get(id)!;
        expect(loc.type).toBe('data');
        const fd = fs.openSync(storage.localPath(packKey(loc.pack)), 'r+');
        const pos = loc.offset + (loc.length >> 1);
        const b = Buffer.alloc(1);
        fs.readSync(fd, b, 0, 1, pos);
        b[0] ^= 0x5a;
        fs.writeSync(fd, b, 0, 1, pos);
        fs.closeSync(fd);
      }
      const names = damaged.map((d) => d.rel);

      const check = (r: RestoreResult, warnings: string[], dst: string) => {
        expect(r.damaged).toBe(damaged.length);
        expect(r.errors).toBeGreaterThanOrEqual(damaged.length);
        expect(r.files).toBe(SMALL_FILES + 6 - damaged.length);
        const text = warnings.join('\n');
        for (const { rel, id } of damaged) expect(warnings.some((w) => w.includes(rel) && w.includes(id)), `${rel} ${id} in\n${text}`).toBe(true);
        const got = snapshot(dst);
        // Never a damaged file that looks whole.
        for (const p of names) expect(got.get(p)?.sha, p).not.toBe(srcSnap.get(p)!.sha);
        expectSameTree(without(srcSnap, names), without(got, names));
      };

      const dst = dir('dst-corrupt');
      const ctx = memContext(repo);
      const fds = openFds();
      const r = await restoreTree(root, dst, {}, ctx);
      await expectNoFdLeak(fds);
      check(r, ctx.log.warnings, dst);

      // The main-thread path counts the same.
      const dst0 = dir('dst-corrupt-main');
      const ctx0 = memContext(repo);
      const r0 = await restoreTree(root, dst0, { writers: 0 }, ctx0);
      await expectNoFdLeak(fds);
      check(r0, ctx0.log.warnings, dst0);
    } finally {
      await repo.close();
    }
  }, 60_000);

  it('reports the files of a missing pack and restores the files of the other packs', async () => {
    const { repo, storage } = await open(true);
    try {
      const nodes = await fileNodes(repo, root);
      // Which files lose a blob with each data pack (the layout depends on the random data and on
      // the order compression finishes). The pack to delete keeps at least one big file intact
      // and, where the layout allows it, takes blobs of both a big file and a single-blob file,
      // so that both the large-file and the small-file readers meet the missing pack.
      const byPack = new Map<string, Set<string>>();
      for (const [rel, n] of nodes) {
        for (const id of n.content ?? []) {
          const p = repo.index.get(id)!.pack;
          if (!byPack.has(p)) byPack.set(p, new Set());
          byPack.get(p)!.add(rel);
        }
      }
      const keepsBig = (a: Set<string>) => Object.keys(BIG).some((b) => !a.has(b));
      const both = (a: Set<string>) => [...a].some((p) => p in BIG) && [...a].some((p) => nodes.get(p)!.content!.length === 1);
      const candidates = [...byPack].filter(([, a]) => keepsBig(a));
      const [pack, affected] = candidates.find(([, a]) => both(a)) ?? candidates[0]!;
      expect(affected.size).toBeGreaterThan(0);
      expect(nodes.size - affected.size).toBeGreaterThan(1);
      fs.unlinkSync(storage.localPath(packKey(pack)));

      const dst = dir('dst-missing');
      const ctx = memContext(repo);
      const fds = openFds();
      const r = await restoreTree(root, dst, {}, ctx);
      await expectNoFdLeak(fds);
      expect(r.errors).toBeGreaterThanOrEqual(affected.size);
      expect(r.damaged).toBeGreaterThanOrEqual(affected.size);
      expect(r.files).toBe(SMALL_FILES + 6 - affected.size);
      const text = ctx.log.warnings.join('\n');
      for (const p of affected) expect(text).toContain(p);
      // Everything else, the symlink too (whether or not its target was restored), as in the source.
      const skip = [...affected];
      expectSameTree(without(srcSnap, skip), without(snapshot(dst), skip));
    } finally {
      await repo.close();
    }
  }, 60_000);
});
