/**
 * Block engine, backup side: read a block device (or an image file) in fixed
 * blocks, skip all-zero blocks, store the others as deduplicated `data` blobs,
 * and store the block map (see map.ts) deduplicated as `tree` blobs.
 *
 * Pipeline: large sequential reads (two ahead, on libuv's thread pool) overlap
 * with zero detection and hashing on the main thread; only blocks the
 * repository does not hold are copied out of the read buffer and handed to
 * saveBlob, whose compression runs on worker threads. A byte budget bounds the
 * uploads in flight.
 */
import { open, type FileHandle } from 'node:fs/promises';
import type { EngineBackupResult, EngineContext } from '../engine.js';
import type { BlobId, BlobType, BackupStats, SaveResult } from '../../src/repository/types.js';
import { emptyStats } from '../../src/repository/types.js';
import { DeviceError, InterruptedError, fromSystemError, throwIfAborted } from '../../src/errors.js';
import {
  BLOCK_MAP_KIND,
  BLOCK_MAP_VERSION,
  DEFAULT_BLOCK_SIZE,
  DEFAULT_SEGMENT_ENTRIES,
  ENTRY_BYTES,
  MAX_DEVICE_SIZE,
  blockCount,
  checkBlockSize,
  encodeRoot,
  loadRoot,
  loadSegmentBytes,
  segmentCount,
  segmentLength,
  type BlockMapRoot,
} from './map.js';
import { ByteBudget, isZeroBlock, probeDevice, readChunks } from './device.js';

/** Options of {@link backupDevice}. */
export interface BlockBackupOptions {
  /** Root of the parent backup's block map; only used to count changed blocks. */
  parentRoot?: BlobId;
  /** Block size in bytes (power of two, 4 KiB–64 MiB). Default 1 MiB. Recorded in the map. */
  blockSize?: number;
  /** Bytes per sequential read (rounded up to a multiple of the block size). Default 16 MiB. */
  readSize?: number;
  /** Plaintext bytes of uploads in flight. Default 96 MiB. */
  maxInFlightBytes?: number;
  /** Entries per map segment. Default 4096. For tests. */
  segmentEntries?: number;
}

/** Engine-specific facts returned in `info` (and recorded in the manifest). */
export interface BlockBackupInfo {
  engine: 'block';
  device: string;
  deviceKind: 'block' | 'file';
  size: number;
  blockSize: number;
  blocks: number;
  zeroBlocks: number;
  usedBlocks: number;
  /** Used blocks whose blob was new to the repository. */
  newBlocks: number;
  /** Used blocks whose blob the repository already held (or that repeat within this backup). */
  dedupBlocks: number;
  segments: number;
  /** Blocks whose entry differs from the parent's at the same index (absent without a usable parent). */
  changedBlocks?: number;
  parentRoot?: BlobId;
  seconds: number;
}

const DEFAULT_READ_SIZE = 16 << 20;
const DEFAULT_IN_FLIGHT = 96 << 20;
const READ_BUFFERS = 3;

/**
 * Back up a block device or image file. Returns the block map's root blob ID
 * and the statistics (`bytesTotal` = device size; `files` = blocks,
 * `filesRead` = non-zero blocks hashed, `filesUnchanged` = those already in
 * the repository). Nothing is durable before the repository's flush.
 */
export async function backupDevice(devicePath: string, opts: BlockBackupOptions, ctx: EngineContext): Promise<EngineBackupResult> {
  const started = Date.now();
  const { repo, signal, progress, log } = ctx;
  throwIfAborted(signal);
  const blockSize = checkBlockSize(opts.blockSize ?? DEFAULT_BLOCK_SIZE);
  const segmentEntries = opts.segmentEntries ?? DEFAULT_SEGMENT_ENTRIES;
  const readSize = Math.max(blockSize, Math.ceil((opts.readSize ?? DEFAULT_READ_SIZE) / blockSize) * blockSize);
  const budget = new ByteBudget(opts.maxInFlightBytes ?? DEFAULT_IN_FLIGHT, 256, signal);

  const dev = await probeDevice(devicePath);
  const size = dev.size;
  if (size > MAX_DEVICE_SIZE) throw new DeviceError(`${devicePath} is ${size} bytes, larger than the ${MAX_DEVICE_SIZE} a block map can describe`);
  const blocks = blockCount(size, blockSize);
  const nSegments = segmentCount(blocks, segmentEntries);
  const shape = { size, blockSize, segmentEntries };

  const stats: BackupStats = emptyStats();
  stats.bytesTotal = size;
  stats.files = blocks;
  let zeroBlocks = 0;
  let newBlocks = 0;
  let dedupBlocks = 0;

  // Parent: only for the changed-block count. A parent that cannot be read is not fatal.
  let parent: BlockMapRoot | undefined;
  if (opts.parentRoot) {
    try {
      parent = await loadRoot(repo, opts.parentRoot);
      if (parent.blockSize !== blockSize || parent.segmentEntries !== segmentEntries) {
        log.debug(`block backup: parent map has block size ${parent.blockSize}, not ${blockSize}; not counting changed blocks`);
        parent = undefined;
      }
    } catch (err) {
      log.warn(`block backup: cannot read parent block map ${opts.parentRoot}: ${(err as Error).message}; not counting changed blocks`);
      parent = undefined;
    }
  }
  let changedBlocks: number | undefined = parent ? 0 : undefined;
  const loadParentSegment = (s: number): Promise<Buffer | undefined> | undefined => {
    if (!parent) return undefined;
    if (s >= parent.segments.length) return Promise.resolve(undefined);
    const p = loadSegmentBytes(repo, parent, s).catch((err: unknown) => {
      log.warn(`block backup: cannot read parent map segment ${s}: ${(err as Error).message}; not counting changed blocks`);
      changedBlocks = undefined;
      parent = undefined;
      return undefined;
    });
    return p;
  };

  // Uploads in flight, so that a block repeated before its first save lands is saved once.
  const pending = new Set<BlobId>();
  const save = async (type: BlobType, data: Buffer, id: BlobId, onResult?: (r: SaveResult) => void): Promise<void> => {
    // The store may transfer (detach) `data` to a worker: remember its length now.
    const len = data.length;
    await budget.acquire(len);
    pending.add(id);
    let saving: Promise<SaveResult>;
    try {
      saving = repo.saveBlob(type, data, id);
    } catch (err) {
      saving = Promise.reject(err);
    }
    saving.then(
      (r) => {
        pending.delete(id);
        if (r.isNew) {
          stats.blobsNew++;
          stats.bytesNew += len;
          stats.bytesStored += r.storedSize;
        }
        onResult?.(r);
        budget.release(len);
      },
      (err: unknown) => {
        pending.delete(id);
        budget.fail(err);
        budget.release(len);
      },
    );
  };

  const segments: BlobId[] = [];
  let fh: FileHandle | undefined;
  try {
    try {
      fh = await open(devicePath, 'r');
    } catch (err) {
      throw fromSystemError(err, devicePath);
    }
    progress.setTotal(size, blocks);
    progress.message(`reading ${devicePath}`);

    const zeros = Buffer.alloc(blockSize);
    let seg = 0;
    let segBuf = Buffer.alloc(nSegments > 0 ? segmentLength(shape, 0) * ENTRY_BYTES : 0);
    let segFill = 0;
    let parentSeg = loadParentSegment(0);
    let block = 0;

    const finishSegment = async (): Promise<void> => {
      const id = repo.hash(segBuf);
      segments.push(id);
      if (parentSeg) {
        const pbuf = await parentSeg;
        if (changedBlocks !== undefined) changedBlocks += countChanged(segBuf, pbuf, parent?.segments[seg] === id);
      }
      const n = segBuf.length;
      if (!repo.has(id) && !pending.has(id)) {
        await save('tree', segBuf, id);
        segBuf = Buffer.alloc(0);
      } else {
        segBuf.fill(0);
      }
      seg++;
      if (seg < nSegments) {
        const len = segmentLength(shape, seg) * ENTRY_BYTES;
        segBuf = len === n && segBuf.length === n ? segBuf : Buffer.alloc(len);
        parentSeg = loadParentSegment(seg);
        parentSeg?.catch(() => {});
      }
      segFill = 0;
    };

    for await (const { data: chunk } of readChunks(fh, devicePath, size, readSize, READ_BUFFERS)) {
      throwIfAborted(signal);
      if (budget.error !== undefined) throw budget.error;
      const got = chunk.length;
      stats.bytesRead += got;
      for (let off = 0; off < got; off += blockSize) {
        const len = Math.min(blockSize, got - off);
        const data = chunk.subarray(off, off + len);
        if (isZeroBlock(data, zeros)) {
          zeroBlocks++;
        } else {
          stats.filesRead++;
          const id = repo.hash(data);
          segBuf.write(id, segFill * ENTRY_BYTES, ENTRY_BYTES, 'hex');
          if (pending.has(id) || repo.has(id)) {
            dedupBlocks++;
          } else {
            // The read buffer is reused: the blob gets its own copy.
            const copy = Buffer.allocUnsafeSlow(len);
            data.copy(copy);
            await save('data', copy, id, (r) => {
              if (r.isNew) newBlocks++;
              else dedupBlocks++;
            });
          }
        }
        segFill++;
        block++;
        if (segFill === segBuf.length / ENTRY_BYTES) await finishSegment();
      }
      progress.advance(got, Math.ceil(got / blockSize));
    }
    if (block !== blocks) throw new DeviceError(`${devicePath}: read ${block} blocks, expected ${blocks}`);

    await budget.drain();
    if (budget.error !== undefined) throw budget.error;
    throwIfAborted(signal);

    const root: BlockMapRoot = {
      kind: BLOCK_MAP_KIND,
      version: BLOCK_MAP_VERSION,
      blockSize,
      size,
      segmentEntries,
      segments,
      zeroBlocks,
      usedBlocks: blocks - zeroBlocks,
    };
    const rootBuf = encodeRoot(root);
    const rootId = repo.hash(rootBuf);
    await save('tree', rootBuf, rootId);
    await budget.drain();
    if (budget.error !== undefined) throw budget.error;

    stats.filesUnchanged = dedupBlocks;
    const info: BlockBackupInfo = {
      engine: 'block',
      device: devicePath,
      deviceKind: dev.kind,
      size,
      blockSize,
      blocks,
      zeroBlocks,
      usedBlocks: blocks - zeroBlocks,
      newBlocks,
      dedupBlocks,
      segments: segments.length,
      seconds: (Date.now() - started) / 1000,
    };
    if (changedBlocks !== undefined && opts.parentRoot) {
      info.changedBlocks = changedBlocks;
      info.parentRoot = opts.parentRoot;
    }
    log.debug(
      `block backup of ${devicePath}: ${blocks} blocks (${zeroBlocks} zero, ${newBlocks} new, ${dedupBlocks} deduplicated), ` +
        `${stats.bytesStored} bytes stored in ${info.seconds.toFixed(1)} s`,
    );
    return { root: rootId, stats, info: info as unknown as Record<string, unknown> };
  } catch (err) {
    // Let the uploads already handed out settle before reporting (they may still fail quietly).
    budget.fail(err);
    await budget.drain();
    if (signal.aborted && !(err instanceof InterruptedError)) throw new InterruptedError('interrupted', { cause: err });
    if ((err as NodeJS.ErrnoException).code === 'EIO') throw new DeviceError(`${devicePath}: I/O error while reading`, { cause: err });
    throw fromSystemError(err, devicePath);
  } finally {
    await fh?.close().catch(() => {});
  }
}

/** Entries of `cur` that differ from `prev` (missing parent entries count as zero blocks). */
function countChanged(cur: Buffer, prev: Buffer | undefined, sameId: boolean): number {
  if (sameId) return 0;
  let changed = 0;
  for (let off = 0; off < cur.length; off += ENTRY_BYTES) {
    const a = cur.subarray(off, off + ENTRY_BYTES);
    if (prev && off + ENTRY_BYTES <= prev.length) {
      if (a.compare(prev, off, off + ENTRY_BYTES) !== 0) changed++;
    } else if (!isZeroEntry(a)) {
      changed++;
    }
  }
  return changed;
}

function isZeroEntry(e: Buffer): boolean {
  for (let i = 0; i < e.length; i++) if (e[i] !== 0) return false;
  return true;
}
