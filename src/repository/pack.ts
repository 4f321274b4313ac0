/**
 * Packs: the files blobs live in. A pack is self-describing, so the index can
 * be rebuilt from the packs alone:
 *
 *   blob₀ ‖ blob₁ ‖ … ‖ header ‖ u32le(header length) ‖ "PFPK"
 *
 * The header is a structured file (see crypto.ts) listing every blob's
 * [id, type, offset, length, rawLength, flags]. A pack is named by the plain
 * BLAKE3 of its bytes and stored at data/<first 2 hex>/<id>.
 */
import { IntegrityError } from '../errors.js';
import { Blake3Hasher } from '../util/blake3.js';
import type { StagedObject, Storage } from '../storage/storage.js';
import type { BlobType } from './types.js';
import { decodeStructured, encodeStructured, plainHash } from './crypto.js';
import type { BufferPool } from '../util/buffers.js';
import { copyInto } from '../util/native.js';

export const PACK_MAGIC = Buffer.from('PFPK');
const TRAILER = 8;

/** One blob's place: [id, type, offset, length, rawLength, flags]. */
export type PackEntry = [id: string, type: 'd' | 't', offset: number, length: number, rawLength: number, flags: number];

export function packKey(id: string): string {
  return `data/${id.slice(0, 2)}/${id}`;
}

export function typeCode(t: BlobType): 'd' | 't' {
  return t === 'data' ? 'd' : 't';
}

/** Bytes gathered before one append to a staged pack file. */
const STAGE_BUFFER = 1 << 20;

/**
 * Accumulates stored blobs into a pack. Two ways, same bytes:
 * - in memory: copied into one buffer from `buffers` as they come (the
 *   caller's buffer is free at once); `release()` hands it back once stored;
 * - staged (storage with `stage()`, e.g. a local directory): appended to a
 *   temporary file through a small buffer and hashed on the way, so no pack
 *   sits whole in memory.
 */
export class PackBuilder {
  readonly entries: PackEntry[] = [];
  #buf?: Buffer;
  /** Bytes in #buf (in memory: the pack so far; staged: not yet appended). */
  #used = 0;
  /** Bytes of the pack so far. */
  #size = 0;
  #hasher?: Blake3Hasher;
  #id?: string;

  /**
   * @param capacity  bytes the first buffer holds in memory (it grows when needed)
   * @param staged  the temporary object to append to (see Storage.stage)
   */
  constructor(
    private readonly buffers: BufferPool,
    private readonly capacity: number,
    private readonly staged?: StagedObject,
  ) {
    if (staged) this.#hasher = new Blake3Hasher();
  }

  get size(): number {
    return this.#size;
  }
  get count(): number {
    return this.entries.length;
  }
  /** True when a blob of `n` bytes and then the header fit without growing the buffer. */
  fits(n: number): boolean {
    if (this.staged) return true;
    // A header entry is ~100 bytes of JSON before compression.
    const header = 128 * (this.entries.length + 1) + 1024;
    return this.#size + n + header <= (this.#buf?.length ?? this.capacity);
  }

  /** Append bytes to the pack. */
  #write(data: Uint8Array): void {
    if (this.staged) {
      const room = (this.#buf?.length ?? STAGE_BUFFER) - this.#used;
      if (data.length > room) this.#flushStaged();
      if (data.length >= STAGE_BUFFER) this.#appendStaged(data);
      else {
        this.#buf ??= Buffer.from(this.buffers.take(STAGE_BUFFER));
        // Stored blobs come from the compression workers' shared buffers: memcpy, not TypedArray.set.
        copyInto(this.#buf, this.#used, data);
        this.#used += data.length;
      }
    } else {
      const need = this.#used + data.length;
      let buf = this.#buf;
      if (buf === undefined || buf.length < need) {
        const grown = Buffer.from(this.buffers.take(Math.max(need, buf === undefined ? this.capacity : buf.length + (buf.length >> 1))));
        if (buf !== undefined) {
          buf.copy(grown, 0, 0, this.#used);
          this.buffers.give(buf.buffer as ArrayBuffer);
        }
        buf = this.#buf = grown;
      }
      copyInto(buf, this.#used, data);
      this.#used = need;
    }
    this.#size += data.length;
  }

  #appendStaged(data: Uint8Array): void {
    this.#hasher!.update(Buffer.isBuffer(data) ? data : Buffer.from(data.buffer, data.byteOffset, data.length));
    this.staged!.append(data);
  }

  #flushStaged(): void {
    if (this.#used === 0) return;
    this.#appendStaged(this.#buf!.subarray(0, this.#used));
    this.#used = 0;
  }

  add(id: string, type: BlobType, stored: Uint8Array, rawLength: number, flags: number): void {
    const offset = this.#size;
    this.#write(stored);
    this.entries.push([id, typeCode(type), offset, stored.length, rawLength, flags]);
  }

  /** Seal the pack (header and trailer); returns its ID. */
  finish(encKey: Buffer | undefined): string {
    const header = encodeStructured(encKey, { version: 1, blobs: this.entries });
    const trailer = Buffer.alloc(TRAILER);
    trailer.writeUInt32LE(header.length, 0);
    PACK_MAGIC.copy(trailer, 4);
    this.#write(header);
    this.#write(trailer);
    if (this.staged) {
      this.#flushStaged();
      this.#id = this.#hasher!.digest('hex');
      this.release();
    } else this.#id = plainHash(this.#buf!.subarray(0, this.#used));
    return this.#id;
  }

  /** Store the sealed pack under its key, atomically and durably. */
  async store(storage: Storage): Promise<void> {
    const key = packKey(this.#id!);
    if (this.staged) await this.staged.commit(key);
    else await storage.put(key, this.#buf!.subarray(0, this.#used));
    this.release();
  }

  /** Hand the buffer back for the next pack. */
  release(): void {
    if (this.#buf !== undefined) this.buffers.give(this.#buf.buffer as ArrayBuffer);
    this.#buf = undefined;
    this.#used = 0;
  }

  /** Drop an unfinished or unstored pack (its temporary file, when staged). */
  async discard(): Promise<void> {
    this.release();
    await this.staged?.discard();
  }
}

/** Validate an entry list read from an untrusted header. */
export function validateEntries(entries: unknown, packSize: number, what: string): PackEntry[] {
  if (!Array.isArray(entries)) throw new IntegrityError(`${what}: header has no blob list`);
  for (const e of entries) {
    if (
      !Array.isArray(e) ||
      e.length !== 6 ||
      typeof e[0] !== 'string' ||
      !/^[0-9a-f]{64}$/.test(e[0]) ||
      (e[1] !== 'd' && e[1] !== 't') ||
      !Number.isSafeInteger(e[2]) ||
      !Number.isSafeInteger(e[3]) ||
      !Number.isSafeInteger(e[4]) ||
      e[2] < 0 ||
      e[3] <= 0 ||
      e[4] < 0 ||
      e[2] + e[3] > packSize
    ) {
      throw new IntegrityError(`${what}: malformed blob entry`);
    }
  }
  return entries as PackEntry[];
}

/** Read and verify a pack's header (for index rebuild and check). */
export async function readPackHeader(storage: Storage, id: string, encKey: Buffer | undefined, size?: number): Promise<PackEntry[]> {
  const key = packKey(id);
  const total = size ?? (await storage.stat(key))?.size;
  if (total === undefined) throw new IntegrityError(`pack ${id} is missing`);
  if (total < TRAILER) throw new IntegrityError(`pack ${id} is truncated`);
  const trailer = await storage.get(key, { offset: total - TRAILER, length: TRAILER });
  if (!trailer.subarray(4).equals(PACK_MAGIC)) throw new IntegrityError(`pack ${id}: bad magic (truncated or not a pack)`);
  const hlen = trailer.readUInt32LE(0);
  if (hlen > total - TRAILER) throw new IntegrityError(`pack ${id}: header length out of range`);
  const header = await storage.get(key, { offset: total - TRAILER - hlen, length: hlen });
  const decoded = decodeStructured<{ blobs: unknown }>(encKey, header, `pack ${id} header`);
  return validateEntries(decoded.blobs, total - TRAILER - hlen, `pack ${id}`);
}

/** Parse a whole pack already in memory (check --read-data). */
export function parsePack(bytes: Buffer, id: string, encKey: Buffer | undefined): PackEntry[] {
  if (plainHash(bytes) !== id) throw new IntegrityError(`pack ${id}: content does not match its name`);
  if (bytes.length < TRAILER || !bytes.subarray(bytes.length - 4).equals(PACK_MAGIC)) throw new IntegrityError(`pack ${id}: bad magic`);
  const hlen = bytes.readUInt32LE(bytes.length - TRAILER);
  if (hlen > bytes.length - TRAILER) throw new IntegrityError(`pack ${id}: header length out of range`);
  const start = bytes.length - TRAILER - hlen;
  const decoded = decodeStructured<{ blobs: unknown }>(encKey, bytes.subarray(start, start + hlen), `pack ${id} header`);
  return validateEntries(decoded.blobs, start, `pack ${id}`);
}
