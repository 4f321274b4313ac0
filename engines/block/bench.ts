/**
 * Micro-benchmark of the block engine.
 *
 *   node --import tsx engines/block/bench.ts [sizeMiB] [--cold] [--dir DIR]
 *
 * Builds an image (half random, a quarter text-like, a quarter zeros, interleaved
 * in 32 MiB periods) and measures, in one run: sequential read, keyed BLAKE3,
 * zstd level 3 (one thread), a full block backup, a no-change backup, a restore,
 * and the restore baselines `cp --sparse=always` and `zstd -d`. `runBlockBench`
 * takes the repository to measure against, so the real one can be plugged in;
 * run directly, it uses {@link BenchMemStore}: in memory, but compressing with
 * zstd-napi on worker threads like a real repository.
 */
import { execFileSync } from 'node:child_process';
import { randomBytes, randomFillSync } from 'node:crypto';
import { createRequire } from 'node:module';
import { availableParallelism, loadavg, tmpdir } from 'node:os';
import { mkdtemp, open, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { Worker } from 'node:worker_threads';
import { keyedHash } from '../../src/repository/crypto.js';
import { compress } from 'zstd-napi';
import type { BlobId, BlobStore, BlobType, SaveResult } from '../../src/repository/types.js';
import { IntegrityError, NotFoundError } from '../../src/errors.js';
import { noProgress } from '../../src/util/progress.js';
import type { Logger } from '../../src/util/log.js';
import type { EngineContext } from '../engine.js';
import { backupDevice } from './backup.js';
import { restoreDevice } from './restore.js';
import { readChunks } from './device.js';

const MiB = 1 << 20;

/** A repository opened for the benchmark. */
export interface BenchRepo {
  store: BlobStore;
  /** Make saved blobs durable (packs → index); timed as part of the backup. */
  flush?(): Promise<void>;
  /** Release the repository. */
  close?(): Promise<void>;
}

/** Options of {@link runBlockBench}. */
export interface BlockBenchOptions {
  /** Image size in MiB (multiple of 32). Default 2048. */
  sizeMiB?: number;
  /** Working directory (image, restored copies). Default: a new directory in the OS temp dir, removed afterwards. */
  dir?: string;
  /** Drop the page cache before each reading phase (root only), to measure the disk rather than memory. */
  cold?: boolean;
  /** Progress lines. */
  onLine?: (line: string) => void;
}

/** One measured row. */
export interface BenchRow {
  name: string;
  seconds: number;
  /** CPU seconds used (all threads; for shell baselines, the command's). */
  cpuSeconds: number;
  /** Image megabytes (MiB) per second; undefined where not meaningful. */
  mbps?: number;
  note?: string;
}

/** Everything measured, with the derived ratios the performance targets are stated in. */
export interface BlockBenchResult {
  sizeBytes: number;
  cores: number;
  rows: BenchRow[];
  /** Full backup throughput / slowest of (read, hash, zstd on one thread). */
  fullVsSlowest: number;
  /**
   * The same ratio from CPU time: full backup MiB per CPU-second × cores (capped by the
   * measured read rate) over the slowest stage's MiB per CPU-second. What an idle machine gives.
   */
  projectedFullVsSlowest: number;
  /** Full backup MiB/s projected for an idle machine (see projectedFullVsSlowest). */
  projectedFullMbps: number;
  /** Full backup time / no-change backup time. */
  noChangeSpeedup: number;
  /** Restore time / `zstd -d` time. */
  restoreVsZstd: number;
  bytesStored: number;
  /** 1-minute load average before and after the run (other work on the machine skews every figure). */
  loadAvg: [number, number];
}

const quiet: Logger = { debug() {}, info() {}, warn() {}, error() {} };

function dropCaches(): void {
  execFileSync('sync');
  execFileSync('sh', ['-c', 'echo 3 > /proc/sys/vm/drop_caches']);
}

/** Text-like bytes: random words from a small vocabulary (zstd -3 makes ~3:1 of it). */
function textPool(n: number): Buffer {
  const vocab = (
    'the of and to in is that for it as was with be by on not he this are or his from at which but have an they ' +
    'you were her she there been one all we their has would when if so no will what can more out up about into ' +
    'volume snapshot backup restore block device cinder keystone sparse zero compress repository manifest index pack'
  )
    .split(' ')
    .map((w) => Buffer.from(w));
  const out = Buffer.allocUnsafe(n);
  const rnd = randomBytes(n);
  let o = 0;
  let r = 0;
  while (o < n) {
    const w = vocab[rnd[r++ % rnd.length]! % vocab.length]!;
    o += w.copy(out, o);
    if (o < n) out[o++] = rnd[r++ % rnd.length]! % 13 === 0 ? 10 : 32;
  }
  return out;
}

/** Build the image: per 32 MiB period, 16 MiB random, 8 MiB text-like, 8 MiB zeros. Every block is unique. */
export async function buildImage(path: string, sizeMiB: number): Promise<void> {
  const pool = textPool(8 * MiB);
  const fh = await open(path, 'w');
  try {
    const period = 32 * MiB;
    const buf = Buffer.allocUnsafe(period);
    for (let p = 0; p < sizeMiB * MiB; p += period) {
      randomFillSync(buf, 0, 16 * MiB);
      pool.copy(buf, 16 * MiB);
      // Stamp every 4 KiB of text with its position so no two text blocks are equal.
      for (let o = 16 * MiB; o < 24 * MiB; o += 4096) {
        buf.writeUInt32LE((p + o) >>> 0, o);
        buf.writeUInt32LE(Math.floor((p + o) / 2 ** 32), o + 4);
      }
      buf.fill(0, 24 * MiB);
      await fh.write(buf, 0, Math.min(period, sizeMiB * MiB - p), p);
    }
    await fh.sync();
  } finally {
    await fh.close();
  }
}

const workerSource = `
const { parentPort, workerData } = require('node:worker_threads');
const zstd = require(workerData.zstdPath);
const c = new zstd.Compressor();
c.setParameters({ compressionLevel: workerData.level });
const d = new zstd.Decompressor();
parentPort.on('message', (m) => {
  try {
    const input = Buffer.from(m.buf, m.off, m.len);
    let out = m.op === 'c' ? c.compress(input) : d.decompress(input);
    let raw = false;
    if (m.op === 'c' && out.length >= input.length) { out = input; raw = true; }
    const ab = out.byteOffset === 0 && out.length === out.buffer.byteLength ? out.buffer : out.buffer.slice(out.byteOffset, out.byteOffset + out.length);
    parentPort.postMessage({ id: m.id, buf: ab, raw }, [ab]);
  } catch (e) {
    parentPort.postMessage({ id: m.id, error: String(e && e.message || e) });
  }
});
`;

interface Job {
  resolve: (r: { buf: Buffer; raw: boolean }) => void;
  reject: (e: unknown) => void;
}

/**
 * In-memory BlobStore for the benchmark: keyed BLAKE3 on the calling thread,
 * zstd (compress and decompress) on one worker per core, like the real
 * repository's pipeline minus packs and disk.
 */
export class BenchMemStore implements BlobStore {
  private readonly key = randomBytes(32);
  private readonly blobs = new Map<BlobId, { type: BlobType; stored: Buffer; raw: boolean }>();
  private readonly pending = new Map<BlobId, Promise<SaveResult>>();
  private readonly workers: { w: Worker; busy: number; jobs: Map<number, Job> }[];
  private nextJob = 0;

  constructor(threads = availableParallelism(), level = 3) {
    const zstdPath = createRequire(import.meta.url).resolve('zstd-napi');
    this.workers = Array.from({ length: threads }, () => {
      const w = new Worker(workerSource, { eval: true, workerData: { zstdPath, level } });
      const slot = { w, busy: 0, jobs: new Map<number, Job>() };
      w.on('message', (m: { id: number; buf?: ArrayBuffer; raw?: boolean; error?: string }) => {
        const job = slot.jobs.get(m.id)!;
        slot.jobs.delete(m.id);
        slot.busy--;
        if (m.error !== undefined) job.reject(new Error(m.error));
        else job.resolve({ buf: Buffer.from(m.buf!), raw: m.raw === true });
      });
      return slot;
    });
  }

  private run(op: 'c' | 'd', data: Buffer): Promise<{ buf: Buffer; raw: boolean }> {
    const slot = this.workers.reduce((a, b) => (b.busy < a.busy ? b : a));
    const id = this.nextJob++;
    slot.busy++;
    const own = data.byteOffset === 0 && data.length === data.buffer.byteLength;
    const ab = own ? data.buffer : data.buffer.slice(data.byteOffset, data.byteOffset + data.length);
    return new Promise((resolve, reject) => {
      slot.jobs.set(id, { resolve, reject });
      slot.w.postMessage({ op, id, buf: ab, off: 0, len: data.length }, [ab as ArrayBuffer]);
    });
  }

  /** Keyed BLAKE3, hex. */
  hash(data: Uint8Array): BlobId {
    return keyedHash(this.key, data);
  }

  /** Stored or pending. */
  has(id: BlobId): boolean {
    return this.blobs.has(id) || this.pending.has(id);
  }

  /** Compress on a worker (transfers `data`) and keep the result. */
  saveBlob(type: BlobType, data: Buffer, id?: BlobId): Promise<SaveResult> {
    const bid = id ?? this.hash(data);
    if (this.blobs.has(bid)) return Promise.resolve({ id: bid, isNew: false, storedSize: 0 });
    const p = this.pending.get(bid);
    if (p) return p.then(() => ({ id: bid, isNew: false, storedSize: 0 }));
    const saving = this.run('c', data).then(({ buf, raw }) => {
      this.blobs.set(bid, { type, stored: buf, raw });
      this.pending.delete(bid);
      return { id: bid, isNew: true, storedSize: buf.length };
    });
    this.pending.set(bid, saving);
    return saving;
  }

  /** Decompress on a worker, verify on the calling thread. */
  async loadBlob(type: BlobType, id: BlobId): Promise<Buffer> {
    const e = this.blobs.get(id);
    if (!e) throw new NotFoundError(`blob ${id} not found`);
    if (e.type !== type) throw new IntegrityError(`blob ${id} is ${e.type}, not ${type}`);
    const data = e.raw ? Buffer.from(e.stored) : (await this.run('d', Buffer.from(e.stored))).buf;
    if (this.hash(data) !== id) throw new IntegrityError(`blob ${id} does not match its id`);
    return data;
  }

  /** Stop the workers. */
  async close(): Promise<void> {
    await Promise.all(this.workers.map((s) => s.w.terminate()));
  }
}

/** Open an in-memory benchmark repository. */
export async function openMemBenchRepo(): Promise<BenchRepo> {
  const store = new BenchMemStore();
  return { store, close: () => store.close() };
}

/** CPU seconds (all threads of this process, or of the shell command) of the last timed phase. */
let lastCpu = 0;

async function timed<T>(fn: () => Promise<T>): Promise<[T, number]> {
  const c = process.cpuUsage();
  const t = process.hrtime.bigint();
  const r = await fn();
  const wall = Number(process.hrtime.bigint() - t) / 1e9;
  const u = process.cpuUsage(c);
  lastCpu = (u.user + u.system) / 1e6;
  return [r, wall];
}

/** Run a shell command, timing it (wall and its CPU, from bash's `time`). */
function shellTimed(command: string): number {
  const t = process.hrtime.bigint();
  const out = execFileSync('bash', ['-c', `TIMEFORMAT='%U %S'; { time { ${command} ; } ; } 2>&1 >/dev/null`], { encoding: 'utf8' });
  const wall = Number(process.hrtime.bigint() - t) / 1e9;
  const [u, sy] = out.trim().split(/\s+/).slice(-2).map(Number);
  lastCpu = (u ?? 0) + (sy ?? 0);
  return wall;
}

/**
 * Run the whole benchmark against the repository `openRepo` returns (opened
 * once; the no-change backup and the restore use the same one).
 */
export async function runBlockBench(openRepo: () => Promise<BenchRepo>, opts: BlockBenchOptions = {}): Promise<BlockBenchResult> {
  const sizeMiB = Math.max(32, Math.round((opts.sizeMiB ?? 2048) / 32) * 32);
  const size = sizeMiB * MiB;
  const say = opts.onLine ?? (() => {});
  const ownDir = opts.dir === undefined;
  const dir = opts.dir ?? (await mkdtemp(join(tmpdir(), 'permafrost-block-bench-')));
  const img = join(dir, 'bench.img');
  const rows: BenchRow[] = [];
  const row = (name: string, seconds: number, bytes: number | undefined, note?: string): BenchRow => {
    const r: BenchRow = { name, seconds, cpuSeconds: lastCpu, mbps: bytes === undefined ? undefined : bytes / MiB / seconds, note };
    rows.push(r);
    say(`${name}: ${seconds.toFixed(2)} s${r.mbps ? `, ${r.mbps.toFixed(0)} MiB/s` : ''}`);
    return r;
  };
  const cacheNote = opts.cold ? 'page cache dropped' : 'warm page cache';
  const maybeDrop = (): void => {
    if (opts.cold) dropCaches();
  };
  const load0 = loadavg()[0]!;
  const repo = await openRepo();
  try {
    say(`building ${sizeMiB} MiB image in ${dir}`);
    await buildImage(img, sizeMiB);

    // 1. Sequential read (same reader and chunk size as the engine).
    maybeDrop();
    const fh = await open(img, 'r');
    const [, tRead] = await timed(async () => {
      for await (const c of readChunks(fh, img, size, 16 * MiB)) void c;
    });
    await fh.close();
    const read = row('sequential read', tRead, size, `16 MiB reads, ${cacheNote}`);

    // 2/3. Hash and zstd on a representative in-memory sample (whole 32 MiB periods).
    const sampleBytes = Math.min(size, 256 * MiB);
    const sample = Buffer.allocUnsafe(sampleBytes);
    const sf = await open(img, 'r');
    await sf.read(sample, 0, sampleBytes, 0);
    await sf.close();
    const store = repo.store;
    const [, tHash] = await timed(async () => {
      for (let o = 0; o < sampleBytes; o += MiB) store.hash(sample.subarray(o, o + MiB));
    });
    const hash = row('keyed BLAKE3 (1 thread)', tHash, sampleBytes, '1 MiB blocks, all of the image mix');
    let zOut = 0;
    let zIn = 0;
    let tZnz = 0;
    const zeros = Buffer.alloc(MiB);
    const [, tZstd] = await timed(async () => {
      for (let o = 0; o < sampleBytes; o += MiB) {
        const b = sample.subarray(o, o + MiB);
        const t = process.hrtime.bigint();
        const c = compress(b, { compressionLevel: 3 });
        if (!b.equals(zeros)) {
          tZnz += Number(process.hrtime.bigint() - t) / 1e9;
          zIn += b.length;
          zOut += c.length;
        }
      }
    });
    const zstdRow = row('zstd -3 (1 thread)', tZstd, sampleBytes, `1 MiB blocks incl. zeros; ${((zIn / MiB) / tZnz).toFixed(0)} MiB/s on non-zero blocks, ratio ${(zIn / zOut).toFixed(2)}`);

    // 4. Full backup.
    maybeDrop();
    const ctx: EngineContext = { repo: store, signal: new AbortController().signal, progress: noProgress, log: quiet };
    const fullStart = rows.length;
    const [full, tFull] = await timed(async () => {
      const r = await backupDevice(img, {}, ctx);
      await repo.flush?.();
      return r;
    });
    row('full block backup', tFull, size, `${(full.stats.bytesStored / MiB).toFixed(0)} MiB stored, ${full.stats.blobsNew} blobs, ${availableParallelism()} zstd workers`);

    // 5. No-change backup.
    maybeDrop();
    const [again, tAgain] = await timed(async () => {
      const r = await backupDevice(img, { parentRoot: full.root }, ctx);
      await repo.flush?.();
      return r;
    });
    row('no-change backup', tAgain, size, `${again.stats.blobsNew} new blobs, ${again.stats.bytesStored} bytes stored, same root: ${again.root === full.root}`);

    // 6. Restore and its baselines.
    const out = join(dir, 'restore.out');
    const [res, tRestore] = await timed(() => restoreDevice(full.root, out, {}, ctx));
    const st = await stat(out);
    row('block restore (new file)', tRestore, size, `sparse: ${(st.blocks * 512 / MiB).toFixed(0)} MiB allocated, fsync included, ${res.blocksWritten} blocks`);
    await rm(out);

    maybeDrop();
    const cpOut = join(dir, 'cp.out');
    const tCp = shellTimed(`cp --sparse=always '${img}' '${cpOut}' && sync '${cpOut}'`);
    row('cp --sparse=always', tCp, size, 'uncompressed copy, + fsync');
    await rm(cpOut);

    const zst = join(dir, 'bench.img.zst');
    const tZc = shellTimed(`zstd -q -3 -T${availableParallelism()} -f '${img}' -o '${zst}'`);
    row(`zstd -3 -T${availableParallelism()} (compress image)`, tZc, size, 'whole-image baseline for the full backup');
    const zOutPath = join(dir, 'zstd.out');
    const tZd = shellTimed(`zstd -q -d -f --sparse '${zst}' -o '${zOutPath}' && sync '${zOutPath}'`);
    row('zstd -d --sparse (restore baseline)', tZd, size, '+ fsync');
    await rm(zOutPath);
    await rm(zst);

    const slowest = Math.min(read.mbps!, hash.mbps!, zstdRow.mbps!);
    const fullMbps = size / MiB / tFull;
    // CPU-time view, much less sensitive to other load on the machine than wall time.
    const cpuRate = (r: BenchRow, bytes: number): number => bytes / MiB / Math.max(r.cpuSeconds, 1e-9);
    const slowestCpu = Math.min(cpuRate(read, size), cpuRate(hash, sampleBytes), cpuRate(zstdRow, sampleBytes));
    const fullRow = rows[fullStart]!;
    const projectedFull = cpuRate(fullRow, size) * availableParallelism();
    return {
      sizeBytes: size,
      cores: availableParallelism(),
      rows,
      fullVsSlowest: fullMbps / slowest,
      projectedFullVsSlowest: Math.min(projectedFull, read.mbps!) / slowestCpu,
      projectedFullMbps: Math.min(projectedFull, read.mbps!),
      noChangeSpeedup: tFull / tAgain,
      restoreVsZstd: tRestore / tZd,
      bytesStored: full.stats.bytesStored,
      loadAvg: [load0, loadavg()[0]!],
    };
  } finally {
    await repo.close?.();
    if (ownDir) await rm(dir, { recursive: true, force: true });
    else await rm(img, { force: true });
  }
}

/** Render results as a fixed-width table. */
export function formatBench(r: BlockBenchResult): string {
  const lines = [
    `image ${(r.sizeBytes / MiB).toFixed(0)} MiB (1/2 random, 1/4 text-like, 1/4 zeros), ${r.cores} cores, ` +
      `load average ${r.loadAvg[0].toFixed(1)} before / ${r.loadAvg[1].toFixed(1)} after`,
    '',
    `${'phase'.padEnd(36)} ${'seconds'.padStart(8)} ${'cpu s'.padStart(7)} ${'MiB/s'.padStart(8)}  note`,
    `${'-'.repeat(36)} ${'-'.repeat(8)} ${'-'.repeat(7)} ${'-'.repeat(8)}  ${'-'.repeat(30)}`,
  ];
  for (const row of r.rows) {
    lines.push(`${row.name.padEnd(36)} ${row.seconds.toFixed(2).padStart(8)} ${row.cpuSeconds.toFixed(2).padStart(7)} ${(row.mbps === undefined ? '' : row.mbps.toFixed(0)).padStart(8)}  ${row.note ?? ''}`);
  }
  lines.push('');
  lines.push(`full backup / slowest of (read, hash, zstd 1 thread): ${(r.fullVsSlowest * 100).toFixed(0)} %  (target >= 70 %)`);
  lines.push(`  same from CPU time (idle-machine projection):        ${(r.projectedFullVsSlowest * 100).toFixed(0)} %  (${r.projectedFullMbps.toFixed(0)} MiB/s)`);
  lines.push(`no-change backup speed-up over full:                  ${r.noChangeSpeedup.toFixed(1)} x  (target >= 3 x)`);
  lines.push(`restore time / zstd -d time:                          ${r.restoreVsZstd.toFixed(2)}`);
  return lines.join('\n');
}

const isMain = process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href;
if (isMain) {
  const args = process.argv.slice(2);
  const cold = args.includes('--cold');
  const dirIdx = args.indexOf('--dir');
  const dir = dirIdx >= 0 ? args[dirIdx + 1] : undefined;
  const sizeArg = args.find((a, i) => /^\d+$/.test(a) && args[i - 1] !== '--dir');
  const result = await runBlockBench(openMemBenchRepo, {
    sizeMiB: sizeArg ? Number(sizeArg) : 2048,
    dir,
    cold,
    onLine: (l) => process.stderr.write(`  ${l}\n`),
  });
  process.stdout.write(formatBench(result) + '\n');
}
