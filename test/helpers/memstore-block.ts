/**
 * A tiny in-memory BlobStore for the block engine's tests: keyed BLAKE3 IDs,
 * zstd-compressed storage (so storedSize is realistic), verification on load.
 */
import { randomBytes } from 'node:crypto';
import { keyedHash } from '../../src/repository/crypto.js';
import { compress, decompress } from 'zstd-napi';
import type { BlobId, BlobStore, BlobType, SaveResult } from '../../src/repository/types.js';
import { IntegrityError, NotFoundError } from '../../src/errors.js';

interface Entry {
  type: BlobType;
  stored: Buffer;
  raw: boolean;
}

/** In-memory blob store with counters for tests. */
export class MemBlockStore implements BlobStore {
  readonly blobs = new Map<BlobId, Entry>();
  private readonly key = randomBytes(32);
  saveCalls = 0;
  loadCalls = 0;
  /** When set, saveBlob rejects with this error. */
  failSaves: Error | undefined;

  /** Keyed BLAKE3, hex. */
  hash(data: Uint8Array): BlobId {
    return keyedHash(this.key, data);
  }

  /** True when stored. */
  has(id: BlobId): boolean {
    return this.blobs.has(id);
  }

  /** Compress and keep. */
  async saveBlob(type: BlobType, data: Buffer, id?: BlobId): Promise<SaveResult> {
    this.saveCalls++;
    // Copy first: the caller may reuse `data` once the call returns.
    const c = compress(data, { compressionLevel: 3 });
    const entry: Entry = c.length < data.length ? { type, stored: c, raw: false } : { type, stored: Buffer.from(data), raw: true };
    const bid = id ?? this.hash(data);
    await new Promise((r) => setImmediate(r));
    if (this.failSaves) throw this.failSaves;
    if (this.blobs.has(bid)) return { id: bid, isNew: false, storedSize: 0 };
    this.blobs.set(bid, entry);
    return { id: bid, isNew: true, storedSize: entry.stored.length };
  }

  /** Decompress and verify. */
  async loadBlob(type: BlobType, id: BlobId): Promise<Buffer> {
    this.loadCalls++;
    await new Promise((r) => setImmediate(r));
    const e = this.blobs.get(id);
    if (!e) throw new NotFoundError(`blob ${id} not found`);
    if (e.type !== type) throw new IntegrityError(`blob ${id} is ${e.type}, not ${type}`);
    const data = e.raw ? Buffer.from(e.stored) : decompress(e.stored);
    if (this.hash(data) !== id) throw new IntegrityError(`blob ${id} does not match its id`);
    return data;
  }

  /** Count of stored blobs of a type. */
  count(type?: BlobType): number {
    let n = 0;
    for (const e of this.blobs.values()) if (!type || e.type === type) n++;
    return n;
  }

  /** Replace a stored blob's content (to simulate corruption). */
  corrupt(id: BlobId, data: Buffer): void {
    const e = this.blobs.get(id);
    if (!e) throw new Error(`no blob ${id}`);
    e.stored = Buffer.from(data);
    e.raw = true;
  }
}
