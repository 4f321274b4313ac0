/**
 * The directory cache of incrementals (engines/file/dircache.ts, backupTree's
 * `dirCache`): for every kind of change to a source tree, an incremental
 * through the cache gives the root tree, the statistics and the restore that
 * an incremental without it gives, loads no more parent trees, and leaves a
 * cache that describes the new backup. A cache that is damaged, was written
 * with other options or for another parent is ignored.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFileSync, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { backupTree, type BackupTreeOptions } from '../../engines/file/backup.js';
import { loadDirCache, type CachedDir } from '../../engines/file/dircache.js';
import { restoreTree } from '../../engines/file/restore.js';
import { listingFingerprint, nativeScanner, scanDir } from '../../engines/file/scan.js';
import { decodeTree } from '../../engines/file/tree.js';
import type { BackupStats, BlobId, BlobType } from '../../src/repository/types.js';
import { Blake3Hasher } from '../../src/util/blake3.js';
import { MemStore, memContext } from '../helpers/memstore.js';
import { expectSameTree, snapshot } from '../helpers/tree-compare.js';

const isRoot = process.getuid?.() === 0;
const hasAttr = spawnSync('getfattr', ['--version']).status === 0 && spawnSync('setfattr', ['--version']).status === 0;
const small = { minSize: 4096, avgSize: 16384, maxSize: 65536 };
/** Bytes of the cache file's MAC, after its JSON body. */
const MAC = 32;
const S_IFMT = 0o170000;
const S_IFDIR = 0o040000;
/**
 * Access time of every source entry: in the future, so that reading a file
 * never moves it (relatime moves it only when it is not after mtime and
 * ctime, or a day old), with or without O_NOATIME. Backups with and without
 * the cache then see the same source.
 */
const ATIME = 4_000_000_000;

/**
 * A MemStore with the repository's hash key (MemStore has `key` but no
 * `hashKey()`, and backupTree silently goes without the cache when the store
 * has none) that records the tree blobs loaded.
 */
class Repo extends MemStore {
  treeLoads: BlobId[] = [];

  hashKey(): Buffer {
    return this.key;
  }

  override async loadBlob(type: BlobType, id: BlobId): Promise<Buffer> {
    if (type === 'tree') this.treeLoads.push(id);
    return super.loadBlob(type, id);
  }

  /** An equivalent repository: the same key and blobs. */
  clone(): Repo {
    const r = new Repo(this.key);
    for (const [id, e] of this.blobs) r.blobs.set(id, { type: e.type, data: e.data });
    return r;
  }
}

let work: string;
beforeAll(() => {
  // Without the native scanner backupTree ignores dirCache and every test here would pass on the plain walk.
  if (!nativeScanner) {
    throw new Error(
      'the native scanner is not loaded (engines/file/native/build/Release/pfscan.node missing, or PERMAFROST_NO_NATIVE=1): ' +
        'build it with `npm run install` (node-gyp); the directory cache cannot be tested without it',
    );
  }
  work = fs.mkdtempSync(join(tmpdir(), 'pf-dircache-'));
});
afterAll(() => {
  if (work) fs.rmSync(work, { recursive: true, force: true });
});

let seq = 0;
function dir(name: string): string {
  const d = join(work, `${name}-${++seq}`);
  fs.mkdirSync(d, { recursive: true });
  return d;
}

/** A cache file in a directory that does not exist yet (saveDirCache makes it). */
function cachePath(): string {
  return join(work, `state-${++seq}`, 'cache', 'dirs');
}

function setfattr(p: string, name: string, value: string): void {
  execFileSync('setfattr', ['-h', '-n', name, '-v', value, p]);
}

/** Whole-second times on everything below and including `root`, contents before their directory; atime ATIME. */
function setTimes(root: string): void {
  let t = 1_600_000_000;
  const walk = (p: string) => {
    if (fs.lstatSync(p).isDirectory()) for (const n of fs.readdirSync(p).sort()) walk(join(p, n));
    fs.lutimesSync(p, ATIME, (t += 1000));
  };
  walk(root);
}

/**
 * A source tree: nested directories, files of several sizes (big.bin and
 * deep-big.bin span several chunks), symlinks, a hardlink pair alone in
 * links/ (the one directory the cache does not take on its fingerprint),
 * an empty directory and, with the attr tools, xattrs on a file and a
 * directory. 8 directories, 13 entries that count as files (11 regular).
 */
function buildSource(): string {
  const src = dir('src');
  const w = (rel: string, data: string | Buffer) => fs.writeFileSync(join(src, rel), data);
  for (const d of ['a/b/c', 'a/empty', 'links', 'x/y']) fs.mkdirSync(join(src, d), { recursive: true });
  w('top.txt', 'top\n');
  w('big.bin', randomBytes(300_000));
  fs.symlinkSync('top.txt', join(src, 'link-top'));
  w('a/mid.txt', 'm'.repeat(5000));
  w('a/b/b.txt', 'bee\n');
  w('a/b/c/deep.txt', 'deep'.repeat(100));
  w('a/b/c/deep-big.bin', randomBytes(200_000));
  fs.symlinkSync('deep.txt', join(src, 'a/b/c/deep-link'));
  w('links/h1', 'linked\n');
  fs.linkSync(join(src, 'links/h1'), join(src, 'links/h2'));
  w('x/x1.txt', 'x one\n');
  w('x/x2.txt', 'x two\n');
  w('x/y/y1.txt', 'y one\n');
  if (hasAttr) {
    setfattr(join(src, 'a/mid.txt'), 'user.color', 'blue');
    setfattr(join(src, 'x'), 'user.dir', 'on a dir');
  }
  setTimes(src);
  return src;
}

/** What the tests pass to every backup of a case besides parentRoot and dirCache. */
type Opts = Pick<BackupTreeOptions, 'excludes' | 'oneFileSystem'>;

interface Run {
  root: BlobId;
  stats: BackupStats;
  /** The log (debug lines included). */
  lines: string[];
  /** Tree blobs loaded, in order. */
  treeLoads: BlobId[];
}

/** A backup with one reader thread (the threaded path, quicker to start than the default four) and, unless `warns`, no warning. */
async function backup(store: Repo, src: string, opts: BackupTreeOptions = {}, warns = false): Promise<Run> {
  store.treeLoads = [];
  const ctx = memContext(store);
  // Files of 150 kB and more (big.bin, deep-big.bin) are read ahead when they changed: every case exercises prereads.
  const res = await backupTree(src, { chunker: small, readers: 1, prereadMin: 150_000, ...opts }, ctx);
  if (!warns) expect(ctx.log.warnings).toEqual([]);
  return { root: res.root, stats: res.stats, lines: ctx.log.lines, treeLoads: [...store.treeLoads] };
}

/** The number of parent directories the backup's cache held, undefined when it used none. */
function cacheUsed(run: Run): number | undefined {
  for (const l of run.lines) {
    const m = /^debug: directory cache: (\d+) directories[ ,]/.exec(l);
    if (m) return Number(m[1]);
  }
  return undefined;
}

/** The tree blob of every directory of a backup by relative path ('' for the root), read without counting. */
function treeIds(store: Repo, root: BlobId): Map<string, BlobId> {
  const out = new Map<string, BlobId>([['', root]]);
  const walk = (id: BlobId, rel: string) => {
    for (const n of decodeTree(store.blobs.get(id)!.data).nodes) {
      if (n.type !== 'dir') continue;
      const r = rel === '' ? n.name : `${rel}/${n.name}`;
      out.set(r, n.subtree!);
      walk(n.subtree!, r);
    }
  };
  walk(root, '');
  return out;
}

/** Restore a backup and compare it with the source (less what is below `omit`), xattrs included. */
async function expectRestores(store: Repo, root: BlobId, src: string, omit?: string): Promise<void> {
  const dst = dir('dst');
  const r = await restoreTree(root, dst, { writers: 0 }, memContext(store));
  expect(r.errors).toBe(0);
  const want = snapshot(src);
  if (omit !== undefined) for (const k of want.keys()) if (k.startsWith(omit + '/')) want.delete(k);
  expectSameTree(want, snapshot(dst), { owners: isRoot });
  if (hasAttr && omit === undefined) {
    const dump = (d: string) => execFileSync('getfattr', ['-R', '-d', '-h', '-m', '-', '-e', 'base64', '.'], { cwd: d, encoding: 'utf8' });
    expect(dump(dst)).toBe(dump(src));
  }
}

function parseCache(path: string): { root: string; options: string } {
  const buf = fs.readFileSync(path);
  return JSON.parse(buf.subarray(0, buf.length - MAC).toString('utf8')) as { root: string; options: string };
}

/**
 * The cache file describes backup `root` of `src` as it is now: authentic,
 * one entry for every directory the walk lists but the root, each with the
 * directory's tree in that backup, the fingerprint of its listing now, and
 * `clean` unless it holds a hardlink. Returns its entries.
 */
async function expectCacheOf(store: Repo, src: string, path: string, root: BlobId, opts: Opts = {}): Promise<Map<string, CachedDir>> {
  const doc = parseCache(path);
  expect(doc.root).toBe(root);
  const dirs = loadDirCache(path, store.key, doc.options, root)?.dirs;
  expect(dirs, 'the cache loads with its own options and root').toBeDefined();
  const rootDev = fs.lstatSync(src).dev;
  const trees = treeIds(store, root);
  trees.delete('');
  expect([...dirs!.keys()].sort()).toEqual([...trees.keys()].sort());
  const hasher = Blake3Hasher.newKeyed(store.key);
  for (const [rel, d] of dirs!) {
    // One-file-system: a mount point is kept empty, not listed: recorded with its (empty) tree, never reusable alone.
    if (opts.oneFileSystem && fs.lstatSync(join(src, rel)).dev !== rootDev) {
      expect({ rel, tree: d.tree, fp: d.fp, clean: d.clean }).toEqual({ rel, tree: trees.get(rel), fp: '', clean: false });
      continue;
    }
    const listing = await scanDir(join(src, rel));
    const clean = !listing.entries.some((e) => (e.st!.mode & S_IFMT) !== S_IFDIR && e.st!.nlink > 1);
    const fp = listingFingerprint(hasher, listing.raw!, rootDev);
    expect({ rel, tree: d.tree, fp: d.fp, clean: d.clean }).toEqual({ rel, tree: trees.get(rel), fp, clean });
  }
  return dirs!;
}

/**
 * An incremental of `src` against `parentRoot` with the cache and, into an
 * equivalent repository, one without it: the same root and statistics.
 */
async function withAndWithout(store: Repo, src: string, cache: string, parentRoot: BlobId, opts: Opts = {}): Promise<{ withCache: Run; without: Run }> {
  const plain = store.clone();
  const withCache = await backup(store, src, { ...opts, parentRoot, dirCache: cache });
  const without = await backup(plain, src, { ...opts, parentRoot });
  expect(cacheUsed(without)).toBeUndefined();
  expect(withCache.root).toBe(without.root);
  expect(withCache.stats).toEqual(without.stats);
  return { withCache, without };
}

/** The tree blobs of `a`, all in `b`. */
function expectSubset(a: BlobId[], b: BlobId[]): void {
  expect([...new Set(a)].filter((id) => !b.includes(id))).toEqual([]);
}

/**
 * Backup 1 of `src` with the cache, `mutate`, then backup 2 with the cache
 * and, into an equivalent repository, without: same root and statistics, no
 * tree loaded that the plain one did not load, the cache rewritten for
 * backup 2, a restore equal to the source. Then backup 3 of the unchanged
 * source through the rewritten cache: backup 2's root, nothing read, and no
 * tree loaded but the root's and those of directories that are not clean.
 */
async function mutationCase(mutate: (src: string) => void, src = buildSource(), opts: Opts = {}, more: { omit?: string } = {}) {
  const cache = cachePath();
  const store = new Repo();
  const b1 = await backup(store, src, { ...opts, dirCache: cache });
  expect(b1.stats.errors).toBe(0);
  const dirs1 = await expectCacheOf(store, src, cache, b1.root, opts);
  mutate(src);
  const { withCache, without } = await withAndWithout(store, src, cache, b1.root, opts);
  expect(cacheUsed(withCache)).toBe(dirs1.size);
  expectSubset(withCache.treeLoads, without.treeLoads);
  const dirs = await expectCacheOf(store, src, cache, withCache.root, opts);

  const b3 = await backup(store, src, { ...opts, parentRoot: withCache.root, dirCache: cache });
  expect(b3.root).toBe(withCache.root);
  expect(b3.stats).toMatchObject({ filesRead: 0, blobsNew: 0, errors: 0, files: withCache.stats.files, dirs: withCache.stats.dirs });
  // Not clean: loaded again, except mount points of one-file-system (no fingerprint: never listed).
  const dirty = [...dirs.values()].filter((d) => !d.clean && d.fp !== '').map((d) => d.tree);
  expect(new Set(b3.treeLoads)).toEqual(new Set([withCache.root, ...dirty]));

  await expectRestores(store, withCache.root, src, more.omit);
  return { src, store, b1, withCache, without };
}

/** Put a file's atime and mtime back after `change`; its ctime moves all the same. */
function keepTimes(p: string, change: () => void): void {
  const st = fs.lstatSync(p, { bigint: true });
  change();
  fs.utimesSync(p, Number(st.atimeNs / 1_000_000_000n), Number(st.mtimeNs / 1_000_000_000n));
  const now = fs.lstatSync(p, { bigint: true });
  expect({ size: now.size, mtimeNs: now.mtimeNs, atimeNs: now.atimeNs }).toEqual({ size: st.size, mtimeNs: st.mtimeNs, atimeNs: st.atimeNs });
  expect(now.ctimeNs).not.toBe(st.ctimeNs);
}

interface Mutation {
  name: string;
  mutate: (src: string) => void;
  /** Run on the fresh source before backup 1. */
  prepare?: (src: string) => void;
  needs?: 'attr' | 'root';
}

const mutations: Mutation[] = [
  {
    name: 'in-place edit of a deep file, same size, atime and mtime put back',
    mutate: (src) => {
      const p = join(src, 'a/b/c/deep-big.bin');
      keepTimes(p, () => {
        const fd = fs.openSync(p, 'r+');
        const b = Buffer.alloc(1);
        fs.readSync(fd, b, 0, 1, 100_000);
        b[0]! ^= 0xff;
        fs.writeSync(fd, b, 0, 1, 100_000);
        fs.closeSync(fd);
      });
    },
  },
  {
    name: 'same-size rewrite of a small deep file, atime and mtime put back',
    mutate: (src) => {
      const p = join(src, 'a/b/c/deep.txt');
      keepTimes(p, () => fs.writeFileSync(p, 'DEEP'.repeat(100)));
    },
  },
  { name: 'append to a file', mutate: (src) => fs.appendFileSync(join(src, 'a/b/b.txt'), 'more bees\n') },
  { name: 'chmod of a file', mutate: (src) => fs.chmodSync(join(src, 'a/mid.txt'), 0o600) },
  { name: 'chmod of a directory', mutate: (src) => fs.chmodSync(join(src, 'a/b/c'), 0o700) },
  { name: 'chown of a file', needs: 'root', mutate: (src) => fs.lchownSync(join(src, 'x/y/y1.txt'), 1234, 5678) },
  { name: 'touch -d of a file (mtime only)', mutate: (src) => execFileSync('touch', ['-m', '-d', '@1500000000', join(src, 'x/y/y1.txt')]) },
  { name: 'touch -d of a file (atime only)', mutate: (src) => execFileSync('touch', ['-a', '-d', `@${ATIME + 1000}`, join(src, 'x/y/y1.txt')]) },
  {
    name: 'read a file whose atime is before its mtime (relatime moves atime, not ctime)',
    prepare: (src) => {
      const p = join(src, 'x/x1.txt');
      fs.utimesSync(p, 1_500_000_000, fs.statSync(p).mtime);
    },
    mutate: (src) => {
      const p = join(src, 'x/x1.txt');
      const st = fs.statSync(p, { bigint: true });
      fs.readFileSync(p);
      const now = fs.statSync(p, { bigint: true });
      expect(now.atimeNs, 'atime moved (the file system is not mounted noatime)').not.toBe(st.atimeNs);
      expect(now.ctimeNs).toBe(st.ctimeNs);
    },
  },
  { name: 'touch -d of a directory (mtime only)', mutate: (src) => execFileSync('touch', ['-m', '-d', '@1500000000', join(src, 'a/b')]) },
  { name: 'setfattr on a file', needs: 'attr', mutate: (src) => setfattr(join(src, 'x/y/y1.txt'), 'user.new', 'fresh') },
  { name: 'setfattr changing an xattr of a directory', needs: 'attr', mutate: (src) => setfattr(join(src, 'x'), 'user.dir', 'changed') },
  { name: 'add a file', mutate: (src) => fs.writeFileSync(join(src, 'a/b/c/new.txt'), 'new\n') },
  { name: 'delete a file', mutate: (src) => fs.rmSync(join(src, 'x/x2.txt')) },
  { name: 'rename a file', mutate: (src) => fs.renameSync(join(src, 'a/b/b.txt'), join(src, 'a/b/b-renamed.txt')) },
  {
    name: 'add a subdirectory with files',
    mutate: (src) => {
      fs.mkdirSync(join(src, 'a/b/c/new/inner'), { recursive: true });
      fs.writeFileSync(join(src, 'a/b/c/new/n1.txt'), 'n1');
      fs.writeFileSync(join(src, 'a/b/c/new/inner/n2.bin'), randomBytes(70_000));
    },
  },
  { name: 'remove a subdirectory', mutate: (src) => fs.rmSync(join(src, 'x/y'), { recursive: true }) },
  { name: 'rename a subdirectory', mutate: (src) => fs.renameSync(join(src, 'a/b'), join(src, 'a/b2')) },
  {
    name: 'replace a file by a symlink',
    mutate: (src) => {
      fs.rmSync(join(src, 'a/b/c/deep.txt'));
      fs.symlinkSync('../b.txt', join(src, 'a/b/c/deep.txt'));
    },
  },
  {
    name: 'retarget a symlink (a target of the same length)',
    mutate: (src) => {
      const p = join(src, 'a/b/c/deep-link');
      fs.rmSync(p);
      fs.symlinkSync('../b.txt', p); // 8 bytes, as 'deep.txt'
    },
  },
  { name: 'add a hardlink to an existing file', mutate: (src) => fs.linkSync(join(src, 'x/x1.txt'), join(src, 'a/b/c/x1-link')) },
];

describe('directory cache: an incremental through the cache equals one without it', () => {
  for (const m of mutations) {
    it(m.name, async (t) => {
      if (m.needs === 'attr' && !hasAttr) {
        console.warn(`skipped "${m.name}": needs getfattr/setfattr (the attr package)`);
        t.skip();
      }
      if (m.needs === 'root' && !isRoot) {
        console.warn(`skipped "${m.name}": needs root`);
        t.skip();
      }
      const src = buildSource();
      m.prepare?.(src);
      await mutationCase(m.mutate, src);
    });
  }

  it('no change: backup 2 loads no tree but the root and the hardlink directory', async () => {
    const { store, b1, withCache, without } = await mutationCase(() => {});
    const ids = treeIds(store, b1.root);
    expect(withCache.root).toBe(b1.root);
    expect(withCache.stats).toMatchObject({ files: 13, dirs: 8, filesUnchanged: 11, filesRead: 0, bytesRead: 0, blobsNew: 0 });
    expect(new Set(withCache.treeLoads)).toEqual(new Set([b1.root, ids.get('links')]));
    // Without the cache every directory's tree is loaded: the count above means something.
    expect(new Set(without.treeLoads)).toEqual(new Set(ids.values()));
  });

  it('a deep change loads only the trees on its path', async () => {
    const { store, b1, withCache } = await mutationCase((src) => fs.appendFileSync(join(src, 'a/b/c/deep.txt'), '!'));
    const ids = treeIds(store, b1.root);
    const ids2 = treeIds(store, withCache.root);
    expect(new Set(withCache.treeLoads)).toEqual(new Set(['', 'a', 'a/b', 'a/b/c', 'links'].map((r) => ids.get(r))));
    for (const r of ['a/empty', 'x', 'x/y', 'links']) expect({ r, same: ids2.get(r) === ids.get(r) }).toEqual({ r, same: true });
    for (const r of ['', 'a', 'a/b', 'a/b/c']) expect({ r, same: ids2.get(r) === ids.get(r) }).toEqual({ r, same: false });
  });

  describe('with a mount point in the tree', () => {
    /** A source with a tmpfs on a/mnt, unmounted after `fn`. */
    async function withMount(fn: (src: string) => Promise<void>, t: { skip: () => void }): Promise<void> {
      if (!isRoot) {
        console.warn('skipped: mounting a tmpfs needs root');
        t.skip();
      }
      const src = buildSource();
      const mnt = join(src, 'a/mnt');
      fs.mkdirSync(mnt);
      execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=4m', 'pf-dircache', mnt]);
      try {
        fs.mkdirSync(join(mnt, 'in'));
        fs.writeFileSync(join(mnt, 'in/m.txt'), 'on the tmpfs');
        setTimes(src);
        await fn(src);
      } finally {
        execFileSync('umount', [mnt]);
      }
    }

    it('one file system: the mount point stays empty', (t) =>
      withMount(async (src) => {
        // The mount point's empty tree is recorded too, so the directory holding it is taken from the cache.
        const { withCache } = await mutationCase((s) => fs.appendFileSync(join(s, 'a/b/c/deep.txt'), '!'), src, { oneFileSystem: true }, { omit: 'a/mnt' });
        expect(withCache.stats.dirs).toBe(9);
      }, t));

    it('across file systems: changes on the mounted one are seen', (t) =>
      withMount(async (src) => {
        const { withCache } = await mutationCase((s) => fs.appendFileSync(join(s, 'a/mnt/in/m.txt'), '!'), src);
        expect(withCache.stats.dirs).toBe(10);
        expect(withCache.stats.filesRead).toBe(1);
      }, t));
  });
});

describe('directory cache: when it is not used', () => {
  /** Backup 2 with the cache as `spoil` leaves it, and without: equal, the cache unused, then rewritten. */
  async function ignoredCase(spoil: (cache: string) => void) {
    const src = buildSource();
    const cache = cachePath();
    const store = new Repo();
    const b1 = await backup(store, src, { dirCache: cache });
    fs.appendFileSync(join(src, 'a/b/c/deep.txt'), 'changed\n');
    spoil(cache);
    const { withCache, without } = await withAndWithout(store, src, cache, b1.root);
    expect(cacheUsed(withCache)).toBeUndefined();
    expect([...withCache.treeLoads].sort()).toEqual([...without.treeLoads].sort());
    await expectCacheOf(store, src, cache, withCache.root);
    await expectRestores(store, withCache.root, src);
  }

  const flip = (at: (len: number) => number) => (cache: string) => {
    const buf = fs.readFileSync(cache);
    buf[at(buf.length)]! ^= 0x01;
    fs.writeFileSync(cache, buf);
  };
  const cut = (to: (len: number) => number) => (cache: string) => fs.truncateSync(cache, to(fs.statSync(cache).size));

  it('a flipped byte in the body', () => ignoredCase(flip((n) => n >> 1)));
  it('a flipped byte in the MAC', () => ignoredCase(flip((n) => n - 1)));
  it('truncated by one byte', () => ignoredCase(cut((n) => n - 1)));
  it('truncated to half', () => ignoredCase(cut((n) => n >> 1)));
  it('truncated to its MAC', () => ignoredCase(cut(() => MAC)));
  it('empty', () => ignoredCase(cut(() => 0)));
  it('missing', () => ignoredCase((cache) => fs.rmSync(cache)));

  it('authenticated with another hash key', () =>
    ignoredCase((cache) => {
      const doc = parseCache(cache);
      const other = new Repo();
      const body = fs.readFileSync(cache).subarray(0, fs.statSync(cache).size - MAC);
      const mac = Blake3Hasher.newKeyed(other.key).update(Buffer.from('permafrost directory cache v1\0')).update(body).digestBuffer();
      fs.writeFileSync(cache, Buffer.concat([body, mac]));
      // Authentic, for the other repository.
      expect(loadDirCache(cache, other.key, doc.options, doc.root)).toBeDefined();
    }));

  it('different excludes: the result is the one without the cache', async () => {
    const src = buildSource();
    fs.writeFileSync(join(src, 'a/b/scratch.tmp'), 'scratch');
    fs.writeFileSync(join(src, 'x/keep.tmp'), 'tmp');
    setTimes(src);
    const cache = cachePath();
    const store = new Repo();
    const b1 = await backup(store, src, { dirCache: cache, excludes: ['*.tmp'] });
    // Control: the same excludes use it, in directories taken as cached (x) and rebuilt around a change (a/b).
    fs.appendFileSync(join(src, 'a/b/c/deep.txt'), '!');
    const { withCache: same } = await withAndWithout(store, src, cache, b1.root, { excludes: ['*.tmp'] });
    expect(cacheUsed(same)).toBe(7);
    expect(same.stats.files).toBe(13);
    await expectCacheOf(store, src, cache, same.root);

    // Fewer excludes: the .tmp files come in.
    const { withCache: b2, without: b2plain } = await withAndWithout(store, src, cache, same.root, { excludes: [] });
    expect(cacheUsed(b2)).toBeUndefined();
    expect([...b2.treeLoads].sort()).toEqual([...b2plain.treeLoads].sort());
    expect(b2.root).toBe((await backup(store.clone(), src)).root);
    await expectCacheOf(store, src, cache, b2.root);
    await expectRestores(store, b2.root, src);

    // More excludes: a directory goes.
    const excludes = ['*.tmp', 'x/y'];
    const { withCache: b3, without: b3plain } = await withAndWithout(store, src, cache, b2.root, { excludes });
    expect(cacheUsed(b3)).toBeUndefined();
    expect([...b3.treeLoads].sort()).toEqual([...b3plain.treeLoads].sort());
    expect(b3.root).toBe((await backup(store.clone(), src, { excludes })).root);
    expect(treeIds(store, b3.root).has('x/y')).toBe(false);
    await expectCacheOf(store, src, cache, b3.root);
  });

  it('a cache of another backup than the parent given', async () => {
    const src = buildSource();
    const cache = cachePath();
    const store = new Repo();
    const b1 = await backup(store, src, { dirCache: cache });
    fs.appendFileSync(join(src, 'a/b/b.txt'), 'second\n');
    const b2 = await backup(store, src, { parentRoot: b1.root, dirCache: cache });
    expect(cacheUsed(b2)).toBe(7);
    expect(b2.root).not.toBe(b1.root);
    expect(parseCache(cache).root).toBe(b2.root);
    fs.appendFileSync(join(src, 'x/y/y1.txt'), 'third\n');
    // Backup 3 against backup 1, with the cache of backup 2.
    const { withCache: b3, without } = await withAndWithout(store, src, cache, b1.root);
    expect(cacheUsed(b3)).toBeUndefined();
    expect([...b3.treeLoads].sort()).toEqual([...without.treeLoads].sort());
    await expectCacheOf(store, src, cache, b3.root);
    await expectRestores(store, b3.root, src);
  });

  /** Backup 1, its tree of x/y deleted from the repository, then backup 2 with the cache and without. */
  async function treeGone() {
    const src = buildSource();
    const cache = cachePath();
    const store = new Repo();
    const b1 = await backup(store, src, { dirCache: cache });
    const gone = treeIds(store, b1.root).get('x/y')!;
    store.blobs.delete(gone);
    const plain = store.clone();
    const withCache = await backup(store, src, { parentRoot: b1.root, dirCache: cache }, true);
    const without = await backup(plain, src, { parentRoot: b1.root }, true);
    const warnings = (r: Run) => r.lines.filter((l) => l.startsWith('warn: '));
    return { src, cache, store, gone, withCache, without, warnings };
  }

  it('a directory whose cached tree is gone from the repository is walked the ordinary way', async () => {
    const { src, cache, store, gone, withCache, without, warnings } = await treeGone();
    expect(cacheUsed(withCache)).toBe(7);
    // Both read x/y's file again and store its tree anew.
    expect(warnings(without)).toHaveLength(1);
    expect(new Set(warnings(withCache))).toEqual(new Set(warnings(without)));
    expect(withCache.root).toBe(without.root);
    expect(withCache.stats).toEqual(without.stats);
    expect(withCache.stats.filesRead).toBe(1);
    expect(store.has(gone)).toBe(true);
    await expectCacheOf(store, src, cache, withCache.root);
    await expectRestores(store, withCache.root, src);
  });

  it('a tree that cannot be loaded is tried and warned about once', async () => {
    const { withCache, warnings } = await treeGone();
    expect(warnings(withCache)).toHaveLength(1);
  });

  it('a full backup (no parent) does not read it, and writes it', async () => {
    const src = buildSource();
    const cache = cachePath();
    const store = new Repo();
    const b1 = await backup(store, src, { dirCache: cache });
    const full = await backup(store, src, { dirCache: cache });
    expect(cacheUsed(full)).toBeUndefined();
    expect(full.root).toBe(b1.root);
    await expectCacheOf(store, src, cache, full.root);
  });

  it('cannot be written (a directory in its place): the backup succeeds all the same', async () => {
    const src = buildSource();
    const cache = cachePath();
    const store = new Repo();
    const b1 = await backup(store, src, { dirCache: cache });
    fs.rmSync(cache);
    fs.mkdirSync(cache);
    fs.appendFileSync(join(src, 'a/b/b.txt'), 'more\n');
    const { withCache } = await withAndWithout(store, src, cache, b1.root);
    expect(cacheUsed(withCache)).toBeUndefined();
    expect(withCache.lines.some((l) => l.startsWith('debug: directory cache not written'))).toBe(true);
    expect(fs.statSync(cache).isDirectory()).toBe(true);
    expect(fs.readdirSync(join(cache, '..'))).toEqual(['dirs']);
  });

  it('without a hash key it is neither read nor written', async () => {
    const src = buildSource();
    const cache = cachePath();
    await backupTree(src, { chunker: small, dirCache: cache }, memContext(new MemStore()));
    expect(fs.existsSync(cache)).toBe(false);
  });
});

describe('directory cache: the file', () => {
  it('is rewritten for each backup and describes only it', async () => {
    const src = buildSource();
    const cache = cachePath();
    const store = new Repo();
    const b1 = await backup(store, src, { dirCache: cache });
    const doc1 = parseCache(cache);
    expect(doc1.root).toBe(b1.root);
    expect(fs.statSync(cache).mode & 0o777).toBe(0o600);
    fs.writeFileSync(join(src, 'x/y/new.txt'), 'new');
    const b2 = await backup(store, src, { parentRoot: b1.root, dirCache: cache });
    expect(b2.root).not.toBe(b1.root);
    const doc2 = parseCache(cache);
    expect(doc2.root).toBe(b2.root);
    expect(doc2.options).toBe(doc1.options);
    expect(loadDirCache(cache, store.key, doc2.options, b1.root)).toBeUndefined();
    const dirs = await expectCacheOf(store, src, cache, b2.root);
    const ids1 = treeIds(store, b1.root);
    expect(dirs.get('x/y')!.tree).not.toBe(ids1.get('x/y'));
    expect(dirs.get('a/b/c')!.tree).toBe(ids1.get('a/b/c'));
    // No temporary file left beside it.
    expect(fs.readdirSync(join(cache, '..'))).toEqual(['dirs']);
  });
});

describe('directory cache: prereads of changed large files', () => {
  /** How many files the backup read ahead of its walk. */
  const prereads = (run: Run): number => {
    for (const l of run.lines) {
      const m = /^debug: reading (\d+) changed large files ahead of the walk$/.exec(l);
      if (m) return Number(m[1]);
    }
    return 0;
  };
  const flipAt = (p: string, at: number) => {
    const fd = fs.openSync(p, 'r+');
    const b = Buffer.alloc(1);
    fs.readSync(fd, b, 0, 1, at);
    b[0]! ^= 0xff;
    fs.writeSync(fd, b, 0, 1, at);
    fs.closeSync(fd);
  };

  it('the changed ones are read ahead and give what a backup without the cache gives', async () => {
    const { b1, withCache } = await mutationCase((src) => {
      flipAt(join(src, 'a/b/c/deep-big.bin'), 150_000);
      fs.appendFileSync(join(src, 'big.bin'), randomBytes(70_000));
    });
    expect(prereads(b1)).toBe(0);
    expect(prereads(withCache)).toBe(2);
  });

  it('a large file that did not change is not read ahead', async () => {
    const { withCache } = await mutationCase((src) => fs.appendFileSync(join(src, 'a/b/b.txt'), 'more\n'));
    expect(prereads(withCache)).toBe(0);
  });

  it('never through a symlink that took the place of a directory on the way', async () => {
    const { withCache } = await mutationCase((src) => {
      // a/b/c becomes a symlink to a copy elsewhere whose deep-big.bin changed: the cached path
      // now leads out of the tree; the walk stores the symlink and reads nothing behind it.
      const outside = dir('outside');
      fs.cpSync(join(src, 'a/b/c'), join(outside, 'c'), { recursive: true, verbatimSymlinks: true });
      flipAt(join(outside, 'c/deep-big.bin'), 10);
      fs.rmSync(join(src, 'a/b/c'), { recursive: true });
      fs.symlinkSync(join(outside, 'c'), join(src, 'a/b/c'));
    });
    expect(prereads(withCache)).toBe(0);
  });
});
