/**
 * Blob decoding on worker threads: what a thread needs to open, decompress and
 * verify stored blobs itself (restore's writer threads decode what they write,
 * so the main thread only reads packs and walks trees).
 *
 * The decoder is JavaScript source evaluated inside the worker (workers here
 * are `eval` workers); it applies exactly the rules of
 * `Repository.decodeBlob`: AES-256-GCM open when a key is set, zstd when flag
 * bit 0 is set, then the length and the keyed BLAKE3 of the plaintext must
 * match the blob's ID. Any mismatch throws an Error whose message names the
 * blob (the caller turns it into an IntegrityError).
 */
import { createRequire } from 'node:module';
import type { Keys } from './crypto.js';
import { blake3Path } from '../util/blake3.js';

/** What a worker thread gets to decode blobs (structured-clonable; holds the keys, never logged). */
export interface BlobCodec {
  zstdPath: string;
  blakePath: string;
  hashKey: Uint8Array;
  encKey?: Uint8Array;
}

/** A blob as stored (read, not decoded), with what its index entry says. */
export interface StoredBlob {
  id: string;
  /** Valid until the caller's next await: copy what must be kept. */
  stored: Buffer;
  flags: number;
  rawLength: number;
}

/** Where a stored blob is, for a thread that reads it itself (local repositories). */
export interface StoredRef {
  id: string;
  path: string;
  offset: number;
  length: number;
  flags: number;
  rawLength: number;
}

export function blobCodec(keys: Keys): BlobCodec {
  const require = createRequire(import.meta.url);
  return {
    zstdPath: require.resolve('zstd-napi/binding'),
    blakePath: blake3Path,
    hashKey: new Uint8Array(keys.hashKey),
    encKey: keys.encKey ? new Uint8Array(keys.encKey) : undefined,
  };
}

/** Prefix of the error message of a worker-side verification failure. */
export const INTEGRITY_PREFIX = 'EINTEGRITY:';

/**
 * Worker-side source defining `makeBlobDecoder(codec)`, which returns
 * `decode(id, stored, flags, rawLength, dst, off)`: the plaintext, written to
 * `dst[off, off + rawLength)` (dst must have room), returned as that view.
 * Throws `Error('EINTEGRITY:blob <id>: ...')`.
 */
export const DECODER_SOURCE = `
function makeBlobDecoder(codec) {
  const zstd = require(codec.zstdPath);
  const { Blake3Hasher } = require(codec.blakePath);
  const { createDecipheriv } = require('node:crypto');
  const dctx = new zstd.DCtx();
  const hasher = Blake3Hasher.newKeyed(Buffer.from(codec.hashKey));
  const encKey = codec.encKey ? Buffer.from(codec.encKey) : undefined;
  const SLICE = 64 << 10;
  let body = Buffer.alloc(0);
  const fail = (id, what) => { throw new Error('${INTEGRITY_PREFIX}blob ' + id + ': ' + what); };
  return function decode(id, stored, flags, rawLength, dst, off) {
    const out = dst.subarray(off, off + rawLength);
    if (out.length !== rawLength) throw new Error('decode: output buffer too small');
    if (stored.length === 0 && rawLength !== 0) fail(id, 'truncated');
    let src = stored;
    if (encKey) {
      if (stored.length < 28) fail(id, 'too short to be encrypted data');
      const n = stored.length - 28;
      // Plaintext of an uncompressed blob goes straight to its place (nothing is written before it is verified).
      let target = (flags & 1) === 0 && n === rawLength ? out : undefined;
      if (target === undefined) {
        if (body.length < n) body = Buffer.allocUnsafeSlow(Math.max(n, 1 << 20));
        target = body;
      }
      let q = 0;
      try {
        const d = createDecipheriv('aes-256-gcm', encKey, stored.subarray(0, 12));
        d.setAuthTag(stored.subarray(stored.length - 16));
        // In slices: update() returns new buffers; small ones are reused by the allocator.
        for (let i = 12; i < 12 + n; i += SLICE) q += d.update(stored.subarray(i, Math.min(i + SLICE, 12 + n))).copy(target, q);
        q += d.final().copy(target, q);
      } catch (e) {
        fail(id, 'authentication failed (corrupted or altered)');
      }
      src = target.subarray(0, q);
    }
    let n;
    if (flags & 1) {
      try { n = dctx.decompress(out, src); } catch (e) { fail(id, 'cannot decompress'); }
    } else {
      n = src.length;
      if (n === rawLength && (src.buffer !== out.buffer || src.byteOffset !== out.byteOffset)) src.copy(out, 0);
    }
    if (n !== rawLength) fail(id, 'content does not match its ID');
    hasher.reset();
    hasher.update(out);
    if (hasher.digest('hex') !== id) fail(id, 'content does not match its ID');
    return out;
  };
}
`;
