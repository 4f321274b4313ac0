// Block engine against real block devices: images attached with losetup.
// Needs root and util-linux (losetup, blockdev); skips with a printed reason otherwise.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { constants } from 'node:fs';
import { mkdtemp, open, readFile, rm, writeFile, truncate } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { backupDevice, type BlockBackupInfo } from '../../engines/block/backup.js';
import { restoreDevice } from '../../engines/block/restore.js';
import type { EngineContext } from '../../engines/engine.js';
import { noProgress } from '../../src/util/progress.js';
import { DeviceError } from '../../src/errors.js';
import { MemBlockStore } from '../helpers/memstore-block.js';

const MiB = 1024 * 1024;

function skipReason(): string | undefined {
  if (typeof process.getuid !== 'function' || process.getuid() !== 0) return 'not running as root (losetup needs root)';
  try {
    execFileSync('losetup', ['--version'], { stdio: 'ignore' });
    execFileSync('blockdev', ['--version'], { stdio: 'ignore' });
  } catch {
    return 'losetup/blockdev (util-linux) not installed';
  }
  try {
    // A loop device must actually be attachable (containers often lack /dev/loop-control).
    execFileSync('losetup', ['--find'], { stdio: 'ignore' });
  } catch {
    return 'no free loop device (losetup --find failed)';
  }
  return undefined;
}
const reason = skipReason();
if (reason) console.warn(`test/real/block-loop: skipped: ${reason}`);

const quiet = { debug() {}, info() {}, warn() {}, error() {} };
const ctxFor = (repo: MemBlockStore): EngineContext => ({ repo, signal: new AbortController().signal, progress: noProgress, log: quiet });
const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

describe.skipIf(reason !== undefined)('block engine on loop devices', () => {
  let dir: string;
  const attached: string[] = [];
  const attach = (file: string, readOnly: boolean): string => {
    const dev = execFileSync('losetup', [...(readOnly ? ['-r'] : []), '--find', '--show', file], { encoding: 'utf8' }).trim();
    attached.push(dev);
    return dev;
  };
  const detach = (dev: string): void => {
    execFileSync('losetup', ['-d', dev]);
    attached.splice(attached.indexOf(dev), 1);
  };

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'permafrost-block-loop-'));
  });
  afterAll(async () => {
    for (const dev of attached.splice(0)) {
      try {
        execFileSync('losetup', ['-d', dev]);
      } catch {
        // already gone
      }
    }
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('backs up /dev/loopN and restores to another loop device, with and without assumeZeroed', async () => {
    const text = Buffer.from('lorem ipsum block device backup '.repeat((8 * MiB) / 32));
    const img = Buffer.concat([randomBytes(12 * MiB), Buffer.alloc(10 * MiB), text, Buffer.alloc(8 * MiB), randomBytes(10 * MiB)]);
    const srcFile = join(dir, 'src.img');
    await writeFile(srcFile, img);
    const src = attach(srcFile, true);

    const repo = new MemBlockStore();
    const res = await backupDevice(src, {}, ctxFor(repo));
    const info = res.info as unknown as BlockBackupInfo;
    expect(info.deviceKind).toBe('block');
    expect(info.size).toBe(img.length);
    expect(info.zeroBlocks).toBe(18);
    expect(res.stats.bytesRead).toBe(img.length);

    // Target full of garbage: zero blocks must be written as zeros.
    const dirtyFile = join(dir, 'dirty.img');
    await writeFile(dirtyFile, Buffer.alloc(img.length + 4 * MiB, 0xab));
    const dirty = attach(dirtyFile, false);
    const r1 = await restoreDevice(res.root, dirty, { verify: true }, ctxFor(repo));
    expect(r1.targetKind).toBe('block');
    // Both zero runs (10 and 8 MiB) are long enough for BLKZEROOUT.
    expect(r1.zeroBlocksZeroedOut + r1.zeroBlocksWritten).toBe(18);
    expect(r1.zeroBlocksZeroedOut).toBe(18);
    expect(r1.verified).toBe(true);
    detach(dirty);
    let dirtyOut = await readFile(dirtyFile);
    expect(sha(dirtyOut.subarray(0, img.length))).toBe(sha(img));
    expect(dirtyOut.subarray(img.length).every((b) => b === 0xab)).toBe(true); // past the backup: untouched

    // Same with zeros written by the engine.
    await writeFile(dirtyFile, Buffer.alloc(img.length + 4 * MiB, 0xab));
    const dirty2 = attach(dirtyFile, false);
    const r1b = await restoreDevice(res.root, dirty2, { verify: true, zeroout: false }, ctxFor(repo));
    expect(r1b.zeroBlocksWritten).toBe(18);
    expect(r1b.zeroBlocksZeroedOut).toBe(0);
    detach(dirty2);
    dirtyOut = await readFile(dirtyFile);
    expect(sha(dirtyOut.subarray(0, img.length))).toBe(sha(img));

    // Fresh (sparse, zeroed) target: zero blocks are skipped.
    const freshFile = join(dir, 'fresh.img');
    await writeFile(freshFile, Buffer.alloc(0));
    await truncate(freshFile, img.length);
    const fresh = attach(freshFile, false);
    const r2 = await restoreDevice(res.root, fresh, { assumeZeroed: true, verify: true }, ctxFor(repo));
    expect(r2.zeroBlocksWritten).toBe(0);
    expect(r2.bytesWritten).toBe(img.length - 18 * MiB);
    detach(fresh);
    expect(sha(await readFile(freshFile))).toBe(sha(img));

    // Unchanged device: same root, nothing new.
    const again = await backupDevice(src, { parentRoot: res.root }, ctxFor(repo));
    expect(again.root).toBe(res.root);
    expect(again.stats.blobsNew).toBe(0);
  });

  it('refuses a target device smaller than the backup', async () => {
    const srcFile = join(dir, 'small-src.img');
    await writeFile(srcFile, randomBytes(6 * MiB));
    const repo = new MemBlockStore();
    const res = await backupDevice(srcFile, {}, ctxFor(repo));
    const tgtFile = join(dir, 'small-tgt.img');
    await writeFile(tgtFile, Buffer.alloc(0));
    await truncate(tgtFile, 4 * MiB);
    const tgt = attach(tgtFile, false);
    await expect(restoreDevice(res.root, tgt, {}, ctxFor(repo))).rejects.toThrow(DeviceError);
    await expect(restoreDevice(res.root, tgt, {}, ctxFor(repo))).rejects.toThrow(/smaller than/);
  });

  it('refuses a target device that is in use', async () => {
    const srcFile = join(dir, 'busy-src.img');
    await writeFile(srcFile, randomBytes(2 * MiB));
    const repo = new MemBlockStore();
    const res = await backupDevice(srcFile, {}, ctxFor(repo));
    const tgtFile = join(dir, 'busy-tgt.img');
    await writeFile(tgtFile, Buffer.alloc(0));
    await truncate(tgtFile, 4 * MiB);
    const tgt = attach(tgtFile, false);
    // Another exclusive opener (as a mount would be) holds the device.
    const holder = await open(tgt, constants.O_RDONLY | constants.O_EXCL);
    try {
      await expect(restoreDevice(res.root, tgt, {}, ctxFor(repo))).rejects.toThrow(/in use/);
    } finally {
      await holder.close();
    }
    const r = await restoreDevice(res.root, tgt, { assumeZeroed: true }, ctxFor(repo));
    expect(r.blocksWritten).toBe(2);
  });
});
