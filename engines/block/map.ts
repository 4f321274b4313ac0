/**
 * The block map: which blob holds each fixed-size block of a device.
 *
 * A map is stored deduplicated, as blobs of type `tree`:
 *
 * - **segments**: `segmentEntries` consecutive block entries (the last segment may
 *   hold fewer), each the 32-byte binary blob ID of the block, or 32 zero bytes
 *   for an all-zero block (not stored). An unchanged region of the device gives
 *   byte-identical segments, hence the same segment blob IDs.
 * - **root**: a small JSON object (UTF-8) naming the segments in order, see
 *   {@link BlockMapRoot}. Its blob ID is the backup's `root`.
 *
 * Everything decoded here comes from a repository and is validated as hostile:
 * any inconsistency is an IntegrityError.
 */
import type { BlobId, BlobStore } from '../../src/repository/types.js';
import { IntegrityError, UsageError } from '../../src/errors.js';

/** Value of the root's `kind` field. */
export const BLOCK_MAP_KIND = 'permafrost-block-map';
/** Format version of the root and its segments. */
export const BLOCK_MAP_VERSION = 1;
/** Default block size: 1 MiB. */
export const DEFAULT_BLOCK_SIZE = 1 << 20;
/** Smallest block size accepted: 4 KiB. */
export const MIN_BLOCK_SIZE = 1 << 12;
/** Largest block size accepted: 64 MiB. */
export const MAX_BLOCK_SIZE = 1 << 26;
/** Default entries per segment (128 KiB of IDs; 4 GiB of device at 1 MiB blocks). */
export const DEFAULT_SEGMENT_ENTRIES = 4096;
/** Largest segment accepted (entries). */
export const MAX_SEGMENT_ENTRIES = 1 << 20;
/** Largest device a map may describe: 1 PiB. */
export const MAX_DEVICE_SIZE = 2 ** 50;
/** Largest root blob accepted when decoding (bytes). */
export const MAX_ROOT_BYTES = 64 << 20;
/** Bytes per entry in a segment. */
export const ENTRY_BYTES = 32;

const HEX_ID = /^[0-9a-f]{64}$/;

/** The root blob of a block map, as stored (JSON). */
export interface BlockMapRoot {
  kind: typeof BLOCK_MAP_KIND;
  version: number;
  /** Bytes per block, a power of two. The last block may be shorter. */
  blockSize: number;
  /** Device size in bytes. */
  size: number;
  /** Entries per segment (all segments but the last hold exactly this many). */
  segmentEntries: number;
  /** Segment blob IDs in device order. */
  segments: BlobId[];
  /** Blocks that are all zeros (not stored). */
  zeroBlocks: number;
  /** Blocks that reference a data blob. */
  usedBlocks: number;
}

/** True when n is a power of two within the accepted block sizes. */
export function isValidBlockSize(n: unknown): n is number {
  return typeof n === 'number' && Number.isInteger(n) && n >= MIN_BLOCK_SIZE && n <= MAX_BLOCK_SIZE && (n & (n - 1)) === 0;
}

/** Check a caller-chosen block size; UsageError when it is not acceptable. */
export function checkBlockSize(n: number): number {
  if (!isValidBlockSize(n)) {
    throw new UsageError(`block size ${n} is not a power of two between ${MIN_BLOCK_SIZE} and ${MAX_BLOCK_SIZE} bytes`);
  }
  return n;
}

/** Number of blocks of a device of `size` bytes. */
export function blockCount(size: number, blockSize: number): number {
  return Math.ceil(size / blockSize);
}

/** Number of segments a map of `blocks` entries has. */
export function segmentCount(blocks: number, segmentEntries: number): number {
  return Math.ceil(blocks / segmentEntries);
}

/** Entries held by segment `index` of a map. */
export function segmentLength(root: Pick<BlockMapRoot, 'size' | 'blockSize' | 'segmentEntries'>, index: number): number {
  const blocks = blockCount(root.size, root.blockSize);
  return Math.min(root.segmentEntries, blocks - index * root.segmentEntries);
}

/** Length in bytes of block `index` (the last one may be short). */
export function blockLength(root: Pick<BlockMapRoot, 'size' | 'blockSize'>, index: number): number {
  return Math.min(root.blockSize, root.size - index * root.blockSize);
}

/** Serialize a root (validated first, so a writer cannot produce a map its reader refuses). */
export function encodeRoot(root: BlockMapRoot): Buffer {
  validateRoot(root);
  const { kind, version, blockSize, size, segmentEntries, zeroBlocks, usedBlocks, segments } = root;
  return Buffer.from(JSON.stringify({ kind, version, blockSize, size, segmentEntries, zeroBlocks, usedBlocks, segments }), 'utf8');
}

/** Parse and validate a root blob; IntegrityError when it is not a well-formed block map. */
export function decodeRoot(data: Buffer): BlockMapRoot {
  if (data.length > MAX_ROOT_BYTES) throw new IntegrityError(`block map: root is ${data.length} bytes, more than the ${MAX_ROOT_BYTES} accepted`);
  let parsed: unknown;
  try {
    parsed = JSON.parse(data.toString('utf8'));
  } catch (err) {
    throw new IntegrityError('block map: root is not valid JSON', { cause: err });
  }
  validateRoot(parsed);
  const r = parsed as BlockMapRoot;
  return {
    kind: r.kind,
    version: r.version,
    blockSize: r.blockSize,
    size: r.size,
    segmentEntries: r.segmentEntries,
    segments: r.segments.slice(),
    zeroBlocks: r.zeroBlocks,
    usedBlocks: r.usedBlocks,
  };
}

function isCount(v: unknown, max: number): v is number {
  return typeof v === 'number' && Number.isSafeInteger(v) && v >= 0 && v <= max;
}

/** Throw IntegrityError unless `v` is a consistent BlockMapRoot. */
export function validateRoot(v: unknown): asserts v is BlockMapRoot {
  const bad = (why: string): never => {
    throw new IntegrityError(`block map: ${why}`);
  };
  if (typeof v !== 'object' || v === null || Array.isArray(v)) bad('root is not an object');
  const r = v as Record<string, unknown>;
  if (r.kind !== BLOCK_MAP_KIND) bad(`root kind is ${JSON.stringify(r.kind)}, not ${BLOCK_MAP_KIND}`);
  if (r.version !== BLOCK_MAP_VERSION) bad(`unsupported version ${JSON.stringify(r.version)}`);
  if (!isValidBlockSize(r.blockSize)) bad(`invalid block size ${JSON.stringify(r.blockSize)}`);
  if (!isCount(r.size, MAX_DEVICE_SIZE)) bad(`invalid device size ${JSON.stringify(r.size)}`);
  if (!isCount(r.segmentEntries, MAX_SEGMENT_ENTRIES) || r.segmentEntries < 1) bad(`invalid segment length ${JSON.stringify(r.segmentEntries)}`);
  const blocks = blockCount(r.size as number, r.blockSize as number);
  if (!isCount(r.zeroBlocks, blocks)) bad(`invalid zero block count ${JSON.stringify(r.zeroBlocks)}`);
  if (!isCount(r.usedBlocks, blocks)) bad(`invalid used block count ${JSON.stringify(r.usedBlocks)}`);
  if ((r.zeroBlocks as number) + (r.usedBlocks as number) !== blocks) {
    bad(`zero (${String(r.zeroBlocks)}) and used (${String(r.usedBlocks)}) blocks do not add up to the ${blocks} blocks of ${String(r.size)} bytes`);
  }
  if (!Array.isArray(r.segments)) bad('segments is not a list');
  const segs = r.segments as unknown[];
  const expected = segmentCount(blocks, r.segmentEntries as number);
  if (segs.length !== expected) bad(`${segs.length} segments where ${blocks} blocks need ${expected}`);
  for (const s of segs) if (typeof s !== 'string' || !HEX_ID.test(s)) bad(`invalid segment id ${JSON.stringify(s).slice(0, 80)}`);
}

/** One decoded segment: blob IDs, null for an all-zero block. */
export type SegmentEntries = (BlobId | null)[];

/** Serialize entries (null = zero block) into a segment blob. */
export function encodeSegment(entries: SegmentEntries): Buffer {
  const buf = Buffer.alloc(entries.length * ENTRY_BYTES);
  entries.forEach((id, i) => {
    if (id === null) return;
    if (!HEX_ID.test(id)) throw new IntegrityError(`block map: invalid blob id ${JSON.stringify(id).slice(0, 80)}`);
    buf.write(id, i * ENTRY_BYTES, ENTRY_BYTES, 'hex');
  });
  return buf;
}

/** Parse a segment blob that must hold exactly `expectedEntries` entries. */
export function decodeSegment(data: Buffer, expectedEntries: number): SegmentEntries {
  if (data.length !== expectedEntries * ENTRY_BYTES) {
    throw new IntegrityError(`block map: segment is ${data.length} bytes, expected ${expectedEntries} entries of ${ENTRY_BYTES} bytes`);
  }
  const out: SegmentEntries = new Array<BlobId | null>(expectedEntries);
  for (let i = 0; i < expectedEntries; i++) {
    const e = data.subarray(i * ENTRY_BYTES, (i + 1) * ENTRY_BYTES);
    out[i] = isZeroEntry(e) ? null : e.toString('hex');
  }
  return out;
}

function isZeroEntry(e: Buffer): boolean {
  for (let i = 0; i < e.length; i++) if (e[i] !== 0) return false;
  return true;
}

/** Load and validate the root of a block map. */
export async function loadRoot(repo: BlobStore, root: BlobId): Promise<BlockMapRoot> {
  if (!HEX_ID.test(root)) throw new UsageError(`not a blob id: ${JSON.stringify(root)}`);
  return decodeRoot(await repo.loadBlob('tree', root));
}

/** Load and validate segment `index` of a map (raw bytes: `ENTRY_BYTES` per entry). */
export async function loadSegmentBytes(repo: BlobStore, root: BlockMapRoot, index: number): Promise<Buffer> {
  const data = await repo.loadBlob('tree', root.segments[index]!);
  const n = segmentLength(root, index);
  if (data.length !== n * ENTRY_BYTES) {
    throw new IntegrityError(`block map: segment ${index} is ${data.length} bytes, expected ${n} entries of ${ENTRY_BYTES} bytes`);
  }
  return data;
}

/** Load and decode segment `index` of a map. */
export async function loadSegment(repo: BlobStore, root: BlockMapRoot, index: number): Promise<SegmentEntries> {
  return decodeSegment(await loadSegmentBytes(repo, root, index), segmentLength(root, index));
}

/**
 * Walk every block entry of a map in order, loading one segment ahead.
 * Yields `{index, id}` (id null for zero blocks) and checks at the end that the
 * zero-block count matches the root's.
 */
export async function* walkMap(repo: BlobStore, root: BlockMapRoot): AsyncGenerator<{ index: number; id: BlobId | null }> {
  let zeros = 0;
  let next: Promise<SegmentEntries> | undefined = root.segments.length > 0 ? loadSegment(repo, root, 0) : undefined;
  for (let s = 0; s < root.segments.length; s++) {
    const entries: SegmentEntries = await next!;
    next = s + 1 < root.segments.length ? loadSegment(repo, root, s + 1) : undefined;
    // An unawaited rejection of the prefetch must not crash the process if we stop early.
    next?.catch(() => {});
    const base = s * root.segmentEntries;
    for (let i = 0; i < entries.length; i++) {
      const id = entries[i]!;
      if (id === null) zeros++;
      yield { index: base + i, id };
    }
  }
  if (zeros !== root.zeroBlocks) throw new IntegrityError(`block map: segments hold ${zeros} zero blocks, root says ${root.zeroBlocks}`);
}
