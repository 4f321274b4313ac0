/**
 * Block engine, restore side: write the blocks of a block map back to a block
 * device or an image file at their offsets, sparse.
 *
 * Zero blocks are not written when the target is known to read as zeros there:
 * a regular file is emptied and re-extended with ftruncate (holes), a block
 * device only with `assumeZeroed` (a freshly created volume); otherwise zeros
 * are written. Blobs are loaded several at a time (bounded by bytes) and
 * written with positional writes, so their order does not matter.
 */
import { constants } from 'node:fs';
import { open, unlink, type FileHandle } from 'node:fs/promises';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import type { EngineContext } from '../engine.js';
import type { BlobId } from '../../src/repository/types.js';
import { DeviceError, IntegrityError, InterruptedError, NotFoundError, fromSystemError, throwIfAborted } from '../../src/errors.js';
import { blockCount, blockLength, loadRoot, walkMap, type BlockMapRoot } from './map.js';
import { ByteBudget, isZeroBlock, probeDevice, readChunks, writeFully, type DeviceInfo } from './device.js';

const execFileP = promisify(execFile);

/** Options of {@link restoreDevice}. */
export interface BlockRestoreOptions {
  /** Read the target back after writing and check every block against the map. */
  verify?: boolean;
  /**
   * The target already reads as zeros wherever the backup has zero blocks (a
   * freshly created volume or file): zero blocks are skipped. For a regular file
   * target the engine arranges this itself (truncate), so this only matters for
   * block devices; without it, zeros are written.
   */
  assumeZeroed?: boolean;
  /**
   * On a block device not known to be zeroed, zero long runs of zero blocks with
   * BLKZEROOUT (`blkdiscard -z`) instead of writing zeros. Default true; falls
   * back to writing zeros when it fails.
   */
  zeroout?: boolean;
  /** Plaintext bytes of loads/writes in flight. Default 96 MiB. */
  maxInFlightBytes?: number;
  /** Bytes per read during verification. Default 16 MiB. */
  readSize?: number;
}

/** What a restore did. */
export interface BlockRestoreResult {
  target: string;
  targetKind: 'block' | 'file';
  /** Size recorded in the map (bytes written up to). */
  size: number;
  blockSize: number;
  blocks: number;
  /** Non-zero blocks written. */
  blocksWritten: number;
  zeroBlocks: number;
  /** Zero blocks written as zeros (0 when the target was known to be zeroed). */
  zeroBlocksWritten: number;
  /** Zero blocks zeroed by the device (BLKZEROOUT) rather than written. */
  zeroBlocksZeroedOut: number;
  /** Bytes written (data and zeros; not counting zeroed-out ranges). */
  bytesWritten: number;
  verified: boolean;
  seconds: number;
}

const DEFAULT_IN_FLIGHT = 96 << 20;
const ZERO_CHUNK = 16 << 20;
/** Zero runs at least this long go to BLKZEROOUT on block devices. */
const ZEROOUT_MIN = 8 << 20;

/**
 * Restore the block map `root` to `targetPath` (a block device, an existing
 * image file, or a path to create). A block device smaller than the backup is
 * a DeviceError; a larger one is fine (bytes past the backup's size are left
 * as they are). A regular file is rewritten: its old content is dropped, it
 * ends up at least the backup's size, and zero blocks become holes.
 */
export async function restoreDevice(root: BlobId, targetPath: string, opts: BlockRestoreOptions, ctx: EngineContext): Promise<BlockRestoreResult> {
  const started = Date.now();
  const { repo, signal, progress, log } = ctx;
  throwIfAborted(signal);
  const map = await loadRoot(repo, root);
  const blocks = blockCount(map.size, map.blockSize);

  // Open the target and make sure it can hold the backup.
  let info: DeviceInfo | undefined;
  try {
    info = await probeDevice(targetPath);
  } catch (err) {
    if (!(err instanceof NotFoundError)) throw err;
  }
  let fh: FileHandle;
  let zeroed: boolean;
  let kind: 'block' | 'file';
  let created = false;
  try {
    if (!info) {
      kind = 'file';
      fh = await open(targetPath, 'wx');
      created = true;
      await fh.truncate(map.size).catch(async (err: unknown) => {
        await fh.close();
        await unlink(targetPath).catch(() => {});
        throw err;
      });
      zeroed = true;
    } else if (info.kind === 'block') {
      kind = 'block';
      if (info.size < map.size) {
        throw new DeviceError(`target ${targetPath} is ${info.size} bytes, smaller than the ${map.size} bytes of the backup`);
      }
      // O_EXCL on a block device: refuse a device that is mounted or otherwise held open exclusively.
      fh = await open(targetPath, constants.O_RDWR | constants.O_EXCL).catch((err: unknown) => {
        if ((err as NodeJS.ErrnoException).code === 'EBUSY') throw new DeviceError(`target ${targetPath} is in use (mounted or held open)`, { cause: err });
        throw err;
      });
      zeroed = opts.assumeZeroed === true;
    } else {
      kind = 'file';
      fh = await open(targetPath, 'r+');
      try {
        if (!opts.assumeZeroed) await fh.truncate(0);
        await fh.truncate(Math.max(info.size, map.size));
      } catch (err) {
        await fh.close();
        throw err;
      }
      zeroed = true;
    }
  } catch (err) {
    throw fromSystemError(err, targetPath);
  }

  const result: BlockRestoreResult = {
    target: targetPath,
    targetKind: kind,
    size: map.size,
    blockSize: map.blockSize,
    blocks,
    blocksWritten: 0,
    zeroBlocks: 0,
    zeroBlocksWritten: 0,
    zeroBlocksZeroedOut: 0,
    bytesWritten: 0,
    verified: false,
    seconds: 0,
  };

  progress.setTotal(opts.verify ? 2 * map.size : map.size, blocks);
  progress.message(`writing ${targetPath}`);
  const budget = new ByteBudget(opts.maxInFlightBytes ?? DEFAULT_IN_FLIGHT, 64, signal);
  const zeros = zeroed ? Buffer.alloc(0) : Buffer.alloc(Math.max(ZERO_CHUNK, map.blockSize));
  let closed = false;
  try {
    /** Run `fn` as a task holding `len` bytes of the budget; `len` bytes of progress when it succeeds. */
    const task = async (len: number, fn: () => Promise<void>): Promise<void> => {
      await budget.acquire(len);
      fn().then(
        () => {
          progress.advance(len, Math.ceil(len / map.blockSize));
          budget.release(len);
        },
        (err: unknown) => {
          budget.fail(err);
          budget.release(len);
        },
      );
    };

    const writeZeros = async (pos: number, end: number): Promise<void> => {
      for (let p = pos; p < end; p += zeros.length) {
        const len = Math.min(zeros.length, end - p);
        await writeFully(fh, zeros.subarray(0, len), p);
        result.bytesWritten += len;
      }
    };

    // Zero runs (only when the target is not known to be zeroed) are coalesced. On a block
    // device, long aligned runs go to BLKZEROOUT (`blkdiscard -z`): the device zeroes them
    // itself (thin volumes just unmap); the kernel writes zeros where it cannot.
    let useZeroout = kind === 'block' && opts.zeroout !== false;
    let zeroRunStart = -1;
    let zeroRunBlocks = 0;
    const flushZeros = async (): Promise<void> => {
      if (zeroRunBlocks === 0) return;
      const n = zeroRunBlocks;
      const start = zeroRunStart * map.blockSize;
      const end = Math.min(map.size, (zeroRunStart + n) * map.blockSize);
      zeroRunBlocks = 0;
      if (useZeroout && end - start >= ZEROOUT_MIN && start % 4096 === 0) {
        const zend = end - (end % 4096);
        await task(end - start, async () => {
          try {
            await execFileP('blkdiscard', ['-f', '-z', '-o', String(start), '-l', String(zend - start), targetPath]);
            result.zeroBlocksZeroedOut += n;
            if (zend < end) await writeZeros(zend, end);
          } catch (err) {
            if (useZeroout) log.debug(`blkdiscard -z on ${targetPath} failed, writing zeros instead: ${(err as Error).message}`);
            useZeroout = false;
            await writeZeros(start, end);
            result.zeroBlocksWritten += n;
          }
        });
        return;
      }
      for (let p = start; p < end; p += zeros.length) {
        const len = Math.min(zeros.length, end - p);
        const last = p + len >= end;
        await task(len, async () => {
          await writeZeros(p, p + len);
          if (last) result.zeroBlocksWritten += n;
        });
      }
    };

    for await (const { index, id } of walkMap(repo, map)) {
      if (budget.error !== undefined) throw budget.error;
      throwIfAborted(signal);
      const len = blockLength(map, index);
      if (id === null) {
        result.zeroBlocks++;
        if (zeroed) {
          progress.advance(len, 1);
          continue;
        }
        if (zeroRunBlocks === 0) zeroRunStart = index;
        zeroRunBlocks++;
        continue;
      }
      await flushZeros();
      await task(len, async () => {
        const buf = await repo.loadBlob('data', id);
        if (buf.length !== len) throw new IntegrityError(`block ${index}: blob ${id} holds ${buf.length} bytes, the block is ${len}`);
        await writeFully(fh, buf, index * map.blockSize);
        result.bytesWritten += len;
        result.blocksWritten++;
      });
    }
    await flushZeros();
    await budget.drain();
    if (budget.error !== undefined) throw budget.error;
    throwIfAborted(signal);
    await fh.sync();
    closed = true;
    await fh.close();

    if (opts.verify) {
      progress.message(`verifying ${targetPath}`);
      if (kind === 'block') {
        // Drop the device's page cache so the check reads what the device holds.
        await execFileP('blockdev', ['--flushbufs', targetPath]).catch((err: unknown) => {
          log.debug(`blockdev --flushbufs ${targetPath}: ${(err as Error).message}`);
        });
      }
      await verifyTarget(targetPath, map, opts.readSize ?? 16 << 20, ctx);
      result.verified = true;
    }
  } catch (err) {
    budget.fail(err);
    await budget.drain();
    if (!closed) await fh.close().catch(() => {});
    // A file this restore created holds a partial image: do not leave it behind.
    if (created) await unlink(targetPath).catch(() => {});
    if (signal.aborted && !(err instanceof InterruptedError)) throw new InterruptedError('interrupted', { cause: err });
    if ((err as NodeJS.ErrnoException).code === 'EIO') throw new DeviceError(`${targetPath}: I/O error while writing`, { cause: err });
    throw fromSystemError(err, targetPath);
  }
  result.seconds = (Date.now() - started) / 1000;
  log.debug(
    `block restore to ${targetPath}: ${result.blocksWritten} blocks written, ${result.zeroBlocks} zero blocks ` +
      `(${result.zeroBlocksWritten} written as zeros) in ${result.seconds.toFixed(1)} s`,
  );
  return result;
}

/**
 * Read `target` back and check each block against the map: keyed hash equal
 * to the block's blob ID, zeros where the map has a zero block. IntegrityError
 * at the first mismatch.
 */
export async function verifyTarget(target: string, map: BlockMapRoot, readSize: number, ctx: EngineContext): Promise<void> {
  const { repo, signal, progress } = ctx;
  const rs = Math.max(map.blockSize, Math.ceil(readSize / map.blockSize) * map.blockSize);
  const zeros = Buffer.alloc(map.blockSize);
  let fh: FileHandle;
  try {
    fh = await open(target, 'r');
  } catch (err) {
    throw fromSystemError(err, target);
  }
  try {
    const entries = walkMap(repo, map)[Symbol.asyncIterator]();
    for await (const { pos, data } of readChunks(fh, target, map.size, rs)) {
      throwIfAborted(signal);
      for (let off = 0; off < data.length; off += map.blockSize) {
        const next = await entries.next();
        if (next.done) throw new IntegrityError('block map: fewer entries than blocks');
        const { index, id } = next.value;
        const block = data.subarray(off, off + map.blockSize);
        const ok = id === null ? isZeroBlock(block, zeros) : repo.hash(block) === id;
        if (!ok) {
          throw new IntegrityError(`verification of ${target} failed: block ${index} (offset ${pos + off}) does not match the backup`);
        }
      }
      progress.advance(data.length);
    }
    const end = await entries.next(); // runs the map's final consistency check
    if (!end.done) throw new IntegrityError('block map: more entries than blocks');
  } finally {
    await fh.close().catch(() => {});
  }
}
