/**
 * A local cache of the merged index, in the agent's state directory
 * (`<state_dir>/cache/index-<repository id>`): the blobs of a set of index
 * files as flat arrays, so that a session starts without reading, decrypting,
 * decompressing and parsing every index file (~0.3 s per 100k blobs).
 *
 * It is only a cache: the repository alone stays complete (disaster recovery
 * never needs it), a missing, stale or damaged cache is ignored, and it is
 * used only when every index file it covers still exists (a prune that
 * replaced index files makes it stale). It is authenticated with the
 * repository's hash key (keyed BLAKE3), so it cannot be forged or swapped in
 * from another repository without the key.
 *
 * Layout, little-endian, every section padded to 8 bytes:
 *   "PFIDXC01"  nFiles u32  nPacks u32  nBlobs u32  0 u32
 *   files:  nFiles × 32 bytes (index file IDs)
 *   packs:  nPacks × 32 bytes (IDs), nPacks × f64 (end of blobs), nPacks × u8 (holds data)
 *   blobs:  nBlobs × 32 bytes (IDs), × i32 pack number, × u8 type (0 data, 1 tree),
 *           × f64 offset, × f64 length, × f64 raw length, × i32 flags
 *   mac:    32 bytes, keyed BLAKE3 of everything before
 */
import { mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Blake3Hasher } from '../util/blake3.js';
import type { IndexArrays, MasterIndex } from './index.js';

const MAGIC = Buffer.from('PFIDXC01');
const HEADER = 24;
const MAC = 32;
const DOMAIN = Buffer.from('permafrost index cache v1\0');

const pad8 = (n: number): number => (n + 7) & ~7;

export function indexCachePath(dir: string, repoId: string): string {
  return join(dir, `index-${repoId}`);
}

function mac(hashKey: Buffer, body: Uint8Array): Buffer {
  return Blake3Hasher.newKeyed(hashKey).update(DOMAIN).update(Buffer.from(body.buffer, body.byteOffset, body.byteLength)).digestBuffer();
}

/** Section sizes for the counts. */
function layout(nFiles: number, nPacks: number, nBlobs: number) {
  const files = HEADER;
  const packIds = files + nFiles * 32;
  const packEnds = packIds + nPacks * 32;
  const packData = packEnds + nPacks * 8;
  const keys = pad8(packData + nPacks);
  const pack = keys + nBlobs * 32;
  const type = pad8(pack + nBlobs * 4);
  const offset = pad8(type + nBlobs);
  const length = offset + nBlobs * 8;
  const rawLength = length + nBlobs * 8;
  const flags = rawLength + nBlobs * 8;
  const end = pad8(flags + nBlobs * 4);
  return { files, packIds, packEnds, packData, keys, pack, type, offset, length, rawLength, flags, end };
}

/** Typed-array views of the blob sections of a cache buffer (whose byteOffset is a multiple of 8). */
function sections(buf: Buffer, l: ReturnType<typeof layout>, n: number): IndexArrays {
  const ab = buf.buffer;
  const at = (o: number) => buf.byteOffset + o;
  return {
    keys: new Uint32Array(ab, at(l.keys), n * 8),
    pack: new Int32Array(ab, at(l.pack), n),
    type: new Uint8Array(ab, at(l.type), n),
    offset: new Float64Array(ab, at(l.offset), n),
    length: new Float64Array(ab, at(l.length), n),
    rawLength: new Float64Array(ab, at(l.rawLength), n),
    flags: new Int32Array(ab, at(l.flags), n),
  };
}

/** Write the cache of `index` (covering index.files). Atomic (temporary file, rename); errors propagate. */
export function saveIndexCache(path: string, hashKey: Buffer, index: MasterIndex): void {
  const files = [...index.files];
  const n = index.size;
  const nPacks = index.packIds().length;
  const l = layout(files.length, nPacks, n);
  // Zeroed (the padding is part of the MAC), its own ArrayBuffer: the blob arrays are written in place.
  const buf = Buffer.alloc(l.end + MAC);
  const { packs } = index.exportArrays(sections(buf, l, n));
  MAGIC.copy(buf, 0);
  buf.writeUInt32LE(files.length, 8);
  buf.writeUInt32LE(packs.length, 12);
  buf.writeUInt32LE(n, 16);
  files.forEach((f, i) => buf.write(f, l.files + i * 32, 32, 'hex'));
  packs.forEach((p, i) => {
    buf.write(p.id, l.packIds + i * 32, 32, 'hex');
    buf.writeDoubleLE(p.end, l.packEnds + i * 8);
    buf[l.packData + i] = p.hasData ? 1 : 0;
  });
  mac(hashKey, buf.subarray(0, l.end)).copy(buf, l.end);
  const dir = join(path, '..');
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const tmp = `${path}.${process.pid}.tmp`;
  try {
    writeFileSync(tmp, buf, { mode: 0o600 });
    renameSync(tmp, path);
  } catch (err) {
    rmSync(tmp, { force: true });
    throw err;
  }
}

/**
 * Load the cache into `index` when it is intact and every index file it covers
 * is in `current`. Returns the index file IDs it covered, or undefined (nothing
 * merged) when it is absent, damaged, from another key or stale.
 */
export function loadIndexCache(path: string, hashKey: Buffer, index: MasterIndex, current: ReadonlySet<string>): string[] | undefined {
  let buf: Buffer;
  try {
    buf = readFileSync(path);
  } catch {
    return undefined;
  }
  if (buf.length < HEADER + MAC || !buf.subarray(0, 8).equals(MAGIC)) return undefined;
  const nFiles = buf.readUInt32LE(8);
  const nPacks = buf.readUInt32LE(12);
  const n = buf.readUInt32LE(16);
  const l = layout(nFiles, nPacks, n);
  if (buf.length !== l.end + MAC) return undefined;
  if (!mac(hashKey, buf.subarray(0, l.end)).equals(buf.subarray(l.end))) return undefined;
  const files: string[] = [];
  for (let i = 0; i < nFiles; i++) {
    const f = buf.toString('hex', l.files + i * 32, l.files + i * 32 + 32);
    if (!current.has(f)) return undefined;
    files.push(f);
  }
  const packs: { id: string; end: number; hasData: boolean }[] = [];
  for (let i = 0; i < nPacks; i++) {
    packs.push({ id: buf.toString('hex', l.packIds + i * 32, l.packIds + i * 32 + 32), end: buf.readDoubleLE(l.packEnds + i * 8), hasData: buf[l.packData + i] === 1 });
  }
  // Views of the sections (every section starts at a multiple of 8), on an aligned copy only when the file's buffer is not.
  const blobs = sections(buf.byteOffset % 8 === 0 ? buf : Buffer.from(new Uint8Array(buf)), l, n);
  for (let i = 0; i < n; i++) if (blobs.pack[i]! < 0 || blobs.pack[i]! >= nPacks) return undefined;
  index.importArrays(packs, blobs);
  for (const f of files) index.files.add(f);
  return files;
}
