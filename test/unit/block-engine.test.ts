import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, rm, writeFile, readFile, stat, open, truncate } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { backupDevice } from '../../engines/block/backup.js';
import { restoreDevice, verifyTarget } from '../../engines/block/restore.js';
import {
  BLOCK_MAP_KIND,
  decodeRoot,
  decodeSegment,
  encodeRoot,
  encodeSegment,
  loadRoot,
  type BlockMapRoot,
} from '../../engines/block/map.js';
import type { BlockBackupInfo } from '../../engines/block/backup.js';
import type { EngineContext } from '../../engines/engine.js';
import { noProgress, type Progress } from '../../src/util/progress.js';
import type { Logger } from '../../src/util/log.js';
import { IntegrityError, InterruptedError, UsageError } from '../../src/errors.js';
import { MemBlockStore } from '../helpers/memstore-block.js';

const KiB = 1024;
const MiB = 1024 * KiB;
const BS = 64 * KiB; // small blocks: many blocks, several segments
const SEG = 32; // entries per segment in most tests

const quiet: Logger = { debug() {}, info() {}, warn() {}, error() {} };
function ctxFor(repo: MemBlockStore, signal = new AbortController().signal): EngineContext {
  return { repo, signal, progress: noProgress, log: quiet };
}

function textLike(n: number): Buffer {
  const words = 'volume snapshot backup restore cinder keystone block device sparse zero compress'.split(' ');
  const parts: string[] = [];
  let len = 0;
  for (let i = 0; len < n; i++) {
    const w = words[(i * 7 + (i >> 2)) % words.length]! + (i % 11 === 0 ? '\n' : ' ');
    parts.push(w);
    len += w.length;
  }
  return Buffer.from(parts.join('')).subarray(0, n);
}

/** 6 MiB random, 4 MiB text-like, 10 MiB zeros (interleaved), and a 12345-byte random tail. */
function makeImage(): Buffer {
  return Buffer.concat([
    randomBytes(3 * MiB),
    Buffer.alloc(4 * MiB),
    textLike(4 * MiB),
    Buffer.alloc(6 * MiB),
    randomBytes(3 * MiB),
    randomBytes(12345),
  ]);
}

const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'permafrost-block-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('block engine', () => {
  it('round-trips an image, restores it sparse and byte-identical', async () => {
    const repo = new MemBlockStore();
    const img = makeImage();
    const src = join(dir, 'rt.img');
    await writeFile(src, img);
    const res = await backupDevice(src, { blockSize: BS, segmentEntries: SEG }, ctxFor(repo));
    const info = res.info as unknown as BlockBackupInfo;
    const blocks = Math.ceil(img.length / BS);
    expect(info.blocks).toBe(blocks);
    expect(info.zeroBlocks).toBe((10 * MiB) / BS);
    expect(info.usedBlocks).toBe(blocks - (10 * MiB) / BS);
    expect(res.stats.bytesTotal).toBe(img.length);
    expect(res.stats.bytesRead).toBe(img.length);
    expect(res.stats.bytesStored).toBeLessThan(10.5 * MiB); // text compresses, zeros are not stored
    expect(res.stats.bytesStored).toBeGreaterThan(6 * MiB); // random does not compress

    const map = await loadRoot(repo, res.root);
    expect(map).toMatchObject({ kind: BLOCK_MAP_KIND, version: 1, blockSize: BS, size: img.length, segmentEntries: SEG });
    expect(map.segments.length).toBe(Math.ceil(blocks / SEG));

    const dst = join(dir, 'rt.out');
    const r = await restoreDevice(res.root, dst, { verify: true }, ctxFor(repo));
    expect(r.verified).toBe(true);
    expect(r.zeroBlocksWritten).toBe(0);
    const out = await readFile(dst);
    expect(out.length).toBe(img.length);
    expect(sha(out)).toBe(sha(img));
    const st = await stat(dst);
    // 10 of ~20 MiB are zeros: the restored file must be sparse there.
    expect(st.blocks * 512).toBeLessThan(img.length - 9 * MiB);
  });

  it('stores nothing but (at most) a root for an unchanged image, and only changed blocks after a change', async () => {
    const repo = new MemBlockStore();
    const img = makeImage();
    const src = join(dir, 'inc.img');
    await writeFile(src, img);
    const first = await backupDevice(src, { blockSize: BS, segmentEntries: SEG }, ctxFor(repo));

    const second = await backupDevice(src, { blockSize: BS, segmentEntries: SEG, parentRoot: first.root }, ctxFor(repo));
    expect(second.root).toBe(first.root);
    expect(second.stats.blobsNew).toBeLessThanOrEqual(2);
    expect(second.stats.bytesStored).toBeLessThan(4 * KiB);
    expect((second.info as unknown as BlockBackupInfo).changedBlocks).toBe(0);

    // Change 3 blocks: one in the random part, one in a zero region, one in the text.
    const fh = await open(src, 'r+');
    for (const blk of [5, 3 * MiB / BS + 7, 7 * MiB / BS + 2]) await fh.write(randomBytes(100), 0, 100, blk * BS + 1000);
    await fh.close();
    const before = repo.count('data');
    const third = await backupDevice(src, { blockSize: BS, segmentEntries: SEG, parentRoot: first.root }, ctxFor(repo));
    const info = third.info as unknown as BlockBackupInfo;
    expect(repo.count('data') - before).toBe(3);
    expect(info.newBlocks).toBe(3);
    expect(info.changedBlocks).toBe(3);
    // 3 data blobs + at most 3 segments + 1 root
    expect(third.stats.blobsNew).toBeLessThanOrEqual(7);
    expect(third.stats.bytesNew).toBeLessThan(3 * BS + 3 * SEG * 32 + 4 * KiB);

    const dst = join(dir, 'inc.out');
    await restoreDevice(third.root, dst, {}, ctxFor(repo));
    expect(sha(await readFile(dst))).toBe(sha(await readFile(src)));
    // The older version is still restorable.
    await restoreDevice(first.root, dst + '.1', {}, ctxFor(repo));
    expect(sha(await readFile(dst + '.1'))).toBe(sha(img));
  });

  it('handles an image that grew or shrank since its parent', async () => {
    const repo = new MemBlockStore();
    const img = makeImage();
    const src = join(dir, 'grow.img');
    await writeFile(src, img);
    const first = await backupDevice(src, { blockSize: BS, segmentEntries: SEG }, ctxFor(repo));

    const grown = Buffer.concat([img, randomBytes(2 * MiB + 777), Buffer.alloc(MiB)]);
    await writeFile(src, grown);
    const second = await backupDevice(src, { blockSize: BS, segmentEntries: SEG, parentRoot: first.root }, ctxFor(repo));
    const info = second.info as unknown as BlockBackupInfo;
    expect(info.size).toBe(grown.length);
    // The old tail block (12345 bytes) became a full block, plus the 2 MiB appended.
    expect(info.newBlocks).toBe(1 + Math.ceil((2 * MiB + 777 - (BS - 12345)) / BS));
    expect(info.changedBlocks).toBe(info.newBlocks);
    await restoreDevice(second.root, join(dir, 'grow.out'), { verify: true }, ctxFor(repo));
    expect(sha(await readFile(join(dir, 'grow.out')))).toBe(sha(grown));

    const shrunk = grown.subarray(0, 2 * MiB + 100);
    await writeFile(src, shrunk);
    const third = await backupDevice(src, { blockSize: BS, segmentEntries: SEG, parentRoot: second.root }, ctxFor(repo));
    expect((third.info as unknown as BlockBackupInfo).newBlocks).toBe(1);
    await restoreDevice(third.root, join(dir, 'shrink.out'), {}, ctxFor(repo));
    expect(sha(await readFile(join(dir, 'shrink.out')))).toBe(sha(shrunk));
  });

  it('uses the default 1 MiB block size and segment length', async () => {
    const repo = new MemBlockStore();
    const img = Buffer.concat([randomBytes(3 * MiB), Buffer.alloc(2 * MiB), randomBytes(100)]);
    const src = join(dir, 'default.img');
    await writeFile(src, img);
    const res = await backupDevice(src, {}, ctxFor(repo));
    const map = await loadRoot(repo, res.root);
    expect(map.blockSize).toBe(MiB);
    expect(map.segmentEntries).toBe(4096);
    expect(map.segments.length).toBe(1);
    expect(map).toMatchObject({ zeroBlocks: 2, usedBlocks: 4 });
    const dst = join(dir, 'default.out');
    await restoreDevice(res.root, dst, { verify: true }, ctxFor(repo));
    expect(sha(await readFile(dst))).toBe(sha(img));
  });

  it('backs up and restores an empty image', async () => {
    const repo = new MemBlockStore();
    const src = join(dir, 'empty.img');
    await writeFile(src, Buffer.alloc(0));
    const res = await backupDevice(src, { blockSize: BS }, ctxFor(repo));
    const map = await loadRoot(repo, res.root);
    expect(map.segments).toEqual([]);
    const dst = join(dir, 'empty.out');
    await restoreDevice(res.root, dst, { verify: true }, ctxFor(repo));
    expect((await stat(dst)).size).toBe(0);
  });

  it('stores a block repeated many times once', async () => {
    const repo = new MemBlockStore();
    const blk = randomBytes(BS);
    const img = Buffer.concat(Array.from({ length: 40 }, () => blk));
    const src = join(dir, 'repeat.img');
    await writeFile(src, img);
    const res = await backupDevice(src, { blockSize: BS, segmentEntries: SEG }, ctxFor(repo));
    expect(repo.count('data')).toBe(1);
    expect((res.info as unknown as BlockBackupInfo).dedupBlocks).toBe(39);
    const dst = join(dir, 'repeat.out');
    await restoreDevice(res.root, dst, {}, ctxFor(repo));
    expect(sha(await readFile(dst))).toBe(sha(img));
  });

  it('rewrites an existing image file: larger keeps its size, smaller grows, old data is gone', async () => {
    const repo = new MemBlockStore();
    const img = makeImage();
    const src = join(dir, 'exist.img');
    await writeFile(src, img);
    const res = await backupDevice(src, { blockSize: BS, segmentEntries: SEG }, ctxFor(repo));

    const big = join(dir, 'exist-big.out');
    await writeFile(big, Buffer.alloc(img.length + 3 * MiB, 0xab));
    await restoreDevice(res.root, big, {}, ctxFor(repo));
    const out = await readFile(big);
    expect(out.length).toBe(img.length + 3 * MiB);
    expect(sha(out.subarray(0, img.length))).toBe(sha(img));
    expect(out.subarray(img.length).every((b) => b === 0)).toBe(true);

    const small = join(dir, 'exist-small.out');
    await writeFile(small, Buffer.alloc(MiB, 0xcd));
    await restoreDevice(res.root, small, { verify: true }, ctxFor(repo));
    expect(sha(await readFile(small))).toBe(sha(img));

    // assumeZeroed on a file already holding zeros only extends it.
    const pre = join(dir, 'exist-zeroed.out');
    await writeFile(pre, Buffer.alloc(0));
    await truncate(pre, img.length);
    await restoreDevice(res.root, pre, { assumeZeroed: true }, ctxFor(repo));
    expect(sha(await readFile(pre))).toBe(sha(img));
  });

  it('reports progress up to the device size and detects a damaged target on verify', async () => {
    const repo = new MemBlockStore();
    const img = makeImage();
    const src = join(dir, 'prog.img');
    await writeFile(src, img);
    let total = 0;
    let done = 0;
    const progress: Progress = { setTotal: (b) => void (total = b ?? 0), advance: (b) => void (done += b), message() {}, done() {} };
    const res = await backupDevice(src, { blockSize: BS, segmentEntries: SEG }, { ...ctxFor(repo), progress });
    expect(total).toBe(img.length);
    expect(done).toBe(img.length);

    total = done = 0;
    const dst = join(dir, 'prog.out');
    await restoreDevice(res.root, dst, { verify: true }, { ...ctxFor(repo), progress });
    expect(total).toBe(2 * img.length);
    expect(done).toBe(2 * img.length);

    const map = await loadRoot(repo, res.root);
    await verifyTarget(dst, map, MiB, ctxFor(repo));
    for (const off of [100, 4 * MiB + 5]) {
      // one flipped byte in a data block, one non-zero byte in a zero block
      const fh = await open(dst, 'r+');
      const orig = Buffer.alloc(1);
      await fh.read(orig, 0, 1, off);
      await fh.write(Buffer.from([orig[0]! ^ 0xff]), 0, 1, off);
      await fh.close();
      await expect(verifyTarget(dst, map, MiB, ctxFor(repo))).rejects.toThrow(new RegExp(`block ${Math.floor(off / BS)} `));
      const fh2 = await open(dst, 'r+');
      await fh2.write(orig, 0, 1, off);
      await fh2.close();
    }
    // A map that names a device larger than the target.
    await expect(verifyTarget(dst, { ...map, size: map.size + BS, usedBlocks: map.usedBlocks + 1 }, MiB, ctxFor(repo))).rejects.toThrow();
  });

  it('rejects bad block sizes', async () => {
    const repo = new MemBlockStore();
    const src = join(dir, 'bs.img');
    await writeFile(src, randomBytes(1000));
    for (const blockSize of [1000, 2048, 3 * MiB, 128 * MiB, -4096]) {
      await expect(backupDevice(src, { blockSize }, ctxFor(repo))).rejects.toBeInstanceOf(UsageError);
    }
  });

  it('stops with InterruptedError when aborted, and surfaces save errors', async () => {
    const repo = new MemBlockStore();
    const src = join(dir, 'abort.img');
    await writeFile(src, randomBytes(8 * MiB));
    const ac = new AbortController();
    ac.abort();
    await expect(backupDevice(src, { blockSize: BS }, ctxFor(repo, ac.signal))).rejects.toBeInstanceOf(InterruptedError);

    const ac2 = new AbortController();
    const p = backupDevice(src, { blockSize: BS, readSize: BS, maxInFlightBytes: 2 * BS }, ctxFor(repo, ac2.signal));
    setImmediate(() => ac2.abort());
    await expect(p).rejects.toBeInstanceOf(InterruptedError);

    const failing = new MemBlockStore();
    failing.failSaves = new Error('disk on fire');
    await expect(backupDevice(src, { blockSize: BS }, ctxFor(failing))).rejects.toThrow('disk on fire');
  });
});

describe('block map validation', () => {
  const good = (): BlockMapRoot => ({
    kind: BLOCK_MAP_KIND,
    version: 1,
    blockSize: MiB,
    size: 10 * MiB + 1,
    segmentEntries: 4,
    segments: ['a'.repeat(64), 'b'.repeat(64), 'c'.repeat(64)],
    zeroBlocks: 5,
    usedBlocks: 6,
  });
  const enc = (v: unknown): Buffer => Buffer.from(JSON.stringify(v));

  it('accepts a well-formed root and round-trips it', () => {
    expect(decodeRoot(encodeRoot(good()))).toEqual(good());
  });

  it.each([
    ['not JSON', Buffer.from('{nope')],
    ['an array', enc([])],
    ['null', enc(null)],
    ['wrong kind', enc({ ...good(), kind: 'tree' })],
    ['wrong version', enc({ ...good(), version: 2 })],
    ['block size not a power of two', enc({ ...good(), blockSize: 1000000 })],
    ['block size too small', enc({ ...good(), blockSize: 512 })],
    ['block size a string', enc({ ...good(), blockSize: '1048576' })],
    ['negative size', enc({ ...good(), size: -1 })],
    ['fractional size', enc({ ...good(), size: 1.5 })],
    ['absurd size', enc({ ...good(), size: 2 ** 60 })],
    ['segment count mismatch (too few)', enc({ ...good(), segments: ['a'.repeat(64)] })],
    ['segment count mismatch (too many)', enc({ ...good(), segments: [...good().segments, 'd'.repeat(64)] })],
    ['bad segment id', enc({ ...good(), segments: ['a'.repeat(64), 'B'.repeat(64), 'c'.repeat(64)] })],
    ['segment id not a string', enc({ ...good(), segments: ['a'.repeat(64), 7, 'c'.repeat(64)] })],
    ['counts do not add up', enc({ ...good(), zeroBlocks: 6 })],
    ['negative zero count', enc({ ...good(), zeroBlocks: -1, usedBlocks: 12 })],
    ['zero segment length', enc({ ...good(), segmentEntries: 0 })],
    ['segments missing', enc({ ...good(), segments: undefined })],
  ])('rejects a root with %s', (_what, buf) => {
    expect(() => decodeRoot(buf)).toThrow(IntegrityError);
  });

  it('rejects segments of the wrong length', () => {
    const seg = encodeSegment(['a'.repeat(64), null, 'b'.repeat(64)]);
    expect(decodeSegment(seg, 3)).toEqual(['a'.repeat(64), null, 'b'.repeat(64)]);
    expect(() => decodeSegment(seg, 4)).toThrow(IntegrityError);
    expect(() => decodeSegment(seg.subarray(0, 95), 3)).toThrow(IntegrityError);
  });

  it('refuses to restore hostile maps stored in the repository', async () => {
    const repo = new MemBlockStore();
    const img = Buffer.concat([randomBytes(2 * BS), Buffer.alloc(2 * BS), randomBytes(BS)]);
    const src = join(dir, 'hostile.img');
    await writeFile(src, img);
    const res = await backupDevice(src, { blockSize: BS, segmentEntries: 2 }, ctxFor(repo));
    const map = await loadRoot(repo, res.root);
    const store = async (v: unknown): Promise<string> => (await repo.saveBlob('tree', enc(v))).id;
    let n = 0;
    const target = (): string => join(dir, `hostile-${n++}.out`);

    // A root whose JSON is fine but whose segment count does not match its size.
    const r1 = await store({ ...map, size: map.size + 10 * BS });
    await expect(restoreDevice(r1, target(), {}, ctxFor(repo))).rejects.toBeInstanceOf(IntegrityError);
    // A segment of the wrong length (the last segment put first).
    const r2 = await store({ ...map, segments: [map.segments[2], map.segments[1], map.segments[0]] });
    await expect(restoreDevice(r2, target(), {}, ctxFor(repo))).rejects.toBeInstanceOf(IntegrityError);
    // Zero count that disagrees with the segments.
    const r3 = await store({ ...map, zeroBlocks: map.zeroBlocks - 1, usedBlocks: map.usedBlocks + 1 });
    await expect(restoreDevice(r3, target(), {}, ctxFor(repo))).rejects.toBeInstanceOf(IntegrityError);
    // An entry pointing at a blob of another length (the map segment itself, stored as tree): wrong type / length.
    const evilSeg = encodeSegment([map.segments[0]!, null]);
    const evilSegId = (await repo.saveBlob('tree', evilSeg)).id;
    const r4 = await store({ ...map, segments: [evilSegId, map.segments[1], map.segments[2]], zeroBlocks: 3, usedBlocks: 2 });
    await expect(restoreDevice(r4, target(), {}, ctxFor(repo))).rejects.toBeInstanceOf(IntegrityError);
    // A data blob that is shorter than its block.
    const shortId = (await repo.saveBlob('data', randomBytes(100))).id;
    const shortSeg = (await repo.saveBlob('tree', encodeSegment([shortId, null]))).id;
    const r5 = await store({ ...map, segments: [shortSeg, map.segments[1], map.segments[2]], zeroBlocks: 3, usedBlocks: 2 });
    await expect(restoreDevice(r5, target(), {}, ctxFor(repo))).rejects.toBeInstanceOf(IntegrityError);
    // A data blob that was altered in the repository.
    const seg0 = decodeSegment(await repo.loadBlob('tree', map.segments[0]!), 2);
    repo.corrupt(seg0[0]!, randomBytes(BS));
    await expect(restoreDevice(res.root, target(), {}, ctxFor(repo))).rejects.toBeInstanceOf(IntegrityError);
    // A root that is not a block map at all.
    await expect(restoreDevice(await store({ nodes: [] }), target(), {}, ctxFor(repo))).rejects.toBeInstanceOf(IntegrityError);
  });
});
