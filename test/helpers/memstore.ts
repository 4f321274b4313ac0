/**
 * An in-memory BlobStore for the file engine's tests and benchmarks: keyed
 * BLAKE3 IDs (as the repository), a private copy of every blob, verification
 * of the ID on every load, counters, and hooks to corrupt or fail.
 */
import { randomBytes } from 'node:crypto';
import { keyedHash } from '../../src/repository/crypto.js';
import type { BlobId, BlobStore, BlobType, SaveResult } from '../../src/repository/types.js';
import { IntegrityError, NotFoundError } from '../../src/errors.js';
import { noProgress } from '../../src/util/progress.js';
import type { Logger } from '../../src/util/log.js';
import type { EngineContext } from '../../engines/engine.js';

interface Entry {
  type: BlobType;
  data: Buffer;
}

/** In-memory blob store with counters. */
export class MemStore implements BlobStore {
  readonly blobs = new Map<BlobId, Entry>();
  readonly key: Buffer;
  saveCalls = 0;
  loadCalls = 0;
  /** Plaintext bytes of new blobs. */
  bytes = 0;
  /** When set, saveBlob rejects with this error. */
  failSaves: Error | undefined;


  constructor(key: Buffer = randomBytes(32)) {
    this.key = key;
  }

  /** Keyed BLAKE3, hex: the repository's own (one reused native hasher per key). */
  hash(data: Uint8Array): BlobId {
    return keyedHash(this.key, data);
  }

  /** True when stored. */
  has(id: BlobId): boolean {
    return this.blobs.has(id);
  }

  /** Keep a copy (resolves on the next microtask, like a queued save). */
  async saveBlob(type: BlobType, data: Buffer, id?: BlobId): Promise<SaveResult> {
    this.saveCalls++;
    if (this.failSaves) throw this.failSaves;
    const bid = id ?? this.hash(data);
    if (this.blobs.has(bid)) return { id: bid, isNew: false, storedSize: 0 };
    this.blobs.set(bid, { type, data: Buffer.from(data) });
    this.bytes += data.length;
    return { id: bid, isNew: true, storedSize: data.length };
  }

  /** Return a copy after checking type and ID. */
  async loadBlob(type: BlobType, id: BlobId): Promise<Buffer> {
    this.loadCalls++;
    const e = this.blobs.get(id);
    if (!e) throw new NotFoundError(`blob ${id} not found`);
    if (e.type !== type) throw new IntegrityError(`blob ${id} is ${e.type}, not ${type}`);
    if (this.hash(e.data) !== id) throw new IntegrityError(`blob ${id} does not match its id`);
    return Buffer.from(e.data);
  }

  /** Store a blob under an ID of the caller's choosing (to plant hostile trees). */
  put(type: BlobType, data: Buffer): BlobId {
    const id = this.hash(data);
    this.blobs.set(id, { type, data: Buffer.from(data) });
    return id;
  }

  /** Flip a byte of a stored blob (its ID no longer matches). */
  corrupt(id: BlobId): void {
    const e = this.blobs.get(id);
    if (e && e.data.length > 0) e.data[0]! ^= 0xff;
  }
}

/** A logger that records messages (and prints nothing). */
export class MemLog implements Logger {
  readonly lines: string[] = [];
  debug(m: string): void {
    this.lines.push(`debug: ${m}`);
  }
  info(m: string): void {
    this.lines.push(`info: ${m}`);
  }
  warn(m: string): void {
    this.lines.push(`warn: ${m}`);
  }
  error(m: string): void {
    this.lines.push(`error: ${m}`);
  }
  /** Warnings so far. */
  get warnings(): string[] {
    return this.lines.filter((l) => l.startsWith('warn: '));
  }
}

/** An EngineContext over a store, with a recording logger and no progress. */
export function memContext(repo: BlobStore, signal: AbortSignal = new AbortController().signal): EngineContext & { log: MemLog } {
  return { repo, signal, progress: noProgress, log: new MemLog() };
}
