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
import type { Storage } from '../storage/storage.js';
import type { BlobType } from './types.js';
import { decodeStructured, encodeStructured, plainHash } from './crypto.js';
import type { BufferPool } from '../util/buffers.js';

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

/**
 * Accumulates stored blobs until the pack is big enough to write. The bytes
 * are copied into one buffer from `buffers` as they come (the caller's buffer
 * is free at once); after the pack is written, `release()` hands it back.
 */
export class PackBuilder {
  readonly entries: PackEntry[] = [];
  #buf?: Buffer;
  #size = 0;

  /** @param capacity  bytes the first buffer holds (it grows when needed) */
  constructor(
    private readonly buffers: BufferPool,
    private readonly capacity: number,
  ) {}

  get size(): number {
    return this.#size;
  }
  get count(): number {
    return this.entries.length;
  }
  /** True when a blob of `n` bytes and then the header fit without growing the buffer. */
  fits(n: number): boolean {
    // A header entry is ~100 bytes of JSON before compression.
    const header = 128 * (this.entries.length + 1) + 1024;
    return this.#size + n + header <= (this.#buf?.length ?? this.capacity);
  }

  #reserve(n: number): Buffer {
    const need = this.#size + n;
    let buf = this.#buf;
    if (buf === undefined || buf.length < need) {
      const grown = Buffer.from(this.buffers.take(Math.max(need, buf === undefined ? this.capacity : buf.length + (buf.length >> 1))));
      if (buf !== undefined) {
        buf.copy(grown, 0, 0, this.#size);
        this.buffers.give(buf.buffer as ArrayBuffer);
      }
      buf = this.#buf = grown;
    }
    return buf;
  }

  add(id: string, type: BlobType, stored: Uint8Array, rawLength: number, flags: number): void {
    this.#reserve(stored.length).set(stored, this.#size);
    this.entries.push([id, typeCode(type), this.#size, stored.length, rawLength, flags]);
    this.#size += stored.length;
  }

  /** The pack's bytes (valid until release()) and its ID. */
  finish(encKey: Buffer | undefined): { id: string; bytes: Buffer } {
    const header = encodeStructured(encKey, { version: 1, blobs: this.entries });
    const buf = this.#reserve(header.length + TRAILER);
    let end = this.#size + header.copy(buf, this.#size);
    end = buf.writeUInt32LE(header.length, end);
    end += PACK_MAGIC.copy(buf, end);
    const bytes = buf.subarray(0, end);
    return { id: plainHash(bytes), bytes };
  }

  /** Hand the buffer back for the next pack; the bytes of finish() are invalid afterwards. */
  release(): void {
    if (this.#buf !== undefined) this.buffers.give(this.#buf.buffer as ArrayBuffer);
    this.#buf = undefined;
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
