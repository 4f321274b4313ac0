/**
 * Repository: the storage plane's format over a Storage. Content-addressed,
 * deduplicated, compressed and optionally encrypted blobs in packs; an index
 * rebuildable from the packs; manifests that make backups exist.
 *
 * Write order is packs → index → manifest (flush() then saveManifest()).
 * Nothing here deletes except prune.
 */
import { randomBytes } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import pLimit from 'p-limit';
import { decompress } from 'zstd-napi';
import {
  AlreadyExistsError,
  IntegrityError,
  NoRepositoryError,
  NotFoundError,
  UsageError,
  WrongKeyError,
  fromSystemError,
} from '../errors.js';
import type { Storage } from '../storage/storage.js';
import { log } from '../util/log.js';
import {
  type Keys,
  decodeStructured,
  deriveKeys,
  encodeStructured,
  keyCheck,
  keyedHash,
  open as openSealed,
  parseKeyFile,
  plainHash,
  verifyKeyCheck,
} from './crypto.js';
import { type IndexFile, MasterIndex } from './index.js';
import { indexCachePath, loadIndexCache, saveIndexCache } from './index-cache.js';
import { RepoLock } from './lock.js';
import { type Manifest, isBackupId, manifestKey, validateManifest } from './manifest.js';
import { PackBuilder, type PackEntry, packKey } from './pack.js';
import type { BlobId, BlobStore, BlobType, SaveResult } from './types.js';
import { CompressPool } from './workers.js';
import { type BlobCodec, type StoredBlob, type StoredRef, blobCodec } from './decode.js';
import { BufferPool } from '../util/buffers.js';

/** Packs written at the same time. */
const UPLOADS = 1;
/**
 * Finished packs (being written or waiting) beyond which saveBlob callers are
 * held back: a slow store slows the producer instead of filling memory. One
 * pack is written while the next one fills: compression, not the store, is
 * the bottleneck (a 16 MiB pack takes ~0.3 s to compress and well under that
 * to write locally or to a nearby S3).
 */
const MAX_QUEUED_PACKS = UPLOADS;
/**
 * An index file is written once the packs written since the last one hold this
 * many blobs (and by flush()): encoding stays small for backups of millions of
 * files, and packs of a backup that is killed halfway are indexed, so the next
 * backup does not store their blobs again.
 */
const INDEX_BLOBS = 16384;
/** Room in a pack's buffer beyond its target size (the header, a blob that crosses the target). */
const PACK_SLACK = 1 << 20;
/** Tree blobs go to packs of their own, at most this big (or the data pack size when smaller). */
export const TREE_PACK_SIZE = 4 << 20;
/** Tree-only packs up to this size are read whole once and kept (see loadBlob). */
const TREE_PACK_READ_MAX = 8 << 20;
/** Bytes of tree packs kept in memory. */
const TREE_CACHE_BYTES = 32 << 20;
/**
 * Small data blobs are read with the aligned window of their pack around them
 * (one read for the many small blobs a restore wants next: they were packed in
 * the order the backup walked, which is the order restore walks), ...
 */
const WINDOW_SIZE = 4 << 20;
/** ... blobs up to this size; larger ones are read alone. */
const WINDOW_BLOB_MAX = 256 << 10;
/** Windows kept (LRU). */
const WINDOW_CACHE = 8;

export interface RepoConfig {
  version: 1;
  id: string;
  createdAt: string;
  compression: { algorithm: 'zstd'; level: number };
  chunker: { minSize: number; avgSize: number; maxSize: number };
  packSize: number;
  /** Unencrypted repositories only. */
  hashKey?: string;
  encryption: null | { algorithm: 'aes-256-gcm'; kdf: 'hkdf-sha256'; salt: string; check: string };
}

export interface InitOptions {
  keyFile?: string;
  compressionLevel?: number;
  packSize?: number;
}

export interface OpenOptions {
  keyFile?: string;
  /** Overrides the compression level recorded in the repository config (for this session). */
  compressionLevel?: number;
  /** Worker threads for compression (default: one per core). */
  threads?: number;
  /** A local directory for caches (the merged index, index-cache.ts); none when undefined. */
  cacheDir?: string;
}

async function readKeyFile(path: string): Promise<Buffer> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    throw new UsageError(`cannot read key file ${path}: ${(err as Error).message}`, { cause: err });
  }
  return parseKeyFile(text, path);
}

/** Bytes of a pack from `start` on, read (or being read) for several blobs. */
interface PackSpan {
  start: number;
  bytes: Promise<Buffer>;
}

/**
 * Reads kept by key; once their weights pass the budget the least recently used
 * go first. A failed read is forgotten, so the next one tries again (and reports
 * its own error).
 */
class ReadCache {
  #entries = new Map<string, { bytes: Promise<Buffer>; weight: number }>(); // insertion order = LRU order
  #weight = 0;

  constructor(private readonly budget: number) {}

  get(key: string, read: () => Promise<Buffer>, weight: number): Promise<Buffer> {
    const hit = this.#entries.get(key);
    if (hit !== undefined) {
      this.#entries.delete(key);
      this.#entries.set(key, hit);
      return hit.bytes;
    }
    const entry = { bytes: read(), weight };
    this.#entries.set(key, entry);
    this.#weight += weight;
    entry.bytes.catch(() => {
      if (this.#entries.get(key) === entry) {
        this.#entries.delete(key);
        this.#weight -= weight;
      }
    });
    for (const [k, v] of this.#entries) {
      if (this.#weight <= this.budget || k === key) break;
      this.#entries.delete(k);
      this.#weight -= v.weight;
    }
    return entry.bytes;
  }
}

export class Repository implements BlobStore {
  readonly index = new MasterIndex();
  #pending = new Map<BlobId, Promise<SaveResult>>();
  #pool?: CompressPool;
  /** Data blobs and tree blobs are packed apart: trees are few, small and read together. */
  #packs: Record<BlobType, PackBuilder | undefined> = { data: undefined, tree: undefined };
  /** Pack buffers, reused once written: two builders and the packs being written, and one to spare. */
  #packBuffers = new BufferPool(MAX_QUEUED_PACKS + 3, 0);
  /** Whole tree packs read by loadBlob, weighed by their bytes. */
  #treePacks = new ReadCache(TREE_CACHE_BYTES);
  /** Windows of data packs (see WINDOW_SIZE), key `<pack>:<start>`, one unit each. */
  #windows = new ReadCache(WINDOW_CACHE);
  #uploads = new Set<Promise<void>>();
  #uploadLimit = pLimit(UPLOADS);
  /** Packs written and not yet named by an index file, and their blob count. */
  #written: { id: string; blobs: PackEntry[] }[] = [];
  #writtenBlobs = 0;
  #failure?: unknown;
  #lock?: RepoLock;
  #indexLoaded = false;
  /**
   * The local index cache is behind what this session knows: loadIndex read index files it did
   * not cover, or this session wrote some. close() rewrites it.
   */
  #cacheBehind = false;
  /** Not to be cached: index files written from outside (prune, rebuild), or loaded past errors (check, repair). */
  #cacheOff = false;

  private constructor(
    readonly storage: Storage,
    readonly config: RepoConfig,
    readonly keys: Keys,
    private readonly opts: OpenOptions,
  ) {}

  /** Create a new repository. NoRepositoryError never; UsageError when one already exists. */
  static async init(storage: Storage, opts: InitOptions = {}): Promise<Repository> {
    const id = randomBytes(16).toString('hex');
    const base = {
      version: 1 as const,
      id,
      createdAt: new Date().toISOString(),
      compression: { algorithm: 'zstd' as const, level: opts.compressionLevel ?? 3 },
      chunker: { minSize: 512 << 10, avgSize: 1 << 20, maxSize: 8 << 20 },
      packSize: opts.packSize ?? 16 << 20,
    };
    let config: RepoConfig;
    let keys: Keys;
    if (opts.keyFile) {
      const salt = randomBytes(16);
      keys = deriveKeys(await readKeyFile(opts.keyFile), salt);
      config = { ...base, encryption: { algorithm: 'aes-256-gcm', kdf: 'hkdf-sha256', salt: salt.toString('hex'), check: keyCheck(keys.encKey!, id) } };
    } else {
      keys = { hashKey: randomBytes(32) };
      config = { ...base, hashKey: keys.hashKey.toString('hex'), encryption: null };
    }
    try {
      await storage.put('config', Buffer.from(JSON.stringify(config, null, 2) + '\n'), { ifNoneMatch: true });
    } catch (err) {
      if (err instanceof AlreadyExistsError) throw new UsageError(`a repository already exists at ${storage.location}`);
      throw fromSystemError(err, `cannot create repository at ${storage.location}`);
    }
    const repo = new Repository(storage, config, keys, {});
    repo.#indexLoaded = true;
    return repo;
  }

  /** Open an existing repository. NoRepositoryError when absent, WrongKeyError for a wrong or missing key. */
  static async open(storage: Storage, opts: OpenOptions = {}): Promise<Repository> {
    let raw: Buffer;
    try {
      raw = await storage.get('config');
    } catch (err) {
      if (err instanceof NotFoundError) throw new NoRepositoryError(`no Permafrost repository at ${storage.location} (run "permafrost init")`);
      throw err;
    }
    let config: RepoConfig;
    try {
      config = JSON.parse(raw.toString('utf8')) as RepoConfig;
    } catch {
      throw new NoRepositoryError(`${storage.location} is not a Permafrost repository (config is not JSON)`);
    }
    if (config?.version !== 1 || typeof config.id !== 'string') throw new NoRepositoryError(`${storage.location} is not a Permafrost repository (unknown config version)`);
    let keys: Keys;
    if (config.encryption) {
      if (!opts.keyFile) throw new WrongKeyError(`repository ${storage.location} is encrypted: give --key-file`);
      keys = deriveKeys(await readKeyFile(opts.keyFile), Buffer.from(config.encryption.salt, 'hex'));
      verifyKeyCheck(keys.encKey!, config.id, config.encryption.check);
    } else {
      if (typeof config.hashKey !== 'string' || !/^[0-9a-f]{64}$/.test(config.hashKey)) throw new IntegrityError('repository config: bad hash key');
      keys = { hashKey: Buffer.from(config.hashKey, 'hex') };
    }
    return new Repository(storage, config, keys, opts);
  }

  get encrypted(): boolean {
    return this.keys.encKey !== undefined;
  }

  // ---- locking ---------------------------------------------------------

  /** Take the repository lock for this session (released by close()). */
  async lock(exclusive: boolean, purpose: string): Promise<void> {
    this.#lock = await RepoLock.acquire(this.storage, exclusive, purpose);
  }

  // ---- index -----------------------------------------------------------

  /**
   * Load every index file (once). With onError, unreadable index files are
   * reported and skipped (check, repair): then every file is read, never the
   * local cache. Otherwise the index files the local cache covers come from
   * it, the others from the repository, and close() rewrites the cache when
   * it missed any or this session wrote index files (so a backup's own index
   * file is covered: the next session reads none).
   */
  async loadIndex(onError?: (id: string, err: unknown) => void): Promise<void> {
    if (this.#indexLoaded) return;
    let ids: string[] = [];
    for await (const o of this.storage.list('index/')) ids.push(o.key.slice('index/'.length));
    const cachePath = this.opts.cacheDir && !onError ? indexCachePath(this.opts.cacheDir, this.config.id) : undefined;
    if (onError) this.#cacheOff = true;
    let fromCache = 0;
    if (cachePath !== undefined && ids.length > 0) {
      const covered = loadIndexCache(cachePath, this.keys.hashKey, this.index, new Set(ids));
      if (covered !== undefined) {
        fromCache = covered.length;
        const done = new Set(covered);
        ids = ids.filter((id) => !done.has(id));
      }
    }
    const limit = pLimit(8);
    await Promise.all(
      ids.map((id) =>
        limit(async () => {
          try {
            const data = await this.storage.get(`index/${id}`);
            if (plainHash(data) !== id) throw new IntegrityError(`index ${id}: content does not match its name`);
            this.index.merge(id, decodeStructured<IndexFile>(this.keys.encKey, data, `index ${id}`));
          } catch (err) {
            if (onError) return onError(id, err);
            if (err instanceof IntegrityError) {
              throw new IntegrityError(`${err.message} (run "permafrost repair index" to rebuild the index from the packs)`, { cause: err });
            }
            throw err;
          }
        }),
      ),
    );
    this.#indexLoaded = true;
    if (ids.length > 0) this.#cacheBehind = true;
    log.debug(`index: ${this.index.size} blobs, ${fromCache} index files from the local cache, ${ids.length} read`);
  }

  /**
   * Write an index file naming the given packs (prune, rebuild). Returns its ID. The session's
   * index in memory no longer matches the index files then: it is not cached.
   */
  writeIndex(packs: { id: string; blobs: PackEntry[] }[]): Promise<string> {
    this.#cacheOff = true;
    return this.#putIndex(packs);
  }

  async #putIndex(packs: { id: string; blobs: PackEntry[] }[]): Promise<string> {
    const data = encodeStructured(this.keys.encKey, { version: 1, packs } satisfies IndexFile);
    const id = plainHash(data);
    await this.storage.put(`index/${id}`, data);
    this.index.files.add(id);
    return id;
  }

  // ---- blobs -----------------------------------------------------------

  hash(data: Uint8Array): BlobId {
    return keyedHash(this.keys.hashKey, data);
  }

  /** The local cache directory of this session (OpenOptions.cacheDir), if any. */
  get cacheDir(): string | undefined {
    return this.opts.cacheDir;
  }

  hashKey(): Buffer {
    return this.keys.hashKey;
  }

  has(id: BlobId): boolean {
    return this.index.has(id) || this.#pending.has(id);
  }

  saveBlob(type: BlobType, data: Buffer, id?: BlobId): Promise<SaveResult> {
    if (this.#failure) return Promise.reject(this.#failure);
    const blobId = id ?? this.hash(data);
    if (this.index.has(blobId)) return Promise.resolve({ id: blobId, isNew: false, storedSize: 0 });
    if (this.#pending.has(blobId)) return Promise.resolve({ id: blobId, isNew: false, storedSize: 0 });
    this.#pool ??= new CompressPool(this.opts.compressionLevel ?? this.config.compression.level, this.keys.encKey, this.opts.threads);
    const rawLength = data.length;
    const p = this.#pool
      .pack(data, (stored, flags) => {
        if (this.#failure) throw this.#failure;
        const target = this.#packTarget(type);
        let builder = this.#packs[type];
        if (builder !== undefined && builder.count > 0 && !builder.fits(stored.length)) builder = this.#finishPack(type);
        builder ??= this.#packs[type] = new PackBuilder(this.#packBuffers, target + PACK_SLACK, this.storage.stage?.());
        builder.add(blobId, type, stored, rawLength, flags);
        if (builder.size >= target) this.#finishPack(type);
      })
      .then(async (storedSize) => {
        while (this.#uploads.size > MAX_QUEUED_PACKS) await Promise.race(this.#uploads);
        return { id: blobId, isNew: true, storedSize };
      });
    this.#pending.set(blobId, p);
    p.catch((err) => {
      this.#failure ??= err;
    });
    return p;
  }

  #packTarget(type: BlobType): number {
    return type === 'tree' ? Math.min(this.config.packSize, TREE_PACK_SIZE) : this.config.packSize;
  }

  /** Start writing the current pack of this type; the next blob starts a new one. Returns undefined. */
  #finishPack(type: BlobType): undefined {
    const builder = this.#packs[type];
    this.#packs[type] = undefined;
    if (builder === undefined || builder.count === 0) return;
    const id = builder.finish(this.keys.encKey);
    const entries = builder.entries;
    const upload = this.#uploadLimit(async () => {
      try {
        await builder.store(this.storage);
      } catch (err) {
        await builder.discard();
        throw fromSystemError(err, `cannot write pack to ${this.storage.location}`);
      }
      this.#written.push({ id, blobs: entries });
      this.#writtenBlobs += entries.length;
      if (this.#writtenBlobs >= INDEX_BLOBS) await this.#writeWrittenIndex();
      // The pack is durable: its blobs are found through the in-memory index
      // from now on (the index file naming it is written by flush(), before any
      // manifest can refer to them), so #pending stays as small as the packs in flight.
      this.index.addPack(id, entries);
      for (const e of entries) this.#pending.delete(e[0]);
    })
      .catch((err) => {
        this.#failure ??= err;
      })
      .finally(() => this.#uploads.delete(upload));
    this.#uploads.add(upload);
  }

  /**
   * Make everything saved so far durable: wait for compression, write the last
   * pack, wait for uploads, then write an index file for the packs not yet indexed.
   * After it resolves, a manifest may name any blob saved before the call.
   */
  async flush(): Promise<void> {
    await Promise.allSettled([...this.#pending.values()]);
    if (this.#failure) throw this.#failure;
    this.#finishPack('data');
    this.#finishPack('tree');
    while (this.#uploads.size > 0) await Promise.all([...this.#uploads]);
    if (this.#failure) throw this.#failure;
    await this.#writeWrittenIndex();
    this.#pending.clear();
  }

  /** One index file for the packs written since the last one. */
  async #writeWrittenIndex(): Promise<void> {
    const packs = this.#written;
    this.#written = [];
    this.#writtenBlobs = 0;
    if (packs.length === 0) return;
    try {
      await this.#putIndex(packs);
    } catch (err) {
      throw fromSystemError(err, `cannot write index to ${this.storage.location}`);
    }
    this.#cacheBehind = true;
  }

  /**
   * Rewrite the local index cache when it is behind and the index in memory is exactly what the
   * index files in index.files name: no failure, no pack durable but not yet in an index file
   * (#written), none still uploading (its blobs would join the index later).
   */
  #saveCache(): void {
    if (!this.#cacheBehind || this.#cacheOff || this.opts.cacheDir === undefined || this.#failure !== undefined) return;
    if (this.#written.length > 0 || this.#uploads.size > 0 || this.index.files.size === 0) return;
    this.#cacheBehind = false;
    try {
      saveIndexCache(indexCachePath(this.opts.cacheDir, this.config.id), this.keys.hashKey, this.index);
    } catch (err) {
      log.debug(`index cache not written (${(err as Error).message})`);
    }
  }

  /** Bytes of packs waiting for upload or compression (for backpressure by callers). */
  get pendingCount(): number {
    return this.#pending.size;
  }

  async loadBlob(type: BlobType, id: BlobId): Promise<Buffer> {
    const { stored, flags, rawLength } = await this.loadStored(type, id);
    // Every blob is verified on its own, also when it comes from a cached pack.
    return this.decodeBlob(id, stored, flags, rawLength);
  }

  /**
   * A blob as stored, not decoded: for callers that decode on worker threads
   * (see decode.ts and codec()). NotFoundError when unknown.
   */
  async loadStored(type: BlobType, id: BlobId): Promise<StoredBlob> {
    const loc = this.index.get(id);
    if (!loc) throw new NotFoundError(`blob ${id} is not in the index`);
    if (loc.type !== type) throw new IntegrityError(`blob ${id} is a ${loc.type} blob, not ${type}`);
    let stored: Buffer;
    const span = type === 'tree' ? this.#treePack(loc.pack) : loc.length <= WINDOW_BLOB_MAX ? this.#window(loc.pack, loc.offset, loc.length) : undefined;
    if (span !== undefined) {
      const bytes = await span.bytes;
      const from = loc.offset - span.start;
      stored = bytes.subarray(Math.min(from, bytes.length), Math.min(from + loc.length, bytes.length));
    } else stored = await this.storage.get(packKey(loc.pack), { offset: loc.offset, length: loc.length });
    return { id, stored, flags: loc.flags, rawLength: loc.rawLength };
  }

  locateStored(type: BlobType, id: BlobId): StoredRef | undefined {
    if (this.storage.localPath === undefined) return undefined;
    const loc = this.index.get(id);
    if (!loc) throw new NotFoundError(`blob ${id} is not in the index`);
    if (loc.type !== type) throw new IntegrityError(`blob ${id} is a ${loc.type} blob, not ${type}`);
    if (type !== 'data') return undefined;
    let path = this.#packPaths.get(loc.pack);
    if (path === undefined) this.#packPaths.set(loc.pack, (path = this.storage.localPath(packKey(loc.pack))));
    return { id, path, offset: loc.offset, length: loc.length, flags: loc.flags, rawLength: loc.rawLength };
  }

  /** Local paths of packs (locateStored: ~100k lookups in a restore, a few hundred packs). */
  #packPaths = new Map<string, string>();

  /** What a worker thread needs to decode and verify this repository's blobs (holds the keys). */
  codec(): BlobCodec {
    return blobCodec(this.keys);
  }

  /** The aligned window of a pack holding [offset, offset + length), or undefined when the blob crosses a window edge. */
  #window(pack: string, offset: number, length: number): PackSpan | undefined {
    const start = offset - (offset % WINDOW_SIZE);
    if (offset + length > start + WINDOW_SIZE) return undefined;
    const read = () => {
      const end = Math.max(offset + length, Math.min(start + WINDOW_SIZE, this.index.packInfo(pack)?.blobsEnd ?? 0));
      return this.storage.get(packKey(pack), { offset: start, length: end - start });
    };
    return { start, bytes: this.#windows.get(`${pack}:${start}`, read, 1) };
  }

  /**
   * The blob area of a tree-only pack, read once with one request and kept
   * (a few MiB, LRU): a directory walk loads thousands of tree blobs, which
   * would otherwise cost one ranged read (one GET on S3) each. Undefined for
   * packs that also hold data (repositories written before trees had packs of
   * their own) or are too big: those are read blob by blob.
   */
  #treePack(pack: string): PackSpan | undefined {
    const info = this.index.packInfo(pack);
    if (info === undefined || info.hasData || info.blobsEnd > TREE_PACK_READ_MAX) return undefined;
    const size = info.blobsEnd;
    return { start: 0, bytes: this.#treePacks.get(pack, () => this.storage.get(packKey(pack), { offset: 0, length: size }), size) };
  }

  /** Open, decompress and verify one stored blob. */
  decodeBlob(id: BlobId, stored: Buffer, flags: number, rawLength: number): Buffer {
    if (stored.length === 0 && rawLength !== 0) throw new IntegrityError(`blob ${id}: truncated`);
    const body = openSealed(this.keys.encKey, stored, `blob ${id}`);
    let plain: Buffer;
    if (flags & 1) {
      try {
        plain = decompress(body);
      } catch (err) {
        throw new IntegrityError(`blob ${id}: cannot decompress`, { cause: err });
      }
    } else plain = body;
    if (plain.length !== rawLength || this.hash(plain) !== id) throw new IntegrityError(`blob ${id}: content does not match its ID`);
    return plain;
  }

  // ---- manifests -------------------------------------------------------

  /** A fresh backup ID. */
  static newBackupId(): string {
    return randomBytes(8).toString('hex');
  }

  /** Write a manifest (after flush()). Its presence is what makes the backup exist. */
  async saveManifest(m: Manifest): Promise<void> {
    validateManifest(m, m.id);
    const data = encodeStructured(this.keys.encKey, m);
    await this.storage.put(manifestKey(m.id), data, { ifNoneMatch: true });
  }

  async listBackupIds(): Promise<string[]> {
    const ids: string[] = [];
    for await (const o of this.storage.list('snapshots/')) {
      const id = o.key.slice('snapshots/'.length);
      if (isBackupId(id)) ids.push(id);
    }
    return ids;
  }

  async loadManifest(id: string): Promise<Manifest> {
    if (!isBackupId(id)) throw new NotFoundError(`backup ${id} not found`);
    let data: Buffer;
    try {
      data = await this.storage.get(manifestKey(id));
    } catch (err) {
      if (err instanceof NotFoundError) throw new NotFoundError(`backup ${id} not found in ${this.storage.location}`);
      throw err;
    }
    return validateManifest(decodeStructured<unknown>(this.keys.encKey, data, `manifest ${id}`, 256 << 20), id);
  }

  /** Every manifest; unreadable ones are reported through onError and skipped. */
  async loadManifests(onError?: (id: string, err: unknown) => void, only?: string[]): Promise<Manifest[]> {
    const ids = only ?? (await this.listBackupIds());
    const limit = pLimit(16);
    const out: Manifest[] = [];
    await Promise.all(
      ids.map((id) =>
        limit(async () => {
          try {
            out.push(await this.loadManifest(id));
          } catch (err) {
            if (!onError) throw err;
            onError(id, err);
          }
        }),
      ),
    );
    return out.sort((a, b) => a.startedAt.localeCompare(b.startedAt));
  }

  /** Resolve a full ID or a unique prefix (≥ 4 characters) to a backup ID. */
  async resolveBackupId(prefix: string): Promise<string> {
    if (isBackupId(prefix)) return prefix;
    if (!/^[0-9a-f]{4,16}$/.test(prefix)) throw new NotFoundError(`backup ${prefix} not found (IDs are 16 hex characters; a unique prefix of 4 or more works)`);
    const hits = (await this.listBackupIds()).filter((id) => id.startsWith(prefix));
    if (hits.length === 0) throw new NotFoundError(`backup ${prefix} not found in ${this.storage.location}`);
    if (hits.length > 1) throw new UsageError(`backup ID prefix ${prefix} is ambiguous: ${hits.join(', ')}`);
    return hits[0]!;
  }

  // ---- lifecycle -------------------------------------------------------

  /** Stop workers and release the lock. Unflushed data is dropped (it never counted). */
  async close(): Promise<void> {
    await this.#pool?.close();
    this.#pool = undefined;
    this.#saveCache();
    for (const type of ['data', 'tree'] as const) {
      await this.#packs[type]?.discard();
      this.#packs[type] = undefined;
    }
    if (this.#lock) {
      await this.#lock.release().catch((err) => log.warn(`cannot release lock: ${String(err)}`));
      this.#lock = undefined;
    }
    await this.storage.close();
  }
}
