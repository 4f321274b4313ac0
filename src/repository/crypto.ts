/**
 * Keys and the encoding of everything the repository stores.
 *
 * - Blob IDs: BLAKE3 keyed with the repository's hash key.
 * - Sealing: AES-256-GCM, `nonce(12) ‖ ciphertext ‖ tag(16)`, when the repository
 *   is encrypted; identity otherwise.
 * - Structured files (index, manifests, pack headers): 1 format byte, then
 *   zstd(JSON), then sealed.
 */
import { createCipheriv, createDecipheriv, hkdfSync, randomBytes } from 'node:crypto';
import { Blake3Hasher, blake3 } from '../util/blake3.js';
import { compress, decompress } from 'zstd-napi';
import { createRequire } from 'node:module';

const { getFrameContentSize } = createRequire(import.meta.url)('zstd-napi/binding.js') as typeof import('zstd-napi/binding.js');
import { IntegrityError, WrongKeyError } from '../errors.js';

export interface Keys {
  /** 32 bytes: keys the blob-ID hash. */
  hashKey: Buffer;
  /** 32 bytes, or undefined for an unencrypted repository. */
  encKey?: Buffer;
}

const NONCE = 12;
const TAG = 16;
const FORMAT_ZSTD_JSON = 1;

/** Derive the hash and encryption keys from a master key (the key file's content). */
export function deriveKeys(master: Buffer, salt: Buffer): Keys {
  const hashKey = Buffer.from(hkdfSync('sha256', master, salt, 'permafrost blob-id', 32));
  const encKey = Buffer.from(hkdfSync('sha256', master, salt, 'permafrost aes-256-gcm', 32));
  return { hashKey, encKey };
}

/** Keyed BLAKE3 of data, as 64 hex characters. */
export function keyedHash(hashKey: Buffer, data: Uint8Array): string {
  // One native hasher per key, reset between uses: creating one costs ~20 µs, more than hashing a small blob.
  let h = hashers.get(hashKey);
  if (!h) {
    h = Blake3Hasher.newKeyed(hashKey);
    hashers.set(hashKey, h);
  } else h.reset();
  return h.update(asBuffer(data)).digest('hex');
}
const hashers = new WeakMap<Buffer, Blake3Hasher>();

/** Unkeyed BLAKE3 (names packs and index files by their bytes). */
export function plainHash(data: Uint8Array): string {
  return blake3(asBuffer(data)).toString('hex');
}

/** The native hasher takes Buffers: view a plain Uint8Array as one, without copying. */
function asBuffer(data: Uint8Array): Buffer {
  return Buffer.isBuffer(data) ? data : Buffer.from(data.buffer, data.byteOffset, data.byteLength);
}

/** Encrypt when a key is given; the result carries its nonce and tag. */
export function seal(encKey: Buffer | undefined, plain: Buffer): Buffer {
  if (!encKey) return plain;
  const nonce = randomBytes(NONCE);
  const c = createCipheriv('aes-256-gcm', encKey, nonce);
  const body = c.update(plain);
  const fin = c.final();
  return Buffer.concat([nonce, body, fin, c.getAuthTag()]);
}

/** Decrypt and authenticate; IntegrityError when the data was altered (or the key is wrong). */
export function open(encKey: Buffer | undefined, sealed: Buffer, what: string): Buffer {
  if (!encKey) return sealed;
  if (sealed.length < NONCE + TAG) throw new IntegrityError(`${what}: too short to be encrypted data`);
  try {
    const d = createDecipheriv('aes-256-gcm', encKey, sealed.subarray(0, NONCE));
    d.setAuthTag(sealed.subarray(sealed.length - TAG));
    return Buffer.concat([d.update(sealed.subarray(NONCE, sealed.length - TAG)), d.final()]);
  } catch (err) {
    throw new IntegrityError(`${what}: authentication failed (corrupted or altered)`, { cause: err });
  }
}

/** Encode a structured value: format byte, zstd(JSON), sealed. */
export function encodeStructured(encKey: Buffer | undefined, value: unknown): Buffer {
  const json = Buffer.from(JSON.stringify(value));
  // The frame checksum makes any damage to an unencrypted manifest or index detectable (encryption authenticates the rest).
  const body = Buffer.concat([Buffer.from([FORMAT_ZSTD_JSON]), compress(json, { compressionLevel: 3, checksumFlag: true })]);
  return seal(encKey, body);
}

/** Decode a structured value; IntegrityError on any malformation. */
export function decodeStructured<T>(encKey: Buffer | undefined, data: Buffer, what: string, maxSize = 1 << 30): T {
  const body = open(encKey, data, what);
  if (body.length < 1 || body[0] !== FORMAT_ZSTD_JSON) throw new IntegrityError(`${what}: unknown format`);
  let json: Buffer;
  try {
    const declared = getFrameContentSize(body.subarray(1));
    if (declared === null || declared > maxSize) throw new Error(`declared size ${declared} out of bounds`);
    json = decompress(body.subarray(1));
  } catch (err) {
    throw new IntegrityError(`${what}: cannot decompress`, { cause: err });
  }
  try {
    return JSON.parse(json.toString('utf8')) as T;
  } catch (err) {
    throw new IntegrityError(`${what}: not valid JSON`, { cause: err });
  }
}

/** The value sealed into config.encryption.check; opening it proves the key. */
export function keyCheck(encKey: Buffer, repoId: string): string {
  return seal(encKey, Buffer.from(`permafrost-key-check:${repoId}`)).toString('base64');
}

export function verifyKeyCheck(encKey: Buffer, repoId: string, check: string): void {
  let plain: Buffer;
  try {
    plain = open(encKey, Buffer.from(check, 'base64'), 'key check');
  } catch {
    throw new WrongKeyError('wrong key: the key file does not open this repository');
  }
  if (plain.toString() !== `permafrost-key-check:${repoId}`) throw new WrongKeyError('wrong key: the key file does not open this repository');
}

/** A new random master key, hex-encoded for a key file. */
export function newMasterKeyHex(): string {
  return randomBytes(32).toString('hex');
}

/** Parse a key file: 64 hex characters (whitespace ignored). */
export function parseKeyFile(text: string, path: string): Buffer {
  const hex = text.trim();
  if (!/^[0-9a-fA-F]{64}$/.test(hex)) throw new WrongKeyError(`key file ${path} does not hold a 256-bit hex key`);
  return Buffer.from(hex, 'hex');
}
