/**
 * LocalStorage: the Storage interface over a directory on a local (or mounted) filesystem.
 *
 * Each key is a file under the root ("data/ab/abcd…" → ROOT/data/ab/abcd…). A put writes a temporary
 * file beside the final one (`<name>.tmp-<random>`), fsyncs it, moves it into place (rename, or link
 * for a conditional create) and fsyncs the directory, so a reader sees the whole object or nothing,
 * also after a crash or a kill mid-write. Temporary files are never listed nor readable as keys.
 */
import { randomBytes } from 'node:crypto';
import { closeSync, constants as fsConstants, fsync, mkdirSync, openSync, writeSync } from 'node:fs';
import { promisify } from 'node:util';
import { link, mkdir, open, opendir, rename, rm, stat, unlink, type FileHandle } from 'node:fs/promises';
import { dirname, join, resolve, sep } from 'node:path';
import { AlreadyExistsError, NotFoundError, UsageError, fromSystemError } from '../errors.js';
import { log } from '../util/log.js';
import type { ObjectInfo, PutOptions, StagedObject, Storage } from './storage.js';

/** Suffix marker of a put's temporary file; keys may not contain it. */
const TEMP_MARK = '.tmp-';
const TEMP_RE = /\.tmp-[0-9a-f]{16}$/;

/** Options of LocalStorage. */
export interface LocalStorageOptions {
  /** Mode of new object files (default 0o600: repositories hold backup data). */
  fileMode?: number;
  /** Mode of new directories (default 0o700). */
  dirMode?: number;
}

/** True when a file name is a put's temporary file (skipped by list, removable by removeStaleTemp). */
export function isTempName(name: string): boolean {
  return TEMP_RE.test(name);
}

/**
 * Check a storage key: slash-separated, relative, no empty, "." or ".." segment, no temp marker.
 * Throws UsageError otherwise, so no key can escape the root or pass for a temporary file.
 */
export function checkKey(key: string): void {
  if (typeof key !== 'string' || key.length === 0) throw new UsageError('storage key is empty');
  if (key.includes('\0') || key.includes('\\')) throw new UsageError(`storage key ${JSON.stringify(key)} has a forbidden character`);
  const parts = key.split('/');
  for (const p of parts) {
    if (p === '' || p === '.' || p === '..') throw new UsageError(`storage key ${JSON.stringify(key)} is not a clean relative path`);
  }
  if (key.includes(TEMP_MARK)) throw new UsageError(`storage key ${JSON.stringify(key)} contains the reserved marker ${TEMP_MARK}`);
}

/** Directory-backed Storage. Guarantees: atomic, durable put; race-safe conditional create (link(2)). */
export class LocalStorage implements Storage {
  /** The absolute root directory. */
  readonly root: string;
  /** Human-readable location (the absolute root path). */
  readonly location: string;
  readonly #fileMode: number;
  readonly #dirMode: number;

  /** Open a directory as storage; nothing is created until the first put. */
  constructor(root: string, options: LocalStorageOptions = {}) {
    this.root = resolve(root);
    this.location = this.root;
    this.#fileMode = options.fileMode ?? 0o600;
    this.#dirMode = options.dirMode ?? 0o700;
  }

  #path(key: string): string {
    checkKey(key);
    return join(this.root, ...key.split('/'));
  }

  /** Store `data` under `key` atomically and durably; with ifNoneMatch, fail with AlreadyExistsError when present. */
  async put(key: string, data: Uint8Array, options: PutOptions = {}): Promise<void> {
    const final = this.#path(key);
    const what = `${this.location}: put ${key}`;
    const created = await this.#mkdirFor(final, what);
    const tmp = `${final}${TEMP_MARK}${randomBytes(8).toString('hex')}`;
    let tmpExists = false;
    try {
      const fh = await open(tmp, fsConstants.O_WRONLY | fsConstants.O_CREAT | fsConstants.O_EXCL, this.#fileMode);
      tmpExists = true;
      try {
        await writeAll(fh, data);
        if (options.durable !== false) await fh.sync();
      } finally {
        await fh.close();
      }
      await this.#publish(tmp, final, created, key, options);
    } catch (err) {
      if (tmpExists) await rm(tmp, { force: true }).catch(() => undefined);
      throw await this.#putError(err, final, what);
    }
  }

  /**
   * A new object written in pieces and named when complete: a temporary file
   * at the root (`stage.tmp-<random>`, never listed), appended synchronously,
   * made durable and moved into place by commit() exactly as put() does.
   */
  stage(): StagedObject {
    const what = `${this.location}: staged write`;
    let fd: number;
    let tmp: string;
    try {
      mkdirSync(this.root, { recursive: true, mode: this.#dirMode });
      tmp = join(this.root, `stage${TEMP_MARK}${randomBytes(8).toString('hex')}`);
      fd = openSync(tmp, fsConstants.O_WRONLY | fsConstants.O_CREAT | fsConstants.O_EXCL, this.#fileMode);
    } catch (err) {
      throw fromSystemError(err, what);
    }
    let pos = 0;
    let open = true;
    const close = () => {
      if (open) closeSync(fd);
      open = false;
    };
    return {
      append: (data) => {
        try {
          let done = 0;
          while (done < data.length) done += writeSync(fd, data, done, data.length - done, pos + done);
          pos += data.length;
        } catch (err) {
          throw fromSystemError(err, what);
        }
      },
      commit: async (key, options = {}) => {
        const final = this.#path(key);
        const w = `${this.location}: put ${key}`;
        try {
          await promisify(fsync)(fd);
          close();
          const created = await this.#mkdirFor(final, w);
          await this.#publish(tmp, final, created, key, options);
        } catch (err) {
          close();
          await rm(tmp, { force: true }).catch(() => undefined);
          throw await this.#putError(err, final, w);
        }
      },
      discard: async () => {
        close();
        await rm(tmp, { force: true }).catch(() => undefined);
      },
    };
  }

  /** Create the directory of an object's file; returns the first directory created, if any. */
  async #mkdirFor(final: string, what: string): Promise<string | undefined> {
    try {
      return await mkdir(dirname(final), { recursive: true, mode: this.#dirMode });
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'EEXIST' || code === 'ENOTDIR') {
        throw new UsageError(`${what}: a parent of the key is an object (a directory-backed store cannot hold both)`, { cause: err });
      }
      throw fromSystemError(err, what);
    }
  }

  /** Move a synced temporary file into place (link for a conditional create), then make the names durable. */
  async #publish(tmp: string, final: string, created: string | undefined, key: string, options: PutOptions): Promise<void> {
    const dir = dirname(final);
    if (options.ifNoneMatch) {
      // link(2) fails with EEXIST when the name exists: exactly one of racing creators wins.
      try {
        await link(tmp, final);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'EEXIST') {
          throw new AlreadyExistsError(`${this.location}: ${key} already exists`, { cause: err });
        }
        throw err;
      }
      await unlink(tmp);
    } else {
      await rename(tmp, final);
    }
    if (options.durable === false) return;
    await fsyncDir(dir);
    if (created !== undefined) {
      // New directories must be durable too: fsync the parent of each one we created.
      for (let d = dirname(dir); ; d = dirname(d)) {
        await fsyncDir(d);
        if (d === dirname(created) || d === dirname(d)) break;
      }
    }
  }

  /** The error of a failed put: a key that is a directory is a usage error, the rest mapped by errno. */
  async #putError(err: unknown, final: string, what: string): Promise<unknown> {
    if (err instanceof AlreadyExistsError || err instanceof UsageError) return err;
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'EISDIR' || code === 'ENOTEMPTY' || code === 'EPERM') {
      const st = await stat(final).catch(() => undefined);
      if (st?.isDirectory()) return new UsageError(`${what}: the key is a prefix of other objects`, { cause: err });
    }
    return fromSystemError(err, what);
  }

  /** Read the whole object or a range of it (a range past the end is cut at the end). NotFoundError when absent. */
  async get(key: string, range?: { offset: number; length: number }): Promise<Buffer> {
    const path = this.#path(key);
    if (range) checkRange(range);
    let fh: FileHandle;
    try {
      fh = await open(path, 'r');
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENOENT' || code === 'ENOTDIR' || code === 'EISDIR') {
        throw new NotFoundError(`${this.location}: ${key} not found`, { cause: err });
      }
      throw fromSystemError(err, `${this.location}: get ${key}`);
    }
    try {
      const st = await fh.stat();
      if (!st.isFile()) throw new NotFoundError(`${this.location}: ${key} not found`);
      const start = range ? Math.min(range.offset, st.size) : 0;
      const end = range ? Math.min(range.offset + range.length, st.size) : st.size;
      const buf = Buffer.allocUnsafe(end - start);
      let done = 0;
      while (done < buf.length) {
        const { bytesRead } = await fh.read(buf, done, buf.length - done, start + done);
        if (bytesRead === 0) break;
        done += bytesRead;
      }
      return done === buf.length ? buf : buf.subarray(0, done);
    } catch (err) {
      throw fromSystemError(err, `${this.location}: get ${key}`);
    } finally {
      await fh.close();
    }
  }

  localPath(key: string): string {
    return this.#path(key);
  }

  /** Size and mtime of the object, or undefined when absent. */
  async stat(key: string): Promise<ObjectInfo | undefined> {
    const path = this.#path(key);
    try {
      const st = await stat(path);
      if (!st.isFile()) return undefined;
      return { key, size: st.size, mtime: st.mtime };
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENOENT' || code === 'ENOTDIR') return undefined;
      throw fromSystemError(err, `${this.location}: stat ${key}`);
    }
  }

  /** Every object whose key starts with prefix; temporary files of puts are never listed. */
  async *list(prefix: string): AsyncIterable<ObjectInfo> {
    // Walk from the deepest directory the prefix names completely.
    const cut = prefix.lastIndexOf('/');
    const dirKey = cut < 0 ? '' : prefix.slice(0, cut);
    if (dirKey !== '') {
      for (const p of dirKey.split('/')) if (p === '' || p === '.' || p === '..') return;
    }
    yield* this.#walk(dirKey, prefix);
  }

  async *#walk(dirKey: string, prefix: string): AsyncGenerator<ObjectInfo> {
    const dirPath = dirKey === '' ? this.root : join(this.root, ...dirKey.split('/'));
    let dir;
    try {
      dir = await opendir(dirPath);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENOENT' || code === 'ENOTDIR') return;
      throw fromSystemError(err, `${this.location}: list ${prefix}`);
    }
    const subdirs: string[] = [];
    try {
      for await (const ent of dir) {
        const key = dirKey === '' ? ent.name : `${dirKey}/${ent.name}`;
        if (ent.isDirectory()) {
          const asPrefix = `${key}/`;
          if (asPrefix.startsWith(prefix) || prefix.startsWith(asPrefix)) subdirs.push(key);
          continue;
        }
        if (!ent.isFile() || isTempName(ent.name) || !key.startsWith(prefix)) continue;
        try {
          const st = await stat(join(dirPath, ent.name));
          yield { key, size: st.size, mtime: st.mtime };
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code === 'ENOENT') continue; // deleted meanwhile
          throw fromSystemError(err, `${this.location}: list ${prefix}`);
        }
      }
    } finally {
      // opendir's async iterator closes the handle when it ends; an early return of the consumer
      // lands here with the handle possibly open.
      await dir.close().catch(() => undefined);
    }
    for (const sub of subdirs) yield* this.#walk(sub, prefix);
  }

  /** Remove the object; succeeds when it is already absent. */
  async delete(key: string): Promise<void> {
    const path = this.#path(key);
    try {
      await unlink(path);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENOENT' || code === 'ENOTDIR') return;
      throw fromSystemError(err, `${this.location}: delete ${key}`);
    }
  }

  /**
   * Delete temporary files left by killed writers that are older than maxAgeMs (default 1 h, so a
   * running put is never disturbed). Returns how many were removed.
   */
  async removeStaleTemp(maxAgeMs = 3_600_000): Promise<number> {
    let removed = 0;
    const limit = Date.now() - maxAgeMs;
    const walk = async (dirPath: string): Promise<void> => {
      let dir;
      try {
        dir = await opendir(dirPath);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
        throw err;
      }
      for await (const ent of dir) {
        const p = dirPath + sep + ent.name;
        if (ent.isDirectory()) await walk(p);
        else if (ent.isFile() && isTempName(ent.name)) {
          const st = await stat(p).catch(() => undefined);
          if (st && st.mtimeMs < limit) {
            await rm(p, { force: true });
            removed++;
          }
        }
      }
    };
    await walk(this.root);
    if (removed > 0) log.debug(`${this.location}: removed ${removed} stale temporary file(s)`);
    return removed;
  }

  /** Nothing to release: every operation opens and closes its own handles. */
  async close(): Promise<void> {}
}

function checkRange(range: { offset: number; length: number }): void {
  if (!Number.isSafeInteger(range.offset) || range.offset < 0 || !Number.isSafeInteger(range.length) || range.length < 0) {
    throw new UsageError(`invalid range offset=${range.offset} length=${range.length}`);
  }
}

async function writeAll(fh: FileHandle, data: Uint8Array): Promise<void> {
  let done = 0;
  while (done < data.length) {
    const { bytesWritten } = await fh.write(data, done, data.length - done, done);
    done += bytesWritten;
  }
}

async function fsyncDir(dir: string): Promise<void> {
  const fh = await open(dir, 'r');
  try {
    await fh.sync();
  } catch (err) {
    // Some filesystems refuse fsync on a directory; the data file itself was synced.
    const code = (err as NodeJS.ErrnoException).code;
    if (code !== 'EINVAL' && code !== 'EISDIR' && code !== 'EBADF') throw err;
  } finally {
    await fh.close();
  }
}
