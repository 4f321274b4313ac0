/**
 * File engine restore: a stored tree → a directory.
 *
 * Order: directories are created (mode 0700 so they stay writable) and files
 * written while the trees are walked, several files and blob loads in flight;
 * then hardlinks, fifos and device nodes, then extended attributes (one
 * setfattr), then the metadata of directories, deepest first, so their times
 * are not disturbed by later writes. A file gets owner (root only), mode and
 * times on its descriptor right after its content.
 *
 * Safety: every name was validated when its tree was decoded (no "/", "..",
 * NUL; strictly sorted), paths are built from the real path of the target
 * only, every existing directory on the way is lstat'ed (a symlink there is an
 * IntegrityError, never followed), files are created with O_EXCL|O_NOFOLLOW,
 * and existing entries are only replaced with `overwrite`.
 *
 * Sparse files: holes recorded at backup stay holes (never written; the file
 * is ftruncated to its size), and in files marked sparse, all-zero 4 KiB
 * blocks inside stored chunks are skipped as well.
 */
import { execFile } from 'node:child_process';
import * as fs from 'node:fs';
import { constants as C } from 'node:fs';
import { IntegrityError, InterruptedError, NoSpaceError, NotFoundError, PermafrostError, fromSystemError } from '../../src/errors.js';
import type { BlobId } from '../../src/repository/types.js';
import type { EngineContext } from '../engine.js';
import { isZero } from './backup.js';
import { IoPool, type WriteSpec } from './iopool.js';
import { INTEGRITY_PREFIX, type StoredBlob, type StoredRef } from '../../src/repository/decode.js';
import { Semaphore, TaskSet } from './limit.js';
import { compileIncludes } from './select.js';
import { splitDev, type TreeNode } from './tree.js';
import { setTimes, splitNs } from './times.js';
import { loadTree, walkTree } from './walk.js';
import { restoreXattrs, type XattrEntry } from './xattr.js';

/** Options of restoreTree. */
export interface RestoreTreeOptions {
  /** Globs on paths relative to the backup root ("etc/**"); an entry is restored when it or an ancestor matches. */
  include?: string[];
  /** Replace existing entries in the target (never a symlink on the way, never a directory by a non-directory). */
  overwrite?: boolean;
  /** Files written at the same time (default 8). */
  fileConcurrency?: number;
  /** Data blobs loading at the same time (default 32). */
  loadConcurrency?: number;
  /** Writer threads for small files (default 4: as fast as 8 here, ~45 MiB less memory; 0: everything on the main thread). */
  writers?: number;
}

/** What a restore did. */
export interface RestoreResult {
  files: number;
  dirs: number;
  symlinks: number;
  hardlinks: number;
  /** fifos and device nodes. */
  specials: number;
  /** Logical bytes of the restored files. */
  bytes: number;
  /** Entries not restored: existing without overwrite, sockets, devices when not root. */
  skipped: number;
  errors: number;
  /** Blobs that were missing or failed verification (their files are counted in errors). */
  damaged: number;
}

interface DirEntry {
  rel: string;
  abs: string;
  node: Omit<TreeNode, 'name'> | undefined;
  /** Created (or validated) on disk. */
  ready: boolean;
  /** Could not be created: nothing below it is restored. */
  failed: boolean;
  /** Metadata to apply at the end. */
  apply: boolean;
}

const BLOCK = 4096;
const WRITE_BATCH_FILES = 64;
const WRITE_BATCH_BYTES = 4 << 20;
/** Chunks of one large file loading ahead of its writes, and chunk writes of one file in flight. */
const LOADS_AHEAD = 4;
const WRITES_AHEAD = 3;
const EMPTY_BUF = Buffer.alloc(0);
const noop = (): void => {};

/** A file the writer threads can restore in one go: at most one chunk, no partial holes. */
function isSmall(node: TreeNode): boolean {
  const c = node.content?.length ?? 0;
  const h = node.holes?.length ?? 0;
  return (c === 1 && h === 0) || (c === 0 && h <= 1);
}

function code(err: unknown): string | undefined {
  const c = (err as NodeJS.ErrnoException | undefined)?.code;
  return typeof c === 'string' ? c : undefined;
}

function isFatal(err: unknown): boolean {
  if (err instanceof InterruptedError || err instanceof NoSpaceError) return true;
  const c = code(err);
  return c === 'ENOSPC' || c === 'EDQUOT' || c === 'EROFS' || c === 'EMFILE' || c === 'ENFILE';
}

function run(cmd: string, args: string[]): Promise<void> {
  return new Promise((resolve, reject) => {
    execFile(cmd, args, { env: { ...process.env, LC_ALL: 'C' } }, (err, _out, stderr) => {
      if (err) reject(new Error(`${cmd}: ${String(stderr).trim() || err.message}`));
      else resolve();
    });
  });
}

class TreeRestore {
  readonly result: RestoreResult = { files: 0, dirs: 0, symlinks: 0, hardlinks: 0, specials: 0, bytes: 0, skipped: 0, errors: 0, damaged: 0 };
  private base = '';
  private readonly isRoot = process.getuid?.() === 0;
  private readonly overwrite: boolean;
  private readonly fileSem: Semaphore;
  private readonly loadSem: Semaphore;
  private readonly tasks = new TaskSet();
  private readonly stack: DirEntry[] = [];
  private readonly dirs: DirEntry[] = [];
  private readonly links = new Map<string, string>();
  private readonly deferredLinks: { rel: string; abs: string; target: string }[] = [];
  private readonly specials: { rel: string; abs: string; node: TreeNode }[] = [];
  private readonly xattrs: XattrEntry[] = [];
  private fatal: unknown;
  private readonly writers: number;
  private readonly smallSem: Semaphore;
  private readonly batchSem: Semaphore;
  private pool?: IoPool;
  private wbatch?: { files: WriteSpec[]; bufs: Buffer[]; bytes: number; items: { rel: string; node: TreeNode }[] };
  /**
   * Blobs are read here and decoded, verified and written by the writer
   * threads (the main thread only walks trees and reads packs): when there are
   * writers and the store hands out stored blobs.
   */
  private readonly stored: boolean;
  /** Files that could not be created: hardlinks to them are not made. */
  private readonly failedLinks = new Set<string>();
  /** Files left as they were (existing, no overwrite): their hardlinks are skipped too, not errors. */
  private readonly skippedLinks = new Set<string>();

  constructor(
    private readonly rootId: BlobId,
    private readonly target: string,
    private readonly opts: RestoreTreeOptions,
    private readonly ctx: EngineContext,
  ) {
    this.overwrite = opts.overwrite === true;
    this.fileSem = new Semaphore(Math.max(1, opts.fileConcurrency ?? 8));
    this.loadSem = new Semaphore(Math.max(1, opts.loadConcurrency ?? 32));
    this.writers = Math.max(0, Math.floor(opts.writers ?? 4));
    this.smallSem = new Semaphore(64);
    this.batchSem = new Semaphore(Math.max(2, this.writers * 2));
    this.stored = this.writers > 0 && ctx.repo.loadStored !== undefined && ctx.repo.codec !== undefined;
  }

  async run(): Promise<RestoreResult> {
    const { ctx } = this;
    if (ctx.signal.aborted) throw new InterruptedError();
    try {
      fs.mkdirSync(this.target, { recursive: true });
      this.base = fs.realpathSync(this.target);
    } catch (err) {
      throw fromSystemError(err, `cannot create ${this.target}`);
    }
    if (!fs.statSync(this.base).isDirectory()) throw new IntegrityError(`${this.target} is not a directory`);
    const sel = compileIncludes(this.opts.include);
    const root = await loadTree(ctx.repo, this.rootId);
    const rootEntry: DirEntry = { rel: '', abs: this.base, node: root.root, ready: true, failed: false, apply: sel === undefined && root.root !== undefined };
    this.stack.push(rootEntry);
    try {
      // The writer threads start while the first subtrees load (each takes some tens of
      // milliseconds); inside this try, so that the finally below stops them on any error.
      if (this.stored) this.getPool().start();
      for await (const ev of walkTree(ctx.repo, root, sel, ctx.signal)) {
        if (this.fatal !== undefined) throw this.fatal;
        if (ev.kind === 'leave') {
          this.stack.pop();
          continue;
        }
        const { rel, node, selected } = ev;
        const abs = this.base + '/' + rel;
        if (node.type === 'dir') {
          const entry: DirEntry = { rel, abs, node, ready: false, failed: false, apply: false };
          this.stack.push(entry);
          if (selected) this.ensureDirs();
          continue;
        }
        if (!selected) continue;
        if (!this.ensureDirs()) {
          this.result.skipped++;
          continue;
        }
        await this.entry(rel, abs, node);
      }
      // Small files still loading when the walk ends join the write batch after it: drain, then
      // flush what they added, until nothing is left (a single flush here lost those files).
      await this.tasks.drain();
      while (this.wbatch !== undefined && this.wbatch.files.length > 0) {
        await this.flushWrites();
        await this.tasks.drain();
      }
    } catch (err) {
      await this.tasks.drain().catch(noop);
      throw this.fatal ?? err;
    } finally {
      await this.pool?.close();
    }
    if (this.fatal !== undefined) throw this.fatal;
    this.finishLinks();
    await this.finishSpecials();
    if (ctx.signal.aborted) throw new InterruptedError();
    if (rootEntry.apply && root.root?.xattrs) this.xattrs.push({ path: '.', xattrs: root.root.xattrs });
    this.result.errors += await restoreXattrs(this.base, this.xattrs, ctx.log);
    // Directories: deepest first (reverse creation order), then the root.
    for (let i = this.dirs.length - 1; i >= 0; i--) this.applyDirMeta(this.dirs[i]!);
    if (rootEntry.apply) this.applyDirMeta(rootEntry);
    return this.result;
  }

  private warn(msg: string): void {
    this.result.errors++;
    this.ctx.log.warn(msg);
  }

  // ---- directories -----------------------------------------------------------

  /** Create the directories on the stack that are not there yet; false when one cannot be. */
  private ensureDirs(): boolean {
    for (const e of this.stack) {
      if (e.failed) return false;
      if (e.ready) continue;
      if (!this.createDir(e)) {
        e.failed = true;
        return false;
      }
      e.ready = true;
    }
    return true;
  }

  private createDir(e: DirEntry): boolean {
    try {
      fs.mkdirSync(e.abs, 0o700);
    } catch (err) {
      if (code(err) !== 'EEXIST') {
        if (isFatal(err)) throw fromSystemError(err, `cannot create directory ${e.rel}`);
        this.warn(`cannot create directory ${e.rel}: ${code(err) ?? (err as Error).message}`);
        return false;
      }
      const st = fs.lstatSync(e.abs);
      if (st.isSymbolicLink()) throw new IntegrityError(`refusing to restore through the symlink ${e.rel} in the target`);
      if (!st.isDirectory()) {
        if (!this.overwrite) {
          this.ctx.log.warn(`${e.rel} exists and is not a directory; skipped with its contents (use overwrite)`);
          this.result.skipped++;
          return false;
        }
        fs.unlinkSync(e.abs);
        fs.mkdirSync(e.abs, 0o700);
      } else {
        // Existing directory: merge into it; metadata only when overwriting.
        if (this.overwrite) {
          e.apply = true;
          this.dirs.push(e);
        }
        this.result.dirs++;
        if (e.node?.xattrs && this.overwrite) this.xattrs.push({ path: e.rel, xattrs: e.node.xattrs });
        return true;
      }
    }
    e.apply = true;
    this.dirs.push(e);
    this.result.dirs++;
    if (e.node?.xattrs) this.xattrs.push({ path: e.rel, xattrs: e.node.xattrs });
    return true;
  }

  private applyDirMeta(e: DirEntry): void {
    const n = e.node;
    if (!n) return;
    try {
      if (this.isRoot) fs.lchownSync(e.abs, n.uid, n.gid);
      fs.chmodSync(e.abs, n.mode);
      setTimes(e.abs, n.atimeNs ?? n.mtimeNs, n.mtimeNs, true);
    } catch (err) {
      this.warn(`cannot set the metadata of ${e.rel || '.'}: ${code(err) ?? (err as Error).message}`);
    }
  }

  // ---- entries ----------------------------------------------------------------

  /** Make room for a new entry at abs: false when it exists and must stay. */
  private clear(rel: string, abs: string): boolean {
    const st = fs.lstatSync(abs, { throwIfNoEntry: false });
    if (!st) return true;
    if (!this.overwrite) {
      this.result.skipped++;
      this.ctx.log.warn(`${rel} exists; skipped (use overwrite)`);
      return false;
    }
    if (st.isDirectory()) {
      this.result.skipped++;
      this.ctx.log.warn(`${rel} exists as a directory; not replaced`);
      return false;
    }
    fs.unlinkSync(abs);
    return true;
  }

  private async entry(rel: string, abs: string, node: TreeNode): Promise<void> {
    try {
      switch (node.type) {
        case 'file':
          return await this.file(rel, abs, node);
        case 'symlink':
          return this.symlink(rel, abs, node);
        case 'fifo':
        case 'chardev':
        case 'blockdev':
          this.specials.push({ rel, abs, node });
          return;
        case 'socket':
          this.result.skipped++;
          this.ctx.log.debug(`${rel}: socket, not restored`);
          return;
        default:
          return;
      }
    } catch (err) {
      if (err instanceof PermafrostError || isFatal(err)) throw fromSystemError(err, `cannot restore ${rel}`);
      this.warn(`cannot restore ${rel}: ${code(err) ?? (err as Error).message}`);
    }
  }

  private symlink(rel: string, abs: string, node: TreeNode): void {
    try {
      fs.symlinkSync(node.linkTarget!, abs);
    } catch (err) {
      if (code(err) !== 'EEXIST' || !this.clear(rel, abs)) {
        if (code(err) !== 'EEXIST') throw err;
        return;
      }
      fs.symlinkSync(node.linkTarget!, abs);
    }
    this.result.symlinks++;
    if (this.isRoot) {
      try {
        fs.lchownSync(abs, node.uid, node.gid);
      } catch (err) {
        this.warn(`cannot set the owner of ${rel}: ${code(err)}`);
      }
    }
    setTimes(abs, node.atimeNs ?? node.mtimeNs, node.mtimeNs, true);
    if (node.xattrs) this.xattrs.push({ path: rel, xattrs: node.xattrs });
  }

  private async file(rel: string, abs: string, node: TreeNode): Promise<void> {
    let key: string | undefined;
    if (node.nlink !== undefined && node.nlink > 1) {
      key = `${node.dev ?? ''}:${node.inode}`;
      const first = this.links.get(key);
      if (first !== undefined) {
        this.deferredLinks.push({ rel, abs, target: first });
        return;
      }
    }
    if (this.writers > 0 && isSmall(node)) {
      // Local repositories: where the blob lies is known at once, nothing to load here.
      const ref = this.stored ? this.locateNow(rel, abs, node) : undefined;
      if (ref !== undefined) {
        if (key !== undefined) this.links.set(key, abs);
        if (ref === null) return;
        if (this.addSmall(rel, abs, node, EMPTY_BUF, undefined, ref)) await this.flushWrites();
        return;
      }
      const w = this.smallSem.acquire();
      if (w) await w;
      if (key !== undefined) this.links.set(key, abs);
      const task = this.smallFile(rel, abs, node).finally(() => this.smallSem.release());
      this.tasks.add(task);
      return;
    }
    const wait = this.fileSem.acquire();
    if (wait) await wait;
    let fd: number;
    try {
      fd = this.createFile(rel, abs);
    } catch (err) {
      this.fileSem.release();
      throw err;
    }
    if (fd < 0) {
      this.fileSem.release();
      return;
    }
    if (key !== undefined) this.links.set(key, abs);
    if (node.xattrs) this.xattrs.push({ path: rel, xattrs: node.xattrs });
    const task = (this.stored ? this.writeFileStored(fd, rel, abs, node) : this.writeFile(fd, rel, node)).then(
      () => {
        this.fileSem.release();
      },
      (err) => {
        this.fileSem.release();
        if (err instanceof InterruptedError || isFatal(err)) {
          this.fatal ??= fromSystemError(err, `cannot write ${rel}`);
          throw this.fatal;
        }
        this.warn(`cannot restore ${rel}: ${(err as Error).message}`);
      },
    );
    this.tasks.add(task);
  }

  // -- small files: batches for the writer threads

  private getPool(): IoPool {
    this.pool ??= new IoPool(this.writers, 0, undefined, this.stored ? this.ctx.repo.codec!() : undefined);
    return this.pool;
  }

  /** Load a small file's one blob (as stored, or decoded) and add it to the current write batch. */
  private async smallFile(rel: string, abs: string, node: TreeNode): Promise<void> {
    let data: Buffer = EMPTY_BUF;
    let blob: StoredBlob | undefined;
    let ref: StoredRef | undefined;
    const content = node.content ?? [];
    if (content.length === 1) {
      try {
        if (this.stored) {
          const b = await this.locate(content[0]!);
          if ('path' in b) ref = b;
          else {
            blob = b;
            data = b.stored;
            this.loadSem.release();
          }
        } else {
          data = await this.loadChunk(content[0]!);
          this.loadSem.release();
        }
      } catch (err) {
        this.smallFailed(rel, abs, err);
        return;
      }
    }
    if (this.addSmall(rel, abs, node, data, blob, ref)) await this.flushWrites();
  }

  /**
   * A small file's blob location when the store knows it without loading (local packs), or
   * an empty ref for an empty file; undefined when it must be loaded (smallFile); null when
   * it cannot be restored (counted and warned here).
   */
  private locateNow(rel: string, abs: string, node: TreeNode): StoredRef | undefined | null {
    const content = node.content ?? [];
    if (content.length !== 1) return undefined;
    try {
      return this.locateLocal(content[0]!);
    } catch (err) {
      this.smallFailed(rel, abs, err);
      return null;
    }
  }

  /** A small file that cannot be restored: its hardlinks are not made; fatal errors propagate, others are warned about. */
  private smallFailed(rel: string, abs: string, err: unknown): void {
    this.failedLinks.add(abs);
    if (err instanceof InterruptedError || isFatal(err)) throw err;
    this.warn(`cannot restore ${rel}: ${(err as Error).message}`);
  }

  /** Add a small file to the current write batch; true when the batch is full (flushWrites). */
  private addSmall(rel: string, abs: string, node: TreeNode, data: Buffer, blob: StoredBlob | undefined, ref: StoredRef | undefined): boolean {
    const size = node.size ?? 0;
    const holes = node.holes ?? [];
    const length = ref?.rawLength ?? blob?.rawLength ?? data.length;
    if (holes.length === 0 ? length !== size : length !== 0) this.warn(`${rel}: content (${length} bytes) does not match the recorded size ${size}`);
    const b = (this.wbatch ??= { files: [], bufs: [], bytes: 0, items: [] });
    b.files.push({
      path: abs,
      size,
      off: b.bytes,
      mode: node.mode,
      uid: node.uid,
      gid: node.gid,
      atime: splitNs(node.atimeNs ?? node.mtimeNs),
      mtime: splitNs(node.mtimeNs),
      chown: this.isRoot,
      sparse: node.sparse === true,
      overwrite: this.overwrite,
      len: ref?.length ?? data.length,
      blob: ref ? { id: ref.id, flags: ref.flags, rawLength: ref.rawLength, path: ref.path, offset: ref.offset } : blob && { id: blob.id, flags: blob.flags, rawLength: blob.rawLength },
    });
    b.bufs.push(data);
    b.bytes += data.length;
    b.items.push({ rel, node });
    return b.files.length >= WRITE_BATCH_FILES || b.bytes >= WRITE_BATCH_BYTES;
  }

  /** Send the current write batch to a writer thread (waits while too many are in flight). */
  private async flushWrites(): Promise<void> {
    const b = this.wbatch;
    if (b === undefined || b.files.length === 0) return;
    this.wbatch = undefined;
    const w = this.batchSem.acquire();
    if (w) await w;
    const task = this.getPool()
      .writeFiles(b.files, b.bufs, b.bytes)
      .then(
        (results) => {
          this.batchSem.release();
          for (let i = 0; i < results.length; i++) {
            const { rel, node } = b.items[i]!;
            const err = results[i];
            if (err === null || err === undefined) {
              this.result.files++;
              this.result.bytes += node.size ?? 0;
              if (node.xattrs) this.xattrs.push({ path: rel, xattrs: node.xattrs });
              this.ctx.progress.advance(node.size ?? 0, 1);
              continue;
            }
            if (err === 'EEXIST' || err === 'EISDIR') this.skippedLinks.add(b.files[i]!.path);
            else this.failedLinks.add(b.files[i]!.path);
            if (err === 'EEXIST') {
              this.result.skipped++;
              this.ctx.log.warn(`${rel} exists; skipped (use overwrite)`);
            } else if (err === 'EISDIR') {
              this.result.skipped++;
              this.ctx.log.warn(`${rel} exists as a directory; not replaced`);
            } else if (err.startsWith(INTEGRITY_PREFIX)) {
              this.result.damaged++;
              this.warn(`cannot restore ${rel}: ${err.slice(INTEGRITY_PREFIX.length)}`);
            } else if (isFatal({ code: err })) {
              this.fatal ??= fromSystemError(Object.assign(new Error(err), { code: err }), `cannot write ${rel}`);
            } else this.warn(`cannot restore ${rel}: ${err}`);
          }
          if (this.fatal !== undefined) throw this.fatal;
        },
        (err) => {
          this.batchSem.release();
          throw err;
        },
      );
    this.tasks.add(task);
  }

  /** Open a new file for writing; -1 when it exists and must stay. */
  private createFile(rel: string, abs: string): number {
    const flags = C.O_WRONLY | C.O_CREAT | C.O_EXCL | C.O_NOFOLLOW;
    try {
      return fs.openSync(abs, flags, 0o600);
    } catch (err) {
      if (code(err) !== 'EEXIST') throw err;
      if (!this.clear(rel, abs)) return -1;
      return fs.openSync(abs, flags, 0o600);
    }
  }

  private loadChunk(id: BlobId): Promise<Buffer> {
    return this.load(() => this.ctx.repo.loadBlob('data', id));
  }

  private loadStoredChunk(id: BlobId): Promise<StoredBlob> {
    return this.load(() => this.ctx.repo.loadStored!('data', id));
  }

  /**
   * Where a blob is for a writer thread that reads it itself (local repositories: no permit,
   * nothing read here), or the blob as stored, loaded under the load semaphore.
   */
  private locate(id: BlobId): Promise<StoredBlob | StoredRef> {
    let ref: StoredRef | undefined;
    try {
      ref = this.locateLocal(id);
    } catch (err) {
      return Promise.reject(err);
    }
    return ref !== undefined ? Promise.resolve(ref) : this.loadStoredChunk(id);
  }

  /** Where a blob lies when the store knows it without loading anything (local packs); a damaged or missing one is counted, then thrown. */
  private locateLocal(id: BlobId): StoredRef | undefined {
    try {
      return this.ctx.repo.locateStored?.('data', id);
    } catch (err) {
      if (err instanceof IntegrityError || err instanceof NotFoundError) this.result.damaged++;
      throw err;
    }
  }

  /** One blob load under the load semaphore (its permit is the caller's to release once the blob is used). */
  private load<T>(read: () => Promise<T>): Promise<T> {
    const go = async () => {
      const w = this.loadSem.acquire();
      if (w) await w;
      try {
        return await read();
      } catch (err) {
        this.loadSem.release();
        if (err instanceof IntegrityError || err instanceof NotFoundError) this.result.damaged++;
        throw err;
      }
    };
    const p = go();
    p.catch(noop);
    return p;
  }

  /**
   * A file of several chunks, decoded, verified and written by one writer
   * thread in file order (see IoPool.fileWriter), while the next chunks load.
   */
  private async writeFileStored(fd: number, rel: string, abs: string, node: TreeNode): Promise<void> {
    const { ctx } = this;
    const content = node.content ?? [];
    const holes = node.holes ?? [];
    const writer = this.getPool().fileWriter(fd, abs, node.sparse === true);
    const loads: (Promise<StoredBlob | StoredRef> | undefined)[] = new Array(content.length);
    const writes = new Set<Promise<void>>();
    let pos = 0;
    let hi = 0;
    let k = 0;
    try {
      try {
        for (; k < content.length && k < LOADS_AHEAD; k++) loads[k] = this.locate(content[k]!);
        for (let i = 0; i < content.length; i++) {
          if (ctx.signal.aborted) throw new InterruptedError();
          while (hi < holes.length && holes[hi]![0] === pos) pos += holes[hi++]![1];
          const b = await loads[i]!;
          loads[i] = undefined;
          let w: Promise<void>;
          if ('path' in b) w = writer.writeChunkFrom(pos, b);
          else {
            // writeChunk copies the stored bytes before it returns: the load's permit is free.
            w = writer.writeChunk({ pos, id: b.id, flags: b.flags, rawLength: b.rawLength, stored: b.stored });
            this.loadSem.release();
          }
          pos += b.rawLength;
          const len = b.rawLength;
          const t: Promise<void> = w.then(() => {
            writes.delete(t);
            ctx.progress.advance(len, 0);
          });
          t.catch(noop);
          writes.add(t);
          if (k < content.length) {
            loads[k] = this.locate(content[k]!);
            k++;
          }
          while (writes.size >= WRITES_AHEAD) await Promise.race(writes);
        }
        await Promise.all(writes);
      } catch (err) {
        // Nothing may still write to fd when it is closed (its number would be reused).
        await Promise.allSettled(writes);
        await writer.finish(true).catch(noop);
        throw err;
      }
      const end = await writer.finish(false);
      this.finishFile(fd, rel, node, pos, hi, end);
    } catch (err) {
      const c = code(err);
      if (c !== undefined && c.startsWith(INTEGRITY_PREFIX)) {
        this.result.damaged++;
        throw new IntegrityError(c.slice(INTEGRITY_PREFIX.length));
      }
      throw err;
    } finally {
      for (let i = 0; i < loads.length; i++) {
        const p = loads[i];
        if (p) p.then((b) => 'path' in b || this.loadSem.release(), noop);
      }
      fs.closeSync(fd);
    }
  }

  /** After a file's content: trailing holes, the size check, truncation to the size, owner, mode, times. */
  private finishFile(fd: number, rel: string, node: TreeNode, pos: number, hi: number, end: number): void {
    const holes = node.holes ?? [];
    const size = node.size ?? 0;
    while (hi < holes.length && holes[hi]![0] === pos) pos += holes[hi++]![1];
    if (pos !== size || hi !== holes.length) this.warn(`${rel}: content (${pos} bytes) does not match the recorded size ${size}`);
    if (end < size) fs.ftruncateSync(fd, size);
    if (this.isRoot) fs.fchownSync(fd, node.uid, node.gid);
    fs.fchmodSync(fd, node.mode);
    setTimes(fd, node.atimeNs ?? node.mtimeNs, node.mtimeNs);
    this.result.files++;
    this.result.bytes += size;
    this.ctx.progress.advance(0, 1);
  }

  private async writeFile(fd: number, rel: string, node: TreeNode): Promise<void> {
    const { ctx } = this;
    const content = node.content ?? [];
    const holes = node.holes ?? [];
    const sparse = node.sparse === true;
    const WINDOW = 4;
    const loads: (Promise<Buffer> | undefined)[] = new Array(content.length);
    let pos = 0;
    let end = 0;
    let hi = 0;
    let k = 0;
    try {
      for (; k < content.length && k < WINDOW; k++) loads[k] = this.loadChunk(content[k]!);
      for (let i = 0; i < content.length; i++) {
        if (ctx.signal.aborted) throw new InterruptedError();
        while (hi < holes.length && holes[hi]![0] === pos) pos += holes[hi++]![1];
        const data = await loads[i]!;
        loads[i] = undefined;
        try {
          end = Math.max(end, this.write(fd, data, pos, sparse));
        } finally {
          this.loadSem.release();
        }
        pos += data.length;
        if (k < content.length) {
          loads[k] = this.loadChunk(content[k]!);
          k++;
        }
        ctx.progress.advance(data.length, 0);
      }
      this.finishFile(fd, rel, node, pos, hi, end);
    } finally {
      // Loads started but not consumed hold permits: give them back once settled.
      for (let i = 0; i < loads.length; i++) {
        const p = loads[i];
        if (p) p.then(() => this.loadSem.release(), noop);
      }
      fs.closeSync(fd);
    }
  }

  /** Write data at pos (skipping all-zero 4 KiB blocks when sparse); returns the end of what was written. */
  private write(fd: number, data: Buffer, pos: number, sparse: boolean): number {
    if (!sparse) {
      writeAll(fd, data, 0, data.length, pos);
      return pos + data.length;
    }
    let end = 0;
    let runStart = -1;
    for (let off = 0; off < data.length; off += BLOCK) {
      const stop = Math.min(off + BLOCK, data.length);
      if (isZero(data.subarray(off, stop))) {
        if (runStart >= 0) {
          writeAll(fd, data, runStart, off - runStart, pos + runStart);
          end = pos + off;
          runStart = -1;
        }
      } else if (runStart < 0) runStart = off;
    }
    if (runStart >= 0) {
      writeAll(fd, data, runStart, data.length - runStart, pos + runStart);
      end = pos + data.length;
    }
    return end;
  }

  // ---- after the walk ----------------------------------------------------------

  private finishLinks(): void {
    for (const l of this.deferredLinks) {
      if (this.skippedLinks.has(l.target)) {
        this.result.skipped++;
        this.ctx.log.warn(`hardlink ${l.rel} skipped: its first name exists and was not replaced (use overwrite)`);
        continue;
      }
      if (this.failedLinks.has(l.target)) {
        this.warn(`hardlink ${l.rel} not created: its first name was not restored`);
        continue;
      }
      try {
        try {
          fs.linkSync(l.target, l.abs);
        } catch (err) {
          if (code(err) !== 'EEXIST') throw err;
          if (!this.clear(l.rel, l.abs)) continue;
          fs.linkSync(l.target, l.abs);
        }
        this.result.hardlinks++;
      } catch (err) {
        if (isFatal(err)) throw fromSystemError(err, `cannot link ${l.rel}`);
        this.warn(`cannot create the hardlink ${l.rel}: ${code(err) ?? (err as Error).message}`);
      }
    }
  }

  private async finishSpecials(): Promise<void> {
    const fifos: { rel: string; abs: string; node: TreeNode }[] = [];
    for (const s of this.specials) {
      if (!this.clear(s.rel, s.abs)) continue;
      if (s.node.type === 'fifo') {
        fifos.push(s);
        continue;
      }
      if (!this.isRoot) {
        this.result.skipped++;
        this.ctx.log.warn(`${s.rel}: device node not restored (needs root)`);
        continue;
      }
      const [major, minor] = splitDev(s.node.rdev ?? 0);
      try {
        await run('mknod', ['-m', '600', '--', s.abs, s.node.type === 'chardev' ? 'c' : 'b', String(major), String(minor)]);
        this.specialMeta(s.rel, s.abs, s.node);
      } catch (err) {
        this.warn(`cannot create the device node ${s.rel}: ${(err as Error).message}`);
      }
    }
    // All fifos with one mkfifo (per 500, to stay below argument limits).
    for (let i = 0; i < fifos.length; i += 500) {
      const batch = fifos.slice(i, i + 500);
      try {
        await run('mkfifo', ['-m', '600', '--', ...batch.map((f) => f.abs)]);
      } catch (err) {
        this.ctx.log.debug(`mkfifo: ${(err as Error).message}`);
      }
      for (const f of batch) {
        const st = fs.lstatSync(f.abs, { throwIfNoEntry: false });
        if (!st?.isFIFO()) {
          this.warn(`cannot create the fifo ${f.rel}`);
          continue;
        }
        this.specialMeta(f.rel, f.abs, f.node);
      }
    }
  }

  private specialMeta(rel: string, abs: string, node: TreeNode): void {
    this.result.specials++;
    try {
      if (this.isRoot) fs.lchownSync(abs, node.uid, node.gid);
      fs.chmodSync(abs, node.mode);
      setTimes(abs, node.atimeNs ?? node.mtimeNs, node.mtimeNs, true);
    } catch (err) {
      this.warn(`cannot set the metadata of ${rel}: ${code(err) ?? (err as Error).message}`);
    }
    if (node.xattrs) this.xattrs.push({ path: rel, xattrs: node.xattrs });
  }
}

function writeAll(fd: number, buf: Buffer, off: number, len: number, pos: number): void {
  while (len > 0) {
    const n = fs.writeSync(fd, buf, off, len, pos);
    off += n;
    len -= n;
    pos += n;
  }
}

/**
 * Restore the tree `root` into `targetDir` (created when missing). Returns
 * counts; per-entry failures are logged and counted in `errors`, while hostile
 * trees and symlinks on the way (IntegrityError), a full disk and aborts throw.
 */
export async function restoreTree(root: BlobId, targetDir: string, opts: RestoreTreeOptions, ctx: EngineContext): Promise<RestoreResult> {
  return new TreeRestore(root, targetDir, opts, ctx).run();
}
