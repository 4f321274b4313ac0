/**
 * Micro-benchmark of the file engine (the end-to-end comparison with restic
 * and borg is `npm run bench`, scripts/bench/).
 *
 *   node --import tsx engines/file/bench.ts [--data DIR | --gen DIR] [--repo mem|local]
 *        [--cold] [--readers N] [--writers N [--writers2 M]] [--inflight-mib N]
 *        [--phases chunker,full,nochange,incremental,restore,tar] [--prof PHASE]
 *
 * --gen DIR builds a synthetic tree there first (100k files of 50 B – 8 KiB in 5k
 * directories; --files/--dirs change it). --repo local uses the real Repository
 * (encrypted, zstd on worker threads) in a temporary directory; mem (default) an
 * in-memory store, which shows the engine's own cost; null hashes and forgets
 * (backup phases only: the engine's own memory). --cold drops the page
 * cache before each phase (root). --prof PHASE writes PHASE.cpuprofile (main
 * thread) into the current directory. Prints wall time, process CPU, RSS and stats.
 */
import { execFileSync } from 'node:child_process';
import { Session } from 'node:inspector/promises';
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { Repository } from '../../src/repository/repository.js';
import type { BlobStore } from '../../src/repository/types.js';
import { LocalStorage } from '../../src/storage/local.js';
import type { Logger } from '../../src/util/log.js';
import { noProgress } from '../../src/util/progress.js';
import { MemStore } from '../../test/helpers/memstore.js';
import type { EngineContext } from '../engine.js';
import { backupTree } from './backup.js';
import { chunkBoundaries } from './chunker.js';
import { restoreTree } from './restore.js';
import { exportTar } from './tar.js';

const args = process.argv.slice(2);
const opt = (name: string, def?: string): string | undefined => {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : def;
};
const quiet: Logger = { debug() {}, info() {}, warn: (m) => process.stderr.write(`warn: ${m}\n`), error: (m) => process.stderr.write(`error: ${m}\n`) };

/** Build a synthetic tree: `files` files of 50 B – 8 KiB (skewed small) in `dirs` directories. */
export function generateTree(root: string, files = 100_000, dirs = 5_000): number {
  let seed = 12345;
  const rnd = () => {
    seed = (seed * 1103515245 + 12345) & 0x7fffffff;
    return seed / 0x7fffffff;
  };
  fs.mkdirSync(root, { recursive: true });
  const list = [root];
  for (let i = 1; i < dirs; i++) {
    const parent = list[Math.floor(rnd() * Math.min(list.length, 50 + i / 4))]!;
    const d = join(parent, `d${i}`);
    fs.mkdirSync(d, { recursive: true });
    list.push(d);
  }
  const pool = randomBytes(4 << 20);
  let total = 0;
  for (let i = 0; i < files; i++) {
    const size = 50 + Math.floor(rnd() * rnd() * 8142);
    const off = Math.floor(rnd() * (pool.length - size));
    const data = Buffer.from(pool.subarray(off, off + size));
    data.writeUInt32LE(i, 0); // unique content
    fs.writeFileSync(join(list[i % dirs]!, `file${i}.dat`), data);
    total += size;
  }
  return total;
}

function dropCaches(): void {
  execFileSync('sync');
  fs.writeFileSync('/proc/sys/vm/drop_caches', '3\n');
}

async function main(): Promise<void> {
  const phases = (opt('--phases') ?? 'chunker,full,nochange,incremental,restore,tar').split(',');
  const readers = Number(opt('--readers', '8'));
  const writers = opt('--writers') === undefined ? undefined : Number(opt('--writers'));
  const maxInflightBytes = opt('--inflight-mib') ? Number(opt('--inflight-mib')) << 20 : undefined;
  const cold = args.includes('--cold');
  const work = fs.mkdtempSync(join(opt('--work') ?? tmpdir(), 'pf-file-bench-'));
  let data = opt('--data');
  const gen = opt('--gen');
  if (gen) {
    if (!fs.existsSync(gen)) {
      const t = performance.now();
      const bytes = generateTree(gen, Number(opt('--files', '100000')), Number(opt('--dirs', '5000')));
      console.log(`generated ${gen}: ${(bytes / 1e6).toFixed(0)} MB in ${((performance.now() - t) / 1000).toFixed(1)} s`);
    }
    data = gen;
  }
  if (!data && phases.some((p) => p !== 'chunker')) throw new Error('--data DIR or --gen DIR');
  let repo: BlobStore;
  let real: Repository | undefined;
  if (opt('--repo', 'mem') === 'local') {
    fs.writeFileSync(join(work, 'key'), randomBytes(32).toString('hex'));
    real = await Repository.init(new LocalStorage(join(work, 'repo')), { keyFile: join(work, 'key') });
    repo = real;
  } else if (opt('--repo') === 'null') {
    // Hash and forget: the engine's own cost and memory, backup phases only.
    const m = new MemStore();
    const seen = new Set<string>();
    repo = {
      hash: (d) => m.hash(d),
      has: (id) => seen.has(id),
      saveBlob: async (_t, d, id) => {
        const bid = id ?? m.hash(d);
        const isNew = !seen.has(bid);
        seen.add(bid);
        return { id: bid, isNew, storedSize: isNew ? d.length : 0 };
      },
      loadBlob: async () => {
        throw new Error('--repo null cannot load');
      },
    };
  } else repo = new MemStore();
  const ctx = (): EngineContext => ({ repo, signal: new AbortController().signal, progress: noProgress, log: quiet });
  const flush = async () => {
    await real?.flush();
  };
  const prof = opt('--prof');
  const session = new Session();
  session.connect();
  async function timed<T>(name: string, fn: () => Promise<T>, describe?: (r: T) => string): Promise<T> {
    if (cold) dropCaches();
    if (prof === name) {
      await session.post('Profiler.enable');
      await session.post('Profiler.start');
    }
    const t = performance.now();
    const c = process.cpuUsage();
    let peak = { rss: 0, heapUsed: 0, arrayBuffers: 0 };
    const sampler = setInterval(() => {
      const m = process.memoryUsage();
      if (m.rss > peak.rss) peak = { rss: m.rss, heapUsed: m.heapUsed, arrayBuffers: m.arrayBuffers };
    }, 100);
    const r = await fn();
    clearInterval(sampler);
    if (peak.rss === 0) {
      const m = process.memoryUsage();
      peak = { rss: m.rss, heapUsed: m.heapUsed, arrayBuffers: m.arrayBuffers };
    }
    const cu = process.cpuUsage(c);
    const rss = peak.rss / 1048576;
    console.log(
      `${name.padEnd(12)} ${((performance.now() - t) / 1000).toFixed(2).padStart(7)} s  cpu ${((cu.user + cu.system) / 1e6).toFixed(2).padStart(6)} s  peak rss ${rss.toFixed(0).padStart(4)} MiB (heap ${(peak.heapUsed / 1048576).toFixed(0)}, buffers ${(peak.arrayBuffers / 1048576).toFixed(0)})  ${describe ? describe(r) : ''}`,
    );
    if (prof === name) {
      const { profile } = await session.post('Profiler.stop');
      fs.writeFileSync(`${name}.cpuprofile`, JSON.stringify(profile));
    }
    return r;
  }
  try {
    if (phases.includes('chunker')) {
      const buf = randomBytes(256 << 20);
      await timed('chunker', async () => chunkBoundaries(buf), (b) => `256 MiB random, ${b.length} chunks`);
    }
    const stats = (r: { stats: object }) => JSON.stringify(r.stats);
    let root: string | undefined;
    if (phases.includes('full')) {
      root = (
        await timed(
          'full',
          async () => {
            const r = await backupTree(data!, { readers, maxInflightBytes }, ctx());
            await flush();
            return r;
          },
          stats,
        )
      ).root;
    }
    if (phases.includes('nochange') && root) {
      const parent = root;
      // --nochange-readers A,B: the same no-change backup with each reader count (A/B).
      for (const nr of (opt('--nochange-readers') ?? String(readers)).split(',').map(Number)) {
        root = (
          await timed(
            `nochange r=${nr}`,
            async () => {
              const r = await backupTree(data!, { readers: nr, maxInflightBytes, parentRoot: parent }, ctx());
              await flush();
              return r;
            },
            stats,
          )
        ).root;
      }
    }
    if (phases.includes('incremental') && root) {
      // Touch 5% of the files (append a byte), then back up again.
      const touched: string[] = [];
      let n = 0;
      const walk = (d: string) => {
        for (const e of fs.readdirSync(d, { withFileTypes: true })) {
          const p = join(d, e.name);
          if (e.isDirectory()) walk(p);
          else if (e.isFile() && n++ % 20 === 0) touched.push(p);
        }
      };
      walk(data!);
      for (const p of touched) fs.appendFileSync(p, 'x');
      const parent = root;
      root = (
        await timed(
          'incremental',
          async () => {
            const r = await backupTree(data!, { readers, maxInflightBytes, parentRoot: parent }, ctx());
            await flush();
            return r;
          },
          stats,
        )
      ).root;
      for (const p of touched) fs.truncateSync(p, fs.statSync(p).size - 1);
    }
    if (phases.includes('restore') && root) {
      const out = join(work, 'restore');
      const r0 = root;
      for (const w of writers === undefined ? [undefined] : [writers, ...(opt('--writers2') ? [Number(opt('--writers2'))] : [])]) {
        await timed(`restore${w === undefined ? '' : ` w=${w}`}`, () => restoreTree(r0, out, { writers: w }, ctx()), (r) => JSON.stringify(r));
        fs.rmSync(out, { recursive: true, force: true });
      }
    }
    if (phases.includes('tar') && root) {
      let bytes = 0;
      const sink = new Writable({
        write(chunk: Buffer, _enc, cb) {
          bytes += chunk.length;
          cb();
        },
      });
      const r0 = root;
      await timed('tar', () => exportTar(r0, sink, {}, ctx()), (r) => `${JSON.stringify(r)} ${(bytes / 1e6).toFixed(0)} MB archive`);
    }
  } finally {
    await real?.close();
    fs.rmSync(work, { recursive: true, force: true });
  }
}

main().catch((err) => {
  process.stderr.write(`${(err as Error).stack ?? err}\n`);
  process.exitCode = 1;
});
