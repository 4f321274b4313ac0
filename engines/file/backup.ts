/**
 * File engine backup: a mounted tree → data blobs and one tree blob per directory.
 *
 * - The walk is depth-first and synchronous within a directory (readdirSync +
 *   lstatSync with bigint times): a no-change incremental is one lstat per
 *   entry compared against the parent's tree, no reads, no per-file promises.
 * - Parent skip: a regular file whose size, mtimeNs, ctimeNs and inode equal
 *   its node in the parent's tree (same relative path) reuses the parent's
 *   content list. Parent trees are loaded lazily, a directory's subtrees
 *   prefetched in parallel while the directory is walked.
 * - Other files are read by I/O threads (iopool.ts; several requests in flight
 *   for a cold device): small files in batches, one blob each; files of at
 *   least the minimum chunk size in 8 MiB blocks streamed through FastCDC.
 *   The main thread hashes (BLAKE3, native) and hands blobs to saveBlob
 *   without waiting, bounded by the bytes in flight, so the compression
 *   workers stay busy. `readers: 0` reads synchronously on the main thread.
 * - Trees are encoded bottom-up once a directory's files, subdirectories and
 *   the xattr scan (see xattr.ts) are done.
 * - Files that vanish or cannot be read are logged, counted in stats.errors and
 *   left out; the caller decides whether that makes the backup partial.
 */
import * as fs from 'node:fs';
import { availableParallelism } from 'node:os';
import { constants as C } from 'node:fs';
import { IntegrityError, InterruptedError, UsageError, fromSystemError } from '../../src/errors.js';
import type { BlobId, BackupStats, BlobType } from '../../src/repository/types.js';
import { emptyStats } from '../../src/repository/types.js';
import type { EngineBackupResult, EngineContext } from '../engine.js';
import { Chunker, DEFAULT_CHUNKER, type ChunkerOptions } from './chunker.js';
import { compileExcludes, type PathMatcher } from './select.js';
import { type DirEntry, type EntryStat, type Listing, type RawListing, RAW_DEV, RAW_ERRNO, RAW_FIELDS, RAW_MODE, RAW_SIZE, entryStat, listingFingerprint, nativeEntriesOf, nativeScanner, scanDir } from './scan.js';
import { type CachedDir, type LargeFile, loadDirCache, saveDirCache } from './dircache.js';
import { Blake3Hasher } from '../../src/util/blake3.js';
import { concatBytes } from '../../src/util/native.js';
import { compareNames, createNode, decodeParentTree, encodeTree, type Hole, type NodeType, type Tree, type TreeNode } from './tree.js';
import { Semaphore } from './limit.js';
import { IoPool, type BlockResult, type ChunkedBlock, type ChunkedReader } from './iopool.js';
import { hasTool, readXattrs, startXattrScan, type XattrScan, type Xattrs } from './xattr.js';

/** Options of backupTree. */
export interface BackupTreeOptions {
  /** Root tree of the parent backup: unchanged files are not read again. */
  parentRoot?: BlobId;
  /** Globs of paths to leave out (see select.ts). */
  excludes?: string[];
  /** Do not descend into directories on another device (the mount point itself is kept, empty). */
  oneFileSystem?: boolean;
  /** Chunker parameters (default: DEFAULT_CHUNKER; must stay the same across backups of a repository). */
  chunker?: ChunkerOptions;
  /** Back up extended attributes with getfattr (default true). */
  xattrs?: boolean;
  /**
   * Reader threads (default 4): file reads run there, several requests in
   * flight for cold or remote devices. 0: synchronous reads on the main thread.
   */
  readers?: number;
  /** Cap on plaintext bytes handed to saveBlob and not yet settled (default 4 MiB per core, at least one maximal chunk). */
  maxInflightBytes?: number;
  /**
   * The directory cache file of this backup's name (dircache.ts): read when it
   * describes the parent, rewritten for this backup. Needs the native scanner
   * and a repository hash key; none when undefined.
   */
  dirCache?: string;
  /** Files of at least this size are named in the directory cache and read ahead by the next backup when they changed (default 64 MiB). */
  prereadMin?: number;
}

/**
 * Plaintext bytes in compression per core (one compression batch): enough to
 * keep every compression thread busy; more only holds more buffers (measured:
 * 4 MiB and 8 MiB per core back up equally fast, the latter with ~40 MiB more RSS).
 */
const INFLIGHT_PER_CORE = 4 << 20;
/** Block size of large-file reads. */
const READ_SIZE = 4 << 20;
/** Blocks of one large file requested ahead of the chunker. */
const LARGE_WINDOW = 2;
/** Average milliseconds per metadata call above which the metadata counts as cold (warming pays). */
const WARM_THRESHOLD_MS = 0.05;
/** Subtrees walked at a time by the warming threads (at most the reader count). */
const WARM_THREADS = 4;
/** Subdirectories whose parent trees (and native listings) are fetched ahead of the walk, per directory. */
const PREFETCH_DIRS = 16;
/**
 * At most this many listings of the next level (see lookAhead) wait at once:
 * a directory of many subdirectories with many subdirectories each must not
 * turn the look-ahead into a scan of the whole tree.
 */
const AHEAD_MAX = 1024;
/** Large files read at the same time. */
const LARGE_FILES = 2;
/**
 * Prereads: files of at least this size are named in the directory cache, and
 * the next backup starts reading those that changed at once, before its walk
 * gets to them (a 500 MiB file met late in the walk was the incremental's last
 * work: the walk done, one thread still reading it). At most PREREAD_MAX
 * files (the largest), PREREAD_FILES at a time, beside the walk's own.
 */
const PREREAD_MIN_DEFAULT = 64 << 20;
const PREREAD_MAX = 32;
const PREREAD_FILES = 1;
/** A batch of small files for one reader request: at most this many files or bytes. */
const BATCH_FILES = 64;
const BATCH_BYTES = 1 << 20;
/** A batch that is not full is sent at the end of a directory once it is this old (and a reader is free). */
const BATCH_AGE_MS = 10;
const SLAB_SIZE = 4 << 20;
const EMPTY: never[] = [];

let zeroBuf = Buffer.alloc(0);
/** True when every byte of `b` is zero. */
export function isZero(b: Uint8Array): boolean {
  const n = b.length;
  if (n === 0) return true;
  if (b[0] !== 0 || b[n - 1] !== 0 || b[n >> 1] !== 0) return false;
  if (zeroBuf.length < n) zeroBuf = Buffer.alloc(Math.max(n, 1 << 20));
  return Buffer.compare(b, zeroBuf.subarray(0, n)) === 0;
}

function typeOf(mode: number): NodeType | undefined {
  switch (mode & C.S_IFMT) {
    case C.S_IFREG:
      return 'file';
    case C.S_IFDIR:
      return 'dir';
    case C.S_IFLNK:
      return 'symlink';
    case C.S_IFIFO:
      return 'fifo';
    case C.S_IFCHR:
      return 'chardev';
    case C.S_IFBLK:
      return 'blockdev';
    case C.S_IFSOCK:
      return 'socket';
    default:
      return undefined;
  }
}

function errText(err: unknown): string {
  const e = err as NodeJS.ErrnoException;
  return e?.code ? `${e.code}` : String((err as Error)?.message ?? err);
}

/** A node under construction with what the walk needs to finish it. */
interface Work {
  node: TreeNode;
  rel: string;
  /** Directories: the same directory's node in the parent backup. */
  parent?: TreeNode;
  /** Left out of the tree (vanished or unreadable). */
  drop?: boolean;
  /** Incrementals: the targeted getfattr that reads this entry's xattrs. */
  xbatch?: XBatch;
  /** A preread's stand-in: not counted; an error only drops it (the walk reads the file again). */
  pre?: boolean;
}

/** A file read ahead of the walk: the lstat it was read after. */
interface Preread {
  st: EntryStat;
  work: Work;
  done: Promise<void>;
}

/** Entries whose xattrs are read by one targeted getfattr (incrementals). */
interface XBatch {
  works: Work[];
  /** Settles once the batch was sent (full, or at the end of the walk) and getfattr answered. */
  result: Promise<Map<string, Xattrs>>;
  resolve: (m: Map<string, Xattrs>) => void;
}

/** Entries per targeted getfattr. */
const XBATCH = 2000;

/** Small files on their way to a reader thread. */
interface Batch {
  works: Work[];
  paths: string[];
  sizes: number[];
  bytes: number;
  done: Promise<void>;
  /** performance.now() when its first file was queued. */
  started: number;
  resolve: () => void;
  reject: (e: unknown) => void;
}

interface DirResult {
  tree: Promise<BlobId>;
}

/** A directory's listing as the walk gets it: with its fingerprint and cache entry when there is a directory cache. */
interface Prepared {
  listing: Listing;
  fp?: string;
  cached?: CachedDir;
  /** The listing is as cached: the cached tree stands, but for its subdirectories. */
  hit?: boolean;
}

const noop = (): void => {};

/** The lstat fields the parent skip compares are equal (size, mtime, ctime, inode). */
function sameFile(a: Pick<EntryStat, 'size' | 'mtimeNs' | 'ctimeNs' | 'ino'>, b: Pick<EntryStat, 'size' | 'mtimeNs' | 'ctimeNs' | 'ino'>): boolean {
  return a.size === b.size && a.mtimeNs === b.mtimeNs && a.ctimeNs === b.ctimeNs && a.ino === b.ino;
}

/** Fields of a node, in encoding order (see tree.ts canonicalNode). */
const SCALAR_FIELDS = ['name', 'type', 'mode', 'uid', 'gid', 'size', 'mtimeNs', 'ctimeNs', 'atimeNs', 'inode', 'dev', 'nlink', 'rdev', 'linkTarget', 'subtree'] as const;

function sameList(a: readonly unknown[] | undefined, b: readonly unknown[] | undefined): boolean {
  if (a === b) return true;
  const la = a?.length ?? 0;
  if (la !== (b?.length ?? 0)) return false;
  for (let i = 0; i < la; i++) {
    const x = a![i];
    const y = b![i];
    if (x === y) continue;
    if (!Array.isArray(x) || !Array.isArray(y) || !sameList(x, y)) return false;
  }
  return true;
}

/**
 * True when a directory's new nodes encode to the same tree as the parent's
 * nodes of that directory: every field equal, and the parent's nodes carry no
 * field this version does not write.
 */
export function sameNodes(nodes: readonly TreeNode[], old: readonly TreeNode[]): boolean {
  if (nodes.length !== old.length) return false;
  for (let i = 0; i < nodes.length; i++) {
    const n = nodes[i]!;
    const o = old[i]!;
    let fields = 0;
    for (const f of SCALAR_FIELDS) {
      const v = n[f];
      if (v !== o[f]) return false;
      if (v !== undefined) fields++;
    }
    if ((n.sparse === true) !== (o.sparse === true) || (o.sparse !== undefined && o.sparse !== true)) return false;
    if (n.sparse) fields++;
    if (!sameList(n.content, o.content)) return false;
    if (n.content !== undefined) fields++;
    else if (o.content !== undefined) return false;
    if (!sameList(n.holes, o.holes)) return false;
    if (n.holes !== undefined && n.holes.length > 0) fields++;
    if (n.xattrs !== o.xattrs) {
      if (n.xattrs === undefined || o.xattrs === undefined) return false;
      const kn = Object.keys(n.xattrs);
      const ko = Object.keys(o.xattrs);
      if (kn.length !== ko.length) return false;
      for (let k = 0; k < kn.length; k++) if (kn[k] !== ko[k] || n.xattrs[kn[k]!] !== o.xattrs[kn[k]!]) return false;
    }
    if (n.xattrs !== undefined) fields++;
    if (Object.keys(o).length !== fields) return false;
  }
  return true;
}

function sortedXattrs(x: Xattrs): Xattrs {
  const out: Xattrs = {};
  for (const k of Object.keys(x).sort(compareNames)) out[k] = x[k]!;
  return out;
}

class TreeBackup {
  readonly stats: BackupStats = emptyStats();
  private readonly repo;
  private readonly log;
  private readonly progress;
  private readonly signal: AbortSignal;
  private readonly chunkOpts: Required<ChunkerOptions>;
  private readonly excludes?: PathMatcher;
  private readonly readers: number;
  private readonly maxBatches: number;
  private readonly maxInflight: number;
  private readonly openFlags: number;
  private rootDev = 0;
  /** Full backups: one recursive getfattr over the tree. */
  private xattrScan?: XattrScan;
  private xattrMap?: Map<string, Xattrs>;
  /** Incrementals: getfattr only for entries that changed (ctime or inode differs from the parent). */
  private xTargeted = false;
  private xbatch?: XBatch;
  private failure: unknown;
  /** Plaintext bytes in saveBlob calls not yet settled. */
  private inflight = 0;
  private readonly saves = new Set<Promise<unknown>>();
  private roomWaiters: (() => void)[] = [];
  private pool?: IoPool;
  private batch?: Batch;
  private batchesInFlight = 0;
  private batchWaiters: (() => void)[] = [];
  private readonly largeSem = new Semaphore(LARGE_FILES);
  /** dev:inode of files with nlink > 1 seen in this backup → when their content is known. */
  private readonly links = new Map<string, { work: Work; ready: Promise<void> | undefined }>();
  private slab = Buffer.alloc(0);
  private slabPos = 0;
  private progressBytes = 0;
  private progressFiles = 0;
  private lastYield = 0;
  private emptyTreeId?: Promise<BlobId>;
  private walkDone = false;
  /** The parent's directories (dircache.ts), when its cache is usable. */
  private dirCache?: Map<string, CachedDir>;
  /** Listings started ahead of the walk, by relative path (see lookAhead). */
  private ahead = new Map<string, Promise<Prepared>>();
  /** This backup's directories, for the next one's cache. */
  private newDirCache?: Map<string, CachedDir>;
  private fpHasher?: Blake3Hasher;
  /** Changed large files being read ahead of the walk, by relative path, until the walk takes them. */
  private readonly prereads = new Map<string, Preread>();
  /** Every preread started (the walk may not take one: it is waited for at the end). */
  private readonly preDone = new Set<Promise<void>>();
  private readonly preSem = new Semaphore(PREREAD_FILES);
  /** This backup's large files, for the next one's cache. */
  private readonly newLarge: LargeFile[] = [];
  private readonly prereadMin: number;

  constructor(
    private readonly rootDir: string,
    private readonly opts: BackupTreeOptions,
    ctx: EngineContext,
  ) {
    this.repo = ctx.repo;
    this.log = ctx.log;
    this.progress = ctx.progress;
    this.signal = ctx.signal;
    this.chunkOpts = { ...DEFAULT_CHUNKER, ...(opts.chunker ?? {}) };
    new Chunker(this.chunkOpts); // validate early
    this.excludes = compileExcludes(opts.excludes);
    this.readers = Math.max(0, Math.floor(opts.readers ?? 4));
    this.prereadMin = Math.max(this.chunkOpts.minSize, opts.prereadMin ?? PREREAD_MIN_DEFAULT);
    this.maxBatches = this.readers + 2;
    this.maxInflight = opts.maxInflightBytes ?? Math.max(this.chunkOpts.maxSize, INFLIGHT_PER_CORE * availableParallelism());
    let flags = C.O_RDONLY | C.O_NOFOLLOW | C.O_NONBLOCK;
    if (process.getuid?.() === 0 && C.O_NOATIME) flags |= C.O_NOATIME;
    this.openFlags = flags;
  }

  async run(): Promise<EngineBackupResult> {
    this.checkAbort();
    let rootSt: EntryStat;
    try {
      rootSt = entryStat(fs.lstatSync(this.rootDir, { bigint: true }));
    } catch (err) {
      throw fromSystemError(err, `cannot back up ${this.rootDir}`);
    }
    if (typeOf(rootSt.mode) !== 'dir') throw new UsageError(`cannot back up ${this.rootDir}: not a directory`);
    this.rootDev = rootSt.dev;
    if (this.opts.xattrs !== false) {
      if (this.opts.parentRoot) this.xTargeted = true;
      else this.xattrScan = startXattrScan(this.rootDir, this.log);
    }
    const onAbort = () => this.fail(new InterruptedError());
    this.signal.addEventListener('abort', onAbort, { once: true });
    try {
      const parent = this.opts.parentRoot ? await this.loadParent(this.opts.parentRoot, '') : undefined;
      const hashKey = this.repo.hashKey?.();
      const cacheOptions = this.dirCacheOptions();
      if (this.opts.dirCache !== undefined && nativeScanner && hashKey !== undefined) {
        this.fpHasher = Blake3Hasher.newKeyed(hashKey);
        this.newDirCache = new Map();
        const c = this.opts.parentRoot !== undefined && parent !== undefined ? loadDirCache(this.opts.dirCache, hashKey, cacheOptions, this.opts.parentRoot) : undefined;
        if (c !== undefined) {
          this.dirCache = c.dirs;
          this.log.debug(`directory cache: ${c.dirs.size} directories, ${c.large.length} large files of the parent`);
          this.startPrereads(c.large);
        }
      }
      const rootNode = this.makeNode('', rootSt, 'dir');
      this.stats.dirs++;
      const rootWork: Work = { node: rootNode, rel: '' };
      // The native scanner lists directories ahead of the walk itself (see walkDir).
      if (parent !== undefined && this.readers > 0 && !nativeScanner) this.warmMetadata();
      if (this.xTargeted) this.inheritXattrs(rootWork, parent?.root ? ({ ...parent.root, name: '' } as TreeNode) : undefined);
      const res = await this.walkDir(this.rootDir, '', parent?.nodes, rootWork);
      this.walkDone = true;
      this.flushBatch();
      this.flushXBatch();
      const root = await res.tree;
      // Prereads the walk did not take (the file changed again, or went) save nothing more after this.
      await Promise.allSettled([...this.preDone]);
      while (this.saves.size > 0) await Promise.all([...this.saves]);
      if (this.failure) throw this.failure;
      if (this.newDirCache !== undefined && hashKey !== undefined) {
        try {
          const large = this.newLarge.sort((a, b) => b.size - a.size).slice(0, PREREAD_MAX);
          saveDirCache(this.opts.dirCache!, hashKey, cacheOptions, root, this.newDirCache, large);
        } catch (err) {
          this.log.debug(`directory cache not written (${errText(err)})`);
        }
      }
      this.flushProgress();
      return {
        root,
        stats: this.stats,
        info: {
          chunker: { minSize: this.chunkOpts.minSize, avgSize: this.chunkOpts.avgSize, maxSize: this.chunkOpts.maxSize, seed: this.chunkOpts.seed },
          xattrs: this.opts.xattrs === false ? 'off' : hasTool('getfattr') ? 'getfattr' : 'unavailable',
        },
      };
    } catch (err) {
      this.fail(err);
      this.xattrScan?.kill();
      // Let saves in flight settle so nothing keeps running after we return.
      await Promise.allSettled([...this.preDone]);
      await Promise.allSettled([...this.saves]);
      throw this.failure;
    } finally {
      this.walkDone = true;
      this.signal.removeEventListener('abort', onAbort);
      this.xattrScan?.kill();
      await this.pool?.close();
    }
  }

  // ---- failure, abort, progress ----------------------------------------

  private fail(err: unknown): void {
    if (this.failure === undefined) this.failure = err;
    // Wake everything that waits so it can observe the failure.
    this.wakeRoom();
    this.wakeBatches();
  }

  private checkAbort(): void {
    if (this.failure !== undefined) throw this.failure;
    if (this.signal.aborted) {
      this.fail(new InterruptedError());
      throw this.failure;
    }
  }

  private flushProgress(): void {
    if (this.progressBytes || this.progressFiles) {
      this.progress.advance(this.progressBytes, this.progressFiles);
      this.progressBytes = 0;
      this.progressFiles = 0;
    }
  }

  /** Give the event loop a turn now and then (worker results, child exit, timers). */
  private async maybeYield(): Promise<void> {
    const now = performance.now();
    if (now - this.lastYield < 25) return;
    this.lastYield = now;
    this.flushProgress();
    await new Promise<void>((r) => setImmediate(r));
  }

  // ---- saving ------------------------------------------------------------

  private wakeRoom(): void {
    const w = this.roomWaiters;
    this.roomWaiters = [];
    for (const f of w) f();
  }

  private async waitRoom(): Promise<void> {
    while (this.inflight >= this.maxInflight && this.failure === undefined) {
      await new Promise<void>((r) => this.roomWaiters.push(r));
    }
    if (this.failure !== undefined) throw this.failure;
  }

  /** Hand a blob to the repository without waiting for it; accounting on settle. */
  private save(type: BlobType, data: Buffer, id: BlobId): void {
    const len = data.length;
    this.inflight += len;
    let p: Promise<unknown>;
    try {
      p = this.repo.saveBlob(type, data, id);
    } catch (err) {
      p = Promise.reject(err);
    }
    const tracked = p.then(
      (r) => {
        const res = r as { isNew: boolean; storedSize: number };
        if (res.isNew) {
          this.stats.blobsNew++;
          this.stats.bytesNew += len;
          this.stats.bytesStored += res.storedSize;
        }
      },
      (err) => this.fail(err),
    );
    this.saves.add(tracked);
    void tracked.finally(() => {
      this.saves.delete(tracked);
      this.inflight -= len;
      if (this.inflight < this.maxInflight) this.wakeRoom();
    });
  }

  /** Hash a data chunk and save it unless the repository has it; returns its ID. `data` is never modified afterwards. */
  private saveData(data: Buffer, known?: BlobId | null): BlobId {
    const id = known ?? this.repo.hash(data);
    if (!this.repo.has(id)) this.save('data', data, id);
    return id;
  }

  private async saveTree(tree: Tree): Promise<BlobId> {
    const buf = encodeTree(tree, { canonical: true });
    const id = this.repo.hash(buf);
    if (!this.repo.has(id)) this.save('tree', buf, id);
    return id;
  }

  private emptyTree(): Promise<BlobId> {
    this.emptyTreeId ??= this.saveTree({ nodes: [] });
    return this.emptyTreeId;
  }

  // ---- parent --------------------------------------------------------------

  private async loadParent(id: BlobId, rel: string): Promise<{ nodes: TreeNode[]; root?: Omit<TreeNode, 'name'> } | undefined> {
    try {
      return decodeParentTree(await this.repo.loadBlob('tree', id));
    } catch (err) {
      if (this.signal.aborted) return undefined;
      this.log.warn(`cannot load the parent's tree for "${rel || '/'}" (${(err as Error).message}); reading its files again`);
      return undefined;
    }
  }

  /**
   * Incrementals: the walk is all metadata, one synchronous syscall at a time,
   * so a cold device makes it wait on every directory block and inode table.
   * Reader threads walk ahead over the same tree (split into up to 32
   * subtrees, in the walk's order) so the kernel's caches are warm when the
   * main thread gets there.
   */
  private warmMetadata(): void {
    let frontier = [this.rootDir];
    let ops = 0;
    const t0 = performance.now();
    for (let depth = 0; depth < 4 && frontier.length < 32; depth++) {
      const next: string[] = [];
      for (const d of frontier) {
        let ents: fs.Dirent[];
        try {
          ents = fs.readdirSync(d, { withFileTypes: true });
        } catch {
          continue;
        }
        ops++;
        // A few lstats as a probe of how cold the metadata is.
        for (let i = 0; i < ents.length && i < 8; i++) {
          fs.lstatSync(d + '/' + ents[i]!.name, { throwIfNoEntry: false });
          ops++;
        }
        const subs = ents.filter((e) => e.isDirectory()).map((e) => e.name);
        subs.sort();
        for (const n of subs) next.push(d + '/' + n);
      }
      if (next.length === 0) break;
      frontier = next;
    }
    // Cached metadata answers in a few microseconds: warming would only burn the other core.
    if (ops === 0 || (performance.now() - t0) / ops < WARM_THRESHOLD_MS) return;
    if (frontier.length === 1 && frontier[0] === this.rootDir) return;
    // Cold metadata answers ~2.5x faster with several requests in flight: warm
    // right away, several subtrees at a time, ahead of the walk (the walk itself
    // starts in the first subtree, so warming starts at the second).
    const queue = frontier;
    let next = queue.length > 1 ? 1 : 0;
    const more = (): void => {
      if (next >= queue.length || this.walkDone || this.failure !== undefined) return;
      this.getPool()
        .warm([queue[next++]!])
        .then(more, noop);
    };
    const threads = Math.min(this.readers, WARM_THREADS, queue.length - next);
    for (let i = 0; i < threads; i++) more();
  }

  // ---- xattrs of incrementals ------------------------------------------------

  /**
   * Keep the parent's xattrs when the entry is the same inode with the same
   * ctime (setting or removing an xattr updates ctime); otherwise queue it for
   * a targeted getfattr.
   */
  private inheritXattrs(work: Work, pn: TreeNode | undefined): void {
    const n = work.node;
    if (pn !== undefined && pn.type === n.type && pn.inode === n.inode && pn.ctimeNs === n.ctimeNs) {
      if (pn.xattrs !== undefined) n.xattrs = pn.xattrs;
      return;
    }
    let b = this.xbatch;
    if (b === undefined) {
      let resolve!: (m: Map<string, Xattrs>) => void;
      const result = new Promise<Map<string, Xattrs>>((r) => (resolve = r));
      b = this.xbatch = { works: [], result, resolve };
    }
    b.works.push(work);
    work.xbatch = b;
    if (b.works.length >= XBATCH) this.flushXBatch();
  }

  private flushXBatch(): void {
    const b = this.xbatch;
    if (b === undefined) return;
    this.xbatch = undefined;
    void readXattrs(this.rootDir, b.works.map((w) => w.rel || '.'), this.log).then(b.resolve);
  }

  // ---- walk ------------------------------------------------------------------

  private makeNode(name: string, st: EntryStat, type: NodeType): TreeNode {
    const node = createNode(name, type);
    node.mode = st.mode & 0o7777;
    node.uid = st.uid;
    node.gid = st.gid;
    node.mtimeNs = st.mtimeNs;
    node.ctimeNs = st.ctimeNs;
    node.inode = st.ino;
    if (type !== 'dir' && type !== 'symlink') node.atimeNs = st.atimeNs;
    if (st.dev !== this.rootDev) node.dev = st.dev;
    if (type !== 'dir') {
      if (st.nlink > 1) node.nlink = st.nlink;
      if (type === 'file') {
        node.size = st.size;
        if (st.blocks * 512 < st.size) node.sparse = true;
      } else if (type === 'chardev' || type === 'blockdev') node.rdev = st.rdev;
    }
    return node;
  }

  /**
   * Start the listings of the subdirectories of a listed directory, for the
   * walk to take (walkSubdirs) when it gets there: the walk itself asks for a
   * directory's subdirectories only when it enters that directory, and on
   * trees of small directories it would otherwise wait for the scanner once
   * per directory.
   */
  private lookAhead(abs: string, rel: string, listing: Listing): void {
    const raw = listing.raw;
    if (raw === undefined) return;
    const { stats } = raw;
    const prefix = rel === '' ? '' : rel + '/';
    const absPrefix = abs.endsWith('/') ? abs : abs + '/';
    for (let i = 0, o = 0; o < stats.length; i++, o += RAW_FIELDS) {
      if (stats[o + RAW_ERRNO] !== 0 || typeOf(stats[o + RAW_MODE]!) !== 'dir') continue;
      if (this.opts.oneFileSystem && stats[o + RAW_DEV] !== this.rootDev) continue;
      const name = raw.names[i]!;
      const r = prefix + name;
      if ((this.excludes !== undefined && this.excludes(r)) || this.ahead.has(r)) continue;
      if (this.ahead.size >= AHEAD_MAX) return;
      this.ahead.set(r, this.prepare(absPrefix + name, r));
    }
  }

  /** A subdirectory's listing: the one lookAhead started, else a new one; either way its own subdirectories are looked ahead. */
  private prepareAhead(abs: string, rel: string): Promise<Prepared> {
    let p = this.ahead.get(rel);
    if (p !== undefined) this.ahead.delete(rel);
    else p = this.prepare(abs, rel);
    p.then((prep) => this.lookAhead(abs, rel, prep.listing), noop);
    return p;
  }

  /**
   * A directory's listing. The native scanner's listings are started ahead
   * (walkDir asks for a few subdirectories before it walks the first), so
   * they arrive while the walk works on other directories.
   */
  private prepare(abs: string, rel: string): Promise<Prepared> {
    const p = scanDir(abs).then((listing): Prepared => {
      if (this.fpHasher === undefined || listing.raw === undefined || rel === '') return { listing };
      const fp = listingFingerprint(this.fpHasher, listing.raw, this.rootDev);
      const cached = this.dirCache?.get(rel);
      const hit = cached !== undefined && cached.clean && cached.fp === fp && this.repo.has(cached.tree);
      return { listing, fp, cached, hit };
    });
    p.catch(noop);
    return p;
  }

  /** What the trees of a directory cache depend on besides the listings. */
  private dirCacheOptions(): string {
    return JSON.stringify({
      excludes: this.opts.excludes ?? [],
      oneFileSystem: this.opts.oneFileSystem === true,
      xattrs: this.opts.xattrs === false ? 'off' : hasTool('getfattr') ? 'getfattr' : 'unavailable',
      chunker: this.chunkOpts,
    });
  }

  private async walkDir(abs: string, rel: string, parent: TreeNode[] | undefined, self: Work, listed?: Promise<Prepared>): Promise<DirResult> {
    this.checkAbort();
    await this.maybeYield();
    let entries: DirEntry[];
    let fp: string | undefined;
    /** Set when the tree cannot be reused on its fingerprint alone next time. */
    let dirty = false;
    try {
      const prep = await (listed ?? this.prepare(abs, rel));
      this.checkAbort();
      if (prep.hit) return this.cachedDir(abs, rel, prep.listing.raw!, prep.cached!, prep.fp!);
      fp = prep.fp;
      entries = prep.listing.entries;
      // Not as cached: the parent's tree of this directory, for the parent skip of its files
      // (walkSubdirs already tried when it listed this directory ahead).
      const old = prep.cached?.tree;
      if (parent === undefined && old !== undefined && listed === undefined) {
        const pt = await this.loadParent(old, rel);
        parent = pt?.nodes;
        if (pt !== undefined && self.parent === undefined) self.parent = { ...createNode(self.node.name, 'dir'), subtree: old };
      }
    } catch (err) {
      if (err instanceof InterruptedError) throw err;
      this.stats.errors++;
      this.log.warn(`cannot read directory ${rel || '/'}: ${errText(err)}`);
      entries = EMPTY;
      dirty = true;
    }
    this.checkAbort();
    const works: Work[] = [];
    const waits: Promise<void>[] = [];
    const subdirs: Work[] = [];
    const prefix = rel === '' ? '' : rel + '/';
    const absPrefix = abs.endsWith('/') ? abs : abs + '/';
    const excludes = this.excludes;
    const pnodes = parent ?? EMPTY;
    let pj = 0;
    for (let i = 0; i < entries.length; i++) {
      const { name, st, code } = entries[i]!;
      // The parent's node of the same name: both lists are in name order.
      while (pj < pnodes.length && compareNames(pnodes[pj]!.name, name) < 0) pj++;
      const pn = pj < pnodes.length && pnodes[pj]!.name === name ? pnodes[pj] : undefined;
      const r = prefix + name;
      if (excludes !== undefined && excludes(r)) continue;
      const p = absPrefix + name;
      if (st === undefined) {
        this.stats.errors++;
        this.log.warn(code === 'ENOENT' ? `${r} vanished during the backup` : `cannot stat ${r}: ${code}`);
        dirty = true;
        continue;
      }
      const type = typeOf(st.mode);
      if (type === undefined) {
        this.stats.errors++;
        this.log.warn(`${r}: unknown file type, skipped`);
        dirty = true;
        continue;
      }
      const node = this.makeNode(name, st, type);
      if (node.nlink !== undefined) dirty = true;
      const work: Work = { node, rel: r };
      works.push(work);
      if (this.xTargeted) this.inheritXattrs(work, pn);
      if (type === 'file') {
        const pending = this.fileEntry(work, p, pn, st);
        if (pending !== undefined) {
          if (this.readers === 0) await pending;
          else if (waits[waits.length - 1] !== pending) waits.push(pending);
        }
        if (this.inflight >= this.maxInflight) await this.waitRoom();
        if (this.batchesInFlight >= this.maxBatches) await this.waitBatches();
      } else if (type === 'dir') {
        this.stats.dirs++;
        work.parent = pn;
        subdirs.push(work);
      } else {
        this.stats.files++;
        if (type === 'symlink') {
          try {
            node.linkTarget = fs.readlinkSync(p);
          } catch (err) {
            this.stats.errors++;
            this.log.warn(`cannot read symlink ${r}: ${errText(err)}`);
            work.drop = true;
          }
        }
      }
    }
    // Keep the reader threads fed when the walk is slower than they are (cold metadata), but
    // not with a message per directory for the few changed files of an incremental.
    const b = this.batch;
    if (b !== undefined && this.batchesInFlight < this.readers && performance.now() - b.started >= BATCH_AGE_MS) this.flushBatch();
    const children = await this.walkSubdirs(absPrefix, subdirs);
    const tree = this.finishDir(self, works, waits, subdirs, children, rel === '', parent).then((id) => {
      if (fp !== undefined) this.newDirCache?.set(rel, { fp, tree: id, clean: !dirty && !works.some((w) => w.drop) });
      return id;
    });
    tree.catch(noop);
    return { tree };
  }

  /**
   * Walk subdirectories in order. Their listings (native scanner) and, without
   * a directory cache, their parent trees are fetched a few directories ahead.
   */
  private async walkSubdirs(absPrefix: string, subdirs: Work[]): Promise<Promise<BlobId>[]> {
    const children: Promise<BlobId>[] = [];
    if (subdirs.length === 0) return children;
    const parents: (Promise<{ nodes: TreeNode[]; id: BlobId } | undefined> | undefined)[] = new Array(subdirs.length);
    const listings: (Promise<Prepared> | undefined)[] = new Array(subdirs.length);
    const withId = (id: BlobId, rel: string) => this.loadParent(id, rel).then((t) => t && { nodes: t.nodes, id });
    let started = 0;
    const startUpTo = (n: number) => {
      for (; started < n && started < subdirs.length; started++) {
        const w = subdirs[started]!;
        if (this.opts.oneFileSystem && w.node.dev !== undefined) continue;
        const pn = w.parent;
        const prep = nativeScanner ? this.prepareAhead(absPrefix + w.node.name, w.rel) : undefined;
        listings[started] = prep;
        if (this.dirCache === undefined || prep === undefined) {
          if (pn && pn.type === 'dir' && pn.subtree) parents[started] = withId(pn.subtree, w.rel);
        } else {
          // Directory cache: the parent's tree only when the listing is not as cached.
          parents[started] = prep.then(
            (p) => {
              const old = p.hit ? undefined : (p.cached?.tree ?? (pn?.type === 'dir' ? pn.subtree : undefined));
              return old === undefined ? undefined : withId(old, w.rel);
            },
            () => undefined,
          );
        }
      }
    };
    for (let i = 0; i < subdirs.length; i++) {
      const w = subdirs[i]!;
      startUpTo(i + PREFETCH_DIRS);
      if (this.opts.oneFileSystem && w.node.dev !== undefined) {
        const empty = this.emptyTree();
        // Recorded so that the next backup finds this subtree as cached (never reused on its own).
        if (this.newDirCache !== undefined) empty.then((id) => this.newDirCache?.set(w.rel, { fp: '', tree: id, clean: false }), noop);
        children.push(empty);
        continue;
      }
      const pt = parents[i] ? await parents[i] : undefined;
      parents[i] = undefined;
      const listed = listings[i];
      listings[i] = undefined;
      if (pt !== undefined && w.parent === undefined) w.parent = { ...createNode(w.node.name, 'dir'), subtree: pt.id };
      const res = await this.walkDir(absPrefix + w.node.name, w.rel, pt?.nodes, w, listed);
      children.push(res.tree);
    }
    return children;
  }

  /**
   * A directory whose listing has the fingerprint the directory cache holds
   * for it: its files are as in the parent (counted, not compared), its
   * subdirectories are walked, and its tree is the cached one when they all
   * come out as cached, else the cached tree with their new subtrees.
   */
  private async cachedDir(abs: string, rel: string, raw: RawListing, c: CachedDir, fp: string): Promise<DirResult> {
    const prefix = rel + '/';
    const absPrefix = abs.endsWith('/') ? abs : abs + '/';
    const excludes = this.excludes;
    const { count, stats } = raw;
    // Names are decoded only when excludes need them (and for subdirectories).
    const names = excludes === undefined ? undefined : raw.names;
    const dirIdx: number[] = [];
    let kept = 0;
    for (let i = 0, o = 0; i < count; i++, o += RAW_FIELDS) {
      if (names !== undefined && excludes!(prefix + names[i]!)) continue;
      kept++;
      // A clean listing has no lstat errors (the fingerprint covers them).
      const type = typeOf(stats[o + RAW_MODE]!);
      if (type === 'dir') dirIdx.push(i);
      else {
        this.stats.files++;
        if (type === 'file') {
          const size = stats[o + RAW_SIZE]!;
          this.stats.bytesTotal += size;
          this.stats.filesUnchanged++;
          this.progressBytes += size;
          this.progressFiles++;
          if (size >= this.prereadMin) {
            const e = nativeEntriesOf(raw, [i])[0]!;
            this.noteLarge(prefix + e.name, e.st!);
          }
        }
      }
    }
    // Subdirectories in name order, like every walk.
    let subdirs: Work[] = [];
    if (dirIdx.length > 0) {
      const entries = nativeEntriesOf(raw, dirIdx);
      subdirs = entries.map((e) => ({ node: this.makeNode(e.name, e.st!, 'dir'), rel: prefix + e.name }));
      this.stats.dirs += subdirs.length;
    }
    const children = await this.walkSubdirs(absPrefix, subdirs);
    const tree = (async (): Promise<BlobId> => {
      const ids = await Promise.all(children);
      let id = c.tree;
      if (ids.some((t, i) => t !== this.dirCache!.get(subdirs[i]!.rel)?.tree)) {
        // A subdirectory changed: the cached tree with the new subtrees.
        const old = await this.loadParent(c.tree, rel);
        const sub = new Map(subdirs.map((w, i) => [w.node.name, ids[i]!]));
        if (old === undefined || old.nodes.length !== kept || old.nodes.filter((n) => n.type === 'dir' && sub.has(n.name)).length !== sub.size) {
          fs.rmSync(this.opts.dirCache!, { force: true });
          throw new IntegrityError(`directory cache: the stored tree of "${rel}" (${c.tree}) does not match its directory; the cache was removed, run the backup again`);
        }
        const nodes = old.nodes.map((n) => (n.type === 'dir' && sub.has(n.name) ? { ...n, subtree: sub.get(n.name)! } : n));
        id = await this.saveTree({ nodes });
      }
      this.newDirCache?.set(rel, { fp, tree: id, clean: true });
      return id;
    })();
    tree.catch(noop);
    return { tree };
  }

  private async finishDir(
    self: Work,
    works: Work[],
    waits: Promise<void>[],
    subdirs: Work[],
    children: Promise<BlobId>[],
    isRoot: boolean,
    parentNodes: TreeNode[] | undefined,
  ): Promise<BlobId> {
    if (waits.length > 0) await Promise.all(waits);
    for (let i = 0; i < subdirs.length; i++) subdirs[i]!.node.subtree = await children[i]!;
    if (this.xTargeted) {
      for (const w of isRoot ? [self, ...works] : works) {
        if (w.xbatch === undefined) continue;
        const x = (await w.xbatch.result).get(w.rel);
        w.node.xattrs = x ? sortedXattrs(x) : undefined;
      }
    }
    if (this.xattrScan) {
      if (this.xattrMap === undefined) this.xattrMap = await this.xattrScan.result;
      const xm = this.xattrMap;
      if (xm.size > 0) {
        for (const w of works) {
          const x = xm.get(w.rel);
          if (x) w.node.xattrs = sortedXattrs(x);
        }
        if (isRoot) {
          const x = xm.get('');
          if (x) self.node.xattrs = sortedXattrs(x);
        }
      }
    }
    if (this.failure !== undefined) throw this.failure;
    const nodes: TreeNode[] = [];
    for (const w of works) if (!w.drop) nodes.push(w.node);
    // Unchanged directory: its parent's tree (verified by its ID when loaded)
    // holds exactly these nodes, so it has the ID encoding them would give.
    const pn = self.parent;
    if (!isRoot && pn?.type === 'dir' && pn.subtree !== undefined && parentNodes !== undefined && this.repo.has(pn.subtree) && sameNodes(nodes, parentNodes)) {
      return pn.subtree;
    }
    const tree: Tree = { nodes };
    if (isRoot) {
      const { name: _n, ...root } = self.node;
      tree.root = root;
    }
    return this.saveTree(tree);
  }

  // ---- files -----------------------------------------------------------------

  /**
   * One regular file: parent skip, hardlink reuse, or read. Returns undefined
   * when the node is complete, else a promise the directory's tree waits for
   * (in synchronous mode, the walk awaits it right away).
   */
  private fileEntry(work: Work, abs: string, pn: TreeNode | undefined, st: EntryStat): Promise<void> | undefined {
    const node = work.node;
    const size = node.size!;
    this.stats.files++;
    this.stats.bytesTotal += size;
    const key = node.nlink !== undefined ? `${st.dev}:${st.ino}` : undefined;
    if (size >= this.prereadMin && this.newDirCache !== undefined) this.noteLarge(work.rel, st);
    if (pn !== undefined && pn.type === 'file' && pn.size === size && pn.mtimeNs === node.mtimeNs && pn.ctimeNs === node.ctimeNs && pn.inode === node.inode && pn.content !== undefined) {
      node.content = pn.content;
      if (pn.holes) node.holes = pn.holes;
      this.stats.filesUnchanged++;
      this.progressBytes += size;
      this.progressFiles++;
      if (key !== undefined && !this.links.has(key)) this.links.set(key, { work, ready: undefined });
      return undefined;
    }
    if (key !== undefined) {
      const first = this.links.get(key);
      if (first) {
        const copy = () => {
          if (first.work.drop) work.drop = true;
          else {
            node.content = first.work.node.content;
            if (first.work.node.holes) node.holes = first.work.node.holes;
            node.size = first.work.node.size;
          }
          this.progressFiles++;
        };
        if (first.ready === undefined) return void copy();
        return first.ready.then(copy);
      }
    }
    let done: Promise<void> | undefined;
    if (size === 0) {
      node.content = [];
      this.stats.filesRead++;
      this.progressFiles++;
    } else if (size >= this.chunkOpts.minSize) {
      done = this.claimPreread(work, abs, st) ?? this.largeFile(work, abs);
    } else if (this.readers === 0) {
      this.readSmallSync(work, abs);
    } else {
      done = this.queueSmall(work, abs, size);
    }
    if (done !== undefined) done.catch(noop);
    if (key !== undefined) this.links.set(key, { work, ready: done?.catch(noop) });
    return done;
  }

  /** Read failure of one file: warn, count, drop it. Fatal errors (abort, repository) propagate. */
  private fileError(work: Work, err: unknown): void {
    if (this.failure !== undefined) throw this.failure;
    if (work.pre) {
      work.drop = true;
      return;
    }
    this.stats.errors++;
    const code = typeof err === 'string' ? err : (err as NodeJS.ErrnoException)?.code;
    this.log.warn(code === 'ENOENT' ? `${work.rel} vanished during the backup` : `cannot read ${work.rel}: ${code ?? errText(err)}`);
    work.drop = true;
    work.node.content = [];
  }

  /** A file below the minimum chunk size: one blob (or one hole when sparse and all zero). */
  private smallFile(work: Work, data: Buffer, id?: BlobId | null): void {
    const node = work.node;
    const n = data.length;
    if (n !== node.size) {
      this.log.warn(`${work.rel} changed size during the backup (${node.size} → ${n} bytes)`);
      node.size = n;
    }
    if (node.sparse && isZero(data)) {
      node.content = [];
      if (n > 0) node.holes = [[0, n]];
    } else node.content = n === 0 ? [] : [this.saveData(data, id)];
    this.stats.filesRead++;
    this.stats.bytesRead += n;
    this.progressBytes += n;
    this.progressFiles++;
  }

  // -- reader threads: small files in batches

  private getPool(): IoPool {
    // A batch ends past BATCH_BYTES with a file smaller than a chunk.
    if (this.pool === undefined) {
      // With the repository's hash key, the threads also hash small files and cut and hash large ones.
      const hashing = this.repo.hashKey ? { hashKey: this.repo.hashKey(), chunker: this.chunkOpts } : undefined;
      this.pool = new IoPool(this.readers, this.openFlags, BATCH_BYTES + this.chunkOpts.minSize, undefined, hashing);
    }
    return this.pool;
  }

  private queueSmall(work: Work, abs: string, size: number): Promise<void> {
    let b = this.batch;
    if (b === undefined) {
      let resolve!: () => void;
      let reject!: (e: unknown) => void;
      const done = new Promise<void>((res, rej) => {
        resolve = res;
        reject = rej;
      });
      done.catch(noop);
      b = this.batch = { works: [], paths: [], sizes: [], bytes: 0, done, resolve, reject, started: performance.now() };
    }
    b.works.push(work);
    b.paths.push(abs);
    b.sizes.push(size);
    b.bytes += size;
    if (b.works.length >= BATCH_FILES || b.bytes >= BATCH_BYTES) this.flushBatch();
    return b.done;
  }

  /** Send the current batch of small files to a reader thread. */
  private flushBatch(): void {
    const b = this.batch;
    if (b === undefined) return;
    this.batch = undefined;
    this.batchesInFlight++;
    this.getPool()
      .readBatch(b.paths, b.sizes)
      .then(
        (res) => {
          this.batchesInFlight--;
          this.wakeBatches();
          if (this.failure !== undefined) throw this.failure;
          for (let i = 0; i < b.works.length; i++) {
            const len = res.lens[i]!;
            if (len < 0) this.fileError(b.works[i]!, res.errors[i]);
            else this.smallFile(b.works[i]!, res.buf.subarray(res.offsets[i]!, res.offsets[i]! + len), res.ids?.[i]);
          }
          // saveBlob copied every blob: the next batch reuses the buffer.
          this.pool?.recycle(res.buf);
          b.resolve();
        },
        (err) => {
          this.batchesInFlight--;
          this.fail(err);
          this.wakeBatches();
          throw err;
        },
      )
      .catch((err) => b.reject(this.failure ?? err));
  }

  private wakeBatches(): void {
    const w = this.batchWaiters;
    this.batchWaiters = [];
    for (const f of w) f();
  }

  private async waitBatches(): Promise<void> {
    while (this.batchesInFlight >= this.maxBatches && this.failure === undefined) {
      await new Promise<void>((r) => this.batchWaiters.push(r));
    }
    if (this.failure !== undefined) throw this.failure;
  }

  // -- synchronous reads on the main thread (readers: 0)

  private readSmallSync(work: Work, abs: string): void {
    let fd: number;
    try {
      fd = fs.openSync(abs, this.openFlags);
    } catch (err) {
      return this.fileError(work, err);
    }
    try {
      const size = work.node.size!;
      const buf = this.slabAlloc(size);
      let off = 0;
      while (off < size) {
        const n = fs.readSync(fd, buf, off, size - off, off);
        if (n === 0) break;
        off += n;
      }
      this.smallFile(work, buf.subarray(0, off));
    } catch (err) {
      this.fileError(work, err);
    } finally {
      fs.closeSync(fd);
    }
  }

  /** A slice of the current slab for a small file (one allocation per 4 MiB, not per file). */
  private slabAlloc(n: number): Buffer {
    if (this.slab.length - this.slabPos < n) {
      this.slab = Buffer.allocUnsafeSlow(Math.max(SLAB_SIZE, n));
      this.slabPos = 0;
    }
    const b = this.slab.subarray(this.slabPos, this.slabPos + n);
    this.slabPos += n;
    return b;
  }

  // -- large files: blocks through the chunker

  /**
   * Stream a file of at least the minimum chunk size through FastCDC: blocks
   * of READ_SIZE (from the reader threads, a few ahead; or read synchronously),
   * chunks cut across block boundaries, zero chunks of sparse files as holes.
   */
  private async largeFile(work: Work, abs: string, sem = this.largeSem): Promise<void> {
    const wait = sem.acquire();
    if (wait) await wait;
    let fd = -1;
    let reader: ChunkedReader | undefined;
    try {
      this.checkAbort();
      const node = work.node;
      const size = node.size!;
      let readBlock: (off: number, len: number, first: boolean) => Promise<BlockResult | ChunkedBlock> | BlockResult;
      let window = 1;
      /** Hands a block back once no chunk refers to it (reader threads only). */
      let recycle = (_b: Buffer): void => {};
      if (this.readers > 0) {
        const pool = this.getPool();
        if (pool.hashes) {
          // The thread cuts and hashes; this thread only looks the IDs up (and copies new chunks).
          reader = pool.chunkedReader(abs, size, node.sparse === true);
          const r = reader;
          readBlock = (off, len) => r.read(off, len);
        } else readBlock = (off, len, first) => pool.readBlock(abs, off, len, first);
        recycle = (b) => pool.recycle(b);
        window = LARGE_WINDOW;
      } else {
        try {
          fd = fs.openSync(abs, this.openFlags);
          if (!fs.fstatSync(fd).isFile()) return this.fileError(work, 'ECHANGED');
        } catch (err) {
          return this.fileError(work, err);
        }
        const f = fd;
        readBlock = (off, len) => {
          const buf = Buffer.allocUnsafeSlow(len);
          let n = 0;
          try {
            while (n < len) {
              const r = fs.readSync(f, buf, n, len - n, off + n);
              if (r === 0) break;
              n += r;
            }
          } catch (err) {
            return { buf, error: (err as NodeJS.ErrnoException).code ?? errText(err) };
          }
          return { buf: buf.subarray(0, n), error: null };
        };
      }
      const chunker = new Chunker(this.chunkOpts);
      const sparse = node.sparse === true;
      const content: BlobId[] = [];
      const holes: Hole[] = [];
      let parts: Buffer[] = [];
      let partsLen = 0;
      let chunkAt = 0;
      /** Earlier blocks the unfinished chunk (parts) still refers to. */
      let pinned: Buffer[] = [];
      const unpin = () => {
        for (const x of pinned) recycle(x);
        pinned = [];
      };
      /** The chunk in parts ends; `known`: its ID as the reader thread hashed it (null: a hole). */
      const emit = (known?: BlobId | null) => {
        if (known === null) holes.push([chunkAt, partsLen]);
        else if (known !== undefined && this.repo.has(known)) content.push(known);
        else {
          const data = parts.length === 1 ? parts[0]! : concatBytes(parts, partsLen);
          if (known === undefined && sparse && isZero(data)) holes.push([chunkAt, partsLen]);
          else content.push(this.saveData(data, known));
        }
        chunkAt += partsLen;
        parts = [];
        partsLen = 0;
      };
      const reqs: (Promise<BlockResult | ChunkedBlock> | BlockResult)[] = [];
      let next = 0;
      const request = () => {
        const r = readBlock(next, READ_SIZE, next === 0);
        if (r instanceof Promise) r.catch(noop);
        reqs.push(r);
        next += READ_SIZE;
      };
      while (reqs.length < window && next < size) request();
      let total = 0;
      while (reqs.length > 0) {
        this.checkAbort();
        const res = await reqs.shift()!;
        if (res.error) {
          for (const r of reqs) if (r instanceof Promise) r.catch(noop);
          return this.fileError(work, res.error);
        }
        if (this.inflight >= this.maxInflight) await this.waitRoom();
        const b = res.buf;
        total += b.length;
        this.stats.bytesRead += b.length;
        this.progressBytes += b.length;
        let s = 0;
        // Boundaries from the reader thread (with the chunks' IDs), or from the chunker here.
        const cuts = 'cuts' in res ? (res as ChunkedBlock) : undefined;
        let k = 0;
        for (;;) {
          let cut = -1;
          let known: BlobId | null | undefined;
          if (cuts === undefined) cut = s < b.length ? chunker.scan(b, s, b.length) : -1;
          else if (k < cuts.cuts.length) {
            cut = cuts.cuts[k]!;
            known = cuts.ids[k++];
          }
          if (cut < 0) {
            if (s < b.length) {
              parts.push(b.subarray(s));
              partsLen += b.length - s;
            }
            break;
          }
          parts.push(b.subarray(s, cut));
          partsLen += cut - s;
          emit(known);
          unpin();
          s = cut;
        }
        // Chunks were hashed and copied by saveBlob: only an unfinished chunk still refers to b.
        if (partsLen > 0) pinned.push(b);
        else recycle(b);
        if (b.length < READ_SIZE) break; // end of file (or it shrank)
        if (next < size) request();
        await this.maybeYield();
      }
      if (partsLen > 0) emit();
      unpin();
      if (total !== size) {
        this.log.warn(`${work.rel} changed size during the backup (${size} → ${total} bytes)`);
        node.size = total;
      }
      node.content = content;
      if (holes.length > 0) node.holes = holes;
      if (!work.pre) {
        this.stats.filesRead++;
        this.progressFiles++;
      }
    } finally {
      reader?.close();
      if (fd >= 0) fs.closeSync(fd);
      sem.release();
    }
  }

  // -- prereads: changed large files read before the walk gets to them

  /** A large file of this backup, for the next one's directory cache. */
  private noteLarge(rel: string, st: EntryStat): void {
    this.newLarge.push({ rel, size: st.size, mtimeNs: st.mtimeNs, ctimeNs: st.ctimeNs, ino: st.ino });
  }

  /**
   * Start reading the large files of the parent (directory cache) whose lstat
   * changed: a regular file of one link, on the backup's filesystem, reached
   * without a symlink on the way, not excluded. The walk takes the result
   * when it meets the file with the same lstat (claimPreread).
   */
  private startPrereads(list: readonly LargeFile[]): void {
    if (this.readers === 0 || list.length === 0) return;
    let real: string;
    try {
      real = fs.realpathSync(this.rootDir);
    } catch {
      return;
    }
    const realPrefix = real.endsWith('/') ? real : real + '/';
    const absPrefix = this.rootDir.endsWith('/') ? this.rootDir : this.rootDir + '/';
    for (const f of list.slice(0, PREREAD_MAX)) {
      if (this.excludes !== undefined && this.excludes(f.rel)) continue;
      const abs = absPrefix + f.rel;
      let st: EntryStat;
      try {
        const s = fs.lstatSync(abs, { bigint: true, throwIfNoEntry: false });
        if (s === undefined || !s.isFile()) continue;
        st = entryStat(s);
        if (sameFile(st, f)) continue; // unchanged: the parent skip takes it
        if (st.size < this.chunkOpts.minSize || st.nlink > 1 || (this.opts.oneFileSystem && st.dev !== this.rootDev)) continue;
        if (fs.realpathSync(abs) !== realPrefix + f.rel) continue;
      } catch {
        continue;
      }
      const work: Work = { node: this.makeNode(f.rel.slice(f.rel.lastIndexOf('/') + 1), st, 'file'), rel: f.rel, pre: true };
      const done = this.largeFile(work, abs, this.preSem);
      done.catch(noop);
      this.preDone.add(done);
      this.prereads.set(f.rel, { st, work, done });
    }
    if (this.prereads.size > 0) this.log.debug(`reading ${this.prereads.size} changed large files ahead of the walk`);
  }

  /**
   * The walk meets a file a preread started on: its result when the file's
   * lstat is still the one the preread started after (a preread that failed:
   * the file is read again, errors reported then). Undefined: no preread, or
   * the file changed since (read again; the preread is only waited for).
   */
  private claimPreread(work: Work, abs: string, st: EntryStat): Promise<void> | undefined {
    const pre = this.prereads.get(work.rel);
    if (pre === undefined) return undefined;
    this.prereads.delete(work.rel);
    const p = pre.st;
    if (!sameFile(p, st) || p.dev !== st.dev) return undefined;
    return pre.done.then(() => {
      if (pre.work.drop) return this.largeFile(work, abs);
      const n = pre.work.node;
      work.node.content = n.content;
      if (n.holes) work.node.holes = n.holes;
      work.node.size = n.size;
      this.stats.filesRead++;
      this.progressFiles++;
    });
  }
}

/**
 * Back up the tree under `rootDir`. Returns the root tree blob (the manifest's
 * `root`), statistics and engine facts. Blobs are only queued: the caller
 * flushes the repository before writing a manifest.
 */
export async function backupTree(rootDir: string, opts: BackupTreeOptions, ctx: EngineContext): Promise<EngineBackupResult> {
  return new TreeBackup(rootDir, opts, ctx).run();
}
