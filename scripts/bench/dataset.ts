/**
 * The benchmark dataset: seeded, deterministic, cached between runs.
 *
 * Every file's content is a pure function of (dataset seed, file) — and, for the
 * medium and large files, of (file, 1 MiB block) — so the generator never needs
 * the PRNG per byte and any part of any file can be regenerated on its own:
 *
 *   - text-like content: lines drawn at random from a seeded pool of 32k lines
 *     (prose, log lines, key = value) built from a seeded list of 4096 words.
 *     Compresses like text (~3x with zstd), never repeats at chunk scale.
 *   - random content: the AES-256-CTR keystream of a per-file key (prng.ts).
 *     Incompressible, never repeats (a small random pool would make random
 *     data deduplicable, which real random data is not).
 *
 * `mutate(dir, seed)` changes ~5% of the dataset in place (edits, appends,
 * deletes, new files, overwritten regions of medium and large files).
 * `revert(dir)` undoes it exactly by regenerating what the mutation touched —
 * the mutation plan is itself a pure function of the seeds — so a 3 GB dataset
 * is generated once and reused: the state in `<dir>.json` (next to the dataset,
 * never inside it) says whether the tree is pristine, and a run that died half
 * way leaves a state (`generating`, `mutating`, `mutated`, `reverting`) that the
 * next run repairs (regenerate, or revert — revert is idempotent).
 *
 * Standalone: node --import tsx scripts/bench/dataset.ts [--quick] [--dir D] [--seed S] generate|mutate|revert|info
 */
import {
  closeSync,
  existsSync,
  ftruncateSync,
  mkdirSync,
  openSync,
  readFileSync,
  renameSync,
  rmSync,
  statSync,
  unlinkSync,
  writeFileSync,
  writeSync,
} from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { Rng, randomBytesAt } from './prng.js';

export const DATASET_VERSION = 2;
export const DEFAULT_SEED = 'permafrost-bench-1';
const KiB = 1024;
const MiB = 1024 * KiB;
/** Unit in which medium and large file content is generated (and regenerated). */
export const BLOCK = MiB;

export type Scale = 'full' | 'quick';

interface ScaleParams {
  smallFiles: number;
  topDirs: number;
  midPerTop: number;
  /** Average leaf directories per mid directory (0 … 2×avg, so trees are 2 or 3 levels deep). */
  leafPerMid: number;
  mediumFiles: number;
  largeFiles: number;
  largeSize: number;
  sparseSize: number;
  sparseExtents: number;
  /** Mutation counts. */
  edits: number;
  appends: number;
  deletes: number;
  adds: number;
  mediumEdited: number;
  largeRegions: number;
}

export const SCALES: Record<Scale, ScaleParams> = {
  // ≈100k small files in ≈5k directories, 50 medium, 2 × 500 MiB, 1 GiB sparse ≈ 3.0 GB apparent.
  full: {
    smallFiles: 100_000, topDirs: 50, midPerTop: 10, leafPerMid: 9,
    mediumFiles: 50, largeFiles: 2, largeSize: 500 * MiB, sparseSize: 1024 * MiB, sparseExtents: 4,
    edits: 2000, appends: 1000, deletes: 500, adds: 1000, mediumEdited: 3, largeRegions: 4,
  },
  // ≈10x smaller: a smoke run.
  quick: {
    smallFiles: 10_000, topDirs: 10, midPerTop: 5, leafPerMid: 9,
    mediumFiles: 5, largeFiles: 2, largeSize: 50 * MiB, sparseSize: 100 * MiB, sparseExtents: 2,
    edits: 200, appends: 100, deletes: 50, adds: 100, mediumEdited: 1, largeRegions: 2,
  },
};

export type Kind = 'text' | 'random' | 'mixed' | 'half' | 'sparse';

export interface FileSpec {
  path: string; // relative to the dataset root
  size: number;
  kind: Kind;
  stream: string;
  extents?: { offset: number; length: number; kind: 'text' | 'random' }[];
}

export interface Plan {
  seed: string;
  scale: Scale;
  dirs: string[];
  small: FileSpec[];
  big: FileSpec[]; // medium, large and sparse: generated block by block
  files: number;
  apparentBytes: number;
  dataBytes: number;
}

// ---------------------------------------------------------------- text pool

interface TextPool {
  buf: Buffer;
  start: Uint32Array;
  len: Uint16Array;
  mask: number;
  words: string[];
}

const pools = new Map<string, TextPool>();

function textPool(seed: string): TextPool {
  let p = pools.get(seed);
  if (p) return p;
  const rng = new Rng(`words/${seed}`);
  const syl = ['ka', 'to', 're', 'mi', 'an', 'os', 'el', 'ur', 'ba', 'ne', 'li', 'qu', 'st', 'ar', 'en', 'or', 'ing', 'tion', 'er', 'th', 'ch', 'sh', 'ex', 'co', 'pro', 'de', 'ma', 'vi', 'lo', 'fa', 'gr', 'in'];
  const words = new Set<string>();
  while (words.size < 4096) {
    let w = '';
    const n = rng.int(1, 4);
    for (let i = 0; i < n; i++) w += rng.pick(syl);
    words.add(w);
  }
  const list = [...words];
  // Zipf-ish: common words are picked far more often, as in real text.
  const word = () => list[Math.floor(list.length * Math.pow(rng.float(), 2.2))]!;
  const levels = ['INFO', 'INFO', 'INFO', 'DEBUG', 'WARN', 'ERROR'];
  const N = 32768;
  const lines: string[] = [];
  for (let i = 0; i < N; i++) {
    const r = rng.float();
    let line: string;
    if (r < 0.45) {
      const n = rng.int(5, 16);
      const ws: string[] = [];
      for (let j = 0; j < n; j++) ws.push(word());
      ws[0] = ws[0]!.charAt(0).toUpperCase() + ws[0]!.slice(1);
      line = ws.join(' ') + rng.pick(['.', '.', '.', ',', '?', ':', '!']);
    } else if (r < 0.8) {
      const ts = `2024-${String(rng.int(1, 12)).padStart(2, '0')}-${String(rng.int(1, 28)).padStart(2, '0')}T${String(rng.int(0, 23)).padStart(2, '0')}:${String(rng.int(0, 59)).padStart(2, '0')}:${String(rng.int(0, 59)).padStart(2, '0')}.${String(rng.int(0, 999)).padStart(3, '0')}Z`;
      line = `${ts} ${rng.pick(levels)} [${word()}-${rng.int(1, 64)}] ${word()} ${word()} ${word()}=${rng.int(0, 99999)} ${word()}=${word()} took ${rng.int(1, 5000)}ms`;
    } else {
      line = `${word()}_${word()} = ${rng.chance(0.5) ? rng.int(0, 1 << 20) : `"${word()}/${word()}/${word()}"`}`;
    }
    lines.push(line + '\n');
  }
  const buf = Buffer.from(lines.join(''), 'latin1');
  const start = new Uint32Array(N);
  const len = new Uint16Array(N);
  let off = 0;
  for (let i = 0; i < N; i++) {
    start[i] = off;
    len[i] = lines[i]!.length;
    off += lines[i]!.length;
  }
  p = { buf, start, len, mask: N - 1, words: list };
  pools.set(seed, p);
  return p;
}

/** `length` bytes of text-like content for `stream` (lines drawn from the pool). */
export function textBytes(poolSeed: string, stream: string, length: number): Buffer {
  const p = textPool(poolSeed);
  const rng = new Rng(`text/${stream}`);
  const out = Buffer.allocUnsafe(length);
  let off = 0;
  const { buf, start, len, mask } = p;
  while (off < length) {
    const i = rng.u32() & mask;
    const s = start[i]!;
    const n = Math.min(len[i]!, length - off);
    buf.copy(out, off, s, s + n);
    off += n;
  }
  return out;
}

// ---------------------------------------------------------------- plan

export function makePlan(seed: string, scale: Scale): Plan {
  const P = SCALES[scale];
  const rng = new Rng(`plan/${seed}/${scale}`);
  const words = textPool(seed).words;
  const w = () => rng.pick(words);

  const dirs: string[] = [];
  const level12: string[] = [];
  for (let t = 0; t < P.topDirs; t++) {
    const top = `${w()}-${String(t).padStart(2, '0')}`;
    dirs.push(top);
    level12.push(top);
    for (let m = 0; m < P.midPerTop; m++) {
      const mid = `${top}/${w()}-${m}`;
      dirs.push(mid);
      level12.push(mid);
      const leaves = rng.int(0, 2 * P.leafPerMid);
      for (let l = 0; l < leaves; l++) dirs.push(`${mid}/${w()}_${l}`);
    }
  }

  const textExt = ['txt', 'log', 'json', 'md', 'csv', 'conf', 'xml', 'py', 'ts', 'html'];
  const randExt = ['bin', 'gz', 'jpg', 'png', 'zst'];
  const small: FileSpec[] = [];
  for (let i = 0; i < P.smallFiles; i++) {
    const random = rng.chance(0.2);
    const dir = rng.pick(dirs);
    const name = `${w()}-${w()}-${i.toString(36)}.${random ? rng.pick(randExt) : rng.pick(textExt)}`;
    small.push({ path: `${dir}/${name}`, size: rng.logInt(100, 16 * KiB), kind: random ? 'random' : 'text', stream: `${seed}/s${i}` });
  }

  const big: FileSpec[] = [];
  for (let i = 0; i < P.mediumFiles; i++) {
    const r = rng.float();
    const kind: Kind = r < 0.4 ? 'text' : r < 0.7 ? 'random' : 'mixed';
    const ext = kind === 'text' ? rng.pick(['log', 'csv', 'sql']) : kind === 'random' ? rng.pick(['tar.gz', 'mp4', 'zip']) : 'db';
    big.push({ path: `${rng.pick(level12)}/${w()}-${i}.${ext}`, size: rng.int(1 * MiB, 20 * MiB), kind, stream: `${seed}/m${i}` });
  }
  dirs.push('large');
  for (let i = 0; i < P.largeFiles; i++) {
    big.push({ path: `large/${i === 0 ? 'disk' : 'dump'}-${i}.img`, size: P.largeSize, kind: 'half', stream: `${seed}/l${i}` });
  }
  // Sparse: a few 1 MiB data extents at distinct 1 MiB-aligned offsets, holes elsewhere.
  const slots = rng.sample(P.sparseSize / MiB, P.sparseExtents).sort((a, b) => a - b);
  big.push({
    path: 'large/sparse.raw',
    size: P.sparseSize,
    kind: 'sparse',
    stream: `${seed}/sparse`,
    extents: slots.map((s, k) => ({ offset: s * MiB, length: MiB, kind: k % 2 ? 'text' : 'random' })),
  });

  let apparentBytes = 0;
  let dataBytes = 0;
  for (const f of small) apparentBytes += f.size;
  for (const f of big) apparentBytes += f.size;
  dataBytes = apparentBytes - P.sparseSize + P.sparseExtents * MiB;
  return { seed, scale, dirs, small, big, files: small.length + big.length, apparentBytes, dataBytes };
}

// ---------------------------------------------------------------- content

export function smallContent(plan: Plan, f: FileSpec): Buffer {
  return f.kind === 'random' ? randomBytesAt(f.stream, 0, f.size) : textBytes(plan.seed, f.stream, f.size);
}

function blockKind(f: FileSpec, b: number): 'text' | 'random' {
  switch (f.kind) {
    case 'text':
      return 'text';
    case 'random':
      return 'random';
    case 'mixed':
      // runs of 4 MiB, each text or random
      return new Rng(`${f.stream}/seg${Math.floor(b / 4)}`).chance(0.5) ? 'random' : 'text';
    case 'half': {
      // eight alternating runs: half random, half text
      const run = Math.ceil(Math.ceil(f.size / BLOCK) / 8);
      return Math.floor(b / run) % 2 === 0 ? 'random' : 'text';
    }
    default:
      throw new Error(`blockKind: ${f.kind}`);
  }
}

/** Block `b` (BLOCK bytes, shorter at the end) of a medium or large file. */
export function blockContent(plan: Plan, f: FileSpec, b: number): Buffer {
  const len = Math.min(BLOCK, f.size - b * BLOCK);
  return blockKind(f, b) === 'random' ? randomBytesAt(f.stream, b * BLOCK, len) : textBytes(plan.seed, `${f.stream}/b${b}`, len);
}

function writeAll(fd: number, buf: Buffer, pos: number): void {
  let off = 0;
  while (off < buf.length) off += writeSync(fd, buf, off, buf.length - off, pos + off);
}

/** Write blocks [b0, b1] of a big file into an open fd. */
function writeBlocks(plan: Plan, f: FileSpec, fd: number, b0: number, b1: number): void {
  for (let b = b0; b <= b1; b++) writeAll(fd, blockContent(plan, f, b), b * BLOCK);
}

function writeBig(plan: Plan, root: string, f: FileSpec): void {
  const fd = openSync(join(root, f.path), 'w');
  try {
    if (f.kind === 'sparse') {
      ftruncateSync(fd, f.size);
      for (const e of f.extents!) {
        const data = e.kind === 'random' ? randomBytesAt(f.stream, e.offset, e.length) : textBytes(plan.seed, `${f.stream}/${e.offset}`, e.length);
        writeAll(fd, data, e.offset);
      }
    } else {
      writeBlocks(plan, f, fd, 0, Math.ceil(f.size / BLOCK) - 1);
    }
  } finally {
    closeSync(fd);
  }
}

// ---------------------------------------------------------------- state marker

export type State = 'generating' | 'pristine' | 'mutating' | 'mutated' | 'reverting';

export interface Marker {
  version: number;
  seed: string;
  scale: Scale;
  state: State;
  mutationSeed?: string;
  files: number;
  apparentBytes: number;
  dataBytes: number;
  generatedAt?: string;
  generateSeconds?: number;
}

export const markerPath = (dir: string) => `${resolve(dir)}.json`;

export function readMarker(dir: string): Marker | undefined {
  try {
    return JSON.parse(readFileSync(markerPath(dir), 'utf8')) as Marker;
  } catch {
    return undefined;
  }
}

function writeMarker(dir: string, m: Marker): void {
  const p = markerPath(dir);
  writeFileSync(`${p}.tmp`, JSON.stringify(m, null, 2) + '\n');
  renameSync(`${p}.tmp`, p);
}

// ---------------------------------------------------------------- generate

export function generate(dir: string, seed: string, scale: Scale, log: (s: string) => void = () => {}): Plan {
  const t0 = performance.now();
  const plan = makePlan(seed, scale);
  const base: Marker = { version: DATASET_VERSION, seed, scale, state: 'generating', files: plan.files, apparentBytes: plan.apparentBytes, dataBytes: plan.dataBytes };
  mkdirSync(dirname(resolve(dir)), { recursive: true });
  writeMarker(dir, base);
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  for (const d of plan.dirs) mkdirSync(join(dir, d), { recursive: true });
  let n = 0;
  for (const f of plan.small) {
    writeFileSync(join(dir, f.path), smallContent(plan, f));
    if (++n % 20000 === 0) log(`  ${n}/${plan.small.length} small files`);
  }
  log(`  ${plan.small.length} small files in ${plan.dirs.length} directories written`);
  for (const f of plan.big) writeBig(plan, dir, f);
  const secs = (performance.now() - t0) / 1000;
  log(`  ${plan.big.length} medium/large/sparse files written; dataset ready in ${secs.toFixed(1)} s`);
  writeMarker(dir, { ...base, state: 'pristine', generatedAt: new Date().toISOString(), generateSeconds: Math.round(secs * 10) / 10 });
  return plan;
}

// ---------------------------------------------------------------- mutation

export interface Mutation {
  seed: string;
  edits: { file: number; offset: number; length: number }[];
  appends: { file: number; length: number }[];
  deletes: number[];
  adds: FileSpec[];
  newDirs: string[];
  regions: { file: number; offset: number; length: number; kind: 'text' | 'random' }[];
  bigAppends: { file: number; length: number }[];
}

export function mutationPlan(plan: Plan, seed: string): Mutation {
  const P = SCALES[plan.scale];
  const rng = new Rng(`mutation/${plan.seed}/${plan.scale}/${seed}`);
  const words = textPool(plan.seed).words;
  const picked = rng.sample(plan.small.length, P.edits + P.appends + P.deletes);
  const edits = picked.slice(0, P.edits).map((file) => {
    const size = plan.small[file]!.size;
    const length = Math.max(1, Math.min(size, rng.logInt(16, 4096)));
    return { file, offset: rng.int(0, size - length), length };
  });
  const appends = picked.slice(P.edits, P.edits + P.appends).map((file) => ({ file, length: rng.logInt(50, 8192) }));
  const deletes = picked.slice(P.edits + P.appends);

  const newDirs = [`incoming-${seed}`, `incoming-${seed}/a`, `incoming-${seed}/b`];
  const existing = plan.dirs;
  const adds: FileSpec[] = [];
  for (let i = 0; i < P.adds; i++) {
    const dir = i % 10 === 0 ? rng.pick(newDirs) : rng.pick(existing);
    const random = rng.chance(0.2);
    adds.push({ path: `${dir}/new-${rng.pick(words)}-${i.toString(36)}.${random ? 'bin' : 'txt'}`, size: rng.logInt(100, 16 * KiB), kind: random ? 'random' : 'text', stream: `${plan.seed}/mut/${seed}/a${i}` });
  }

  // In-place overwrites at unaligned offsets: two regions in each of a few medium files,
  // a few 1 MiB regions in one large file; one medium file grows by 1 MiB.
  const regions: Mutation['regions'] = [];
  const bigAppends: Mutation['bigAppends'] = [];
  const mediumIdx = plan.big.map((f, i) => ({ f, i })).filter(({ f }) => f.kind === 'text' || f.kind === 'random' || f.kind === 'mixed');
  const chosen = rng.sample(mediumIdx.length, P.mediumEdited + 1).map((k) => mediumIdx[k]!);
  for (const { f, i } of chosen.slice(0, P.mediumEdited)) {
    for (let k = 0; k < 2; k++) {
      const length = Math.min(f.size, rng.int(64 * KiB, MiB));
      regions.push({ file: i, offset: rng.int(0, f.size - length), length, kind: rng.chance(0.5) ? 'random' : 'text' });
    }
  }
  if (chosen[P.mediumEdited]) bigAppends.push({ file: chosen[P.mediumEdited]!.i, length: MiB });
  const largeIdx = plan.big.findIndex((f) => f.kind === 'half');
  const large = plan.big[largeIdx]!;
  for (let k = 0; k < P.largeRegions; k++) {
    regions.push({ file: largeIdx, offset: rng.int(0, large.size - MiB), length: MiB, kind: k % 2 ? 'text' : 'random' });
  }
  return { seed, edits, appends, deletes, adds, newDirs, regions, bigAppends };
}

function planFor(dir: string): { plan: Plan; marker: Marker } {
  const marker = readMarker(dir);
  if (!marker) throw new Error(`${dir}: no dataset marker (${markerPath(dir)}); generate it first`);
  return { plan: makePlan(marker.seed, marker.scale), marker };
}

export interface MutationStats {
  edited: number;
  appended: number;
  deleted: number;
  added: number;
  bigRegions: number;
  bytesWritten: number;
}

/** Change ≈5% of the dataset in place, deterministically. */
export function mutate(dir: string, seed: string | number): MutationStats {
  const { plan, marker } = planFor(dir);
  if (marker.state !== 'pristine') throw new Error(`${dir}: dataset is ${marker.state}, not pristine`);
  const m = mutationPlan(plan, String(seed));
  writeMarker(dir, { ...marker, state: 'mutating', mutationSeed: m.seed });
  let bytes = 0;
  const mseed = `${plan.seed}/mut/${m.seed}`;
  m.edits.forEach((e, k) => {
    const f = plan.small[e.file]!;
    const p = join(dir, f.path);
    const fd = openSync(p, 'r+');
    writeAll(fd, textBytes(plan.seed, `${mseed}/e${k}`, e.length), e.offset);
    closeSync(fd);
    bytes += e.length;
  });
  m.appends.forEach((a, k) => {
    const f = plan.small[a.file]!;
    const fd = openSync(join(dir, f.path), 'a');
    writeSync(fd, textBytes(plan.seed, `${mseed}/p${k}`, a.length));
    closeSync(fd);
    bytes += a.length;
  });
  for (const i of m.deletes) unlinkSync(join(dir, plan.small[i]!.path));
  for (const d of m.newDirs) mkdirSync(join(dir, d), { recursive: true });
  for (const f of m.adds) {
    writeFileSync(join(dir, f.path), smallContent(plan, f));
    bytes += f.size;
  }
  m.regions.forEach((r, k) => {
    const f = plan.big[r.file]!;
    const fd = openSync(join(dir, f.path), 'r+');
    const data = r.kind === 'random' ? randomBytesAt(`${mseed}/r${k}`, 0, r.length) : textBytes(plan.seed, `${mseed}/r${k}`, r.length);
    writeAll(fd, data, r.offset);
    closeSync(fd);
    bytes += r.length;
  });
  m.bigAppends.forEach((a, k) => {
    const f = plan.big[a.file]!;
    const fd = openSync(join(dir, f.path), 'a');
    writeSync(fd, textBytes(plan.seed, `${mseed}/g${k}`, a.length));
    closeSync(fd);
    bytes += a.length;
  });
  writeMarker(dir, { ...marker, state: 'mutated', mutationSeed: m.seed });
  return { edited: m.edits.length, appended: m.appends.length, deleted: m.deletes.length, added: m.adds.length, bigRegions: m.regions.length + m.bigAppends.length, bytesWritten: bytes };
}

/** Undo `mutate` exactly (idempotent: safe after a mutation that died half way). */
export function revert(dir: string): void {
  const { plan, marker } = planFor(dir);
  if (marker.state === 'pristine') return;
  if (!marker.mutationSeed) throw new Error(`${dir}: state ${marker.state} without a mutation seed`);
  writeMarker(dir, { ...marker, state: 'reverting' });
  const m = mutationPlan(plan, marker.mutationSeed);
  for (const i of [...m.edits.map((e) => e.file), ...m.appends.map((a) => a.file), ...m.deletes]) {
    const f = plan.small[i]!;
    writeFileSync(join(dir, f.path), smallContent(plan, f));
  }
  for (const f of m.adds) rmSync(join(dir, f.path), { force: true });
  for (const d of [...m.newDirs].reverse()) rmSync(join(dir, d), { recursive: true, force: true });
  for (const r of m.regions) {
    const f = plan.big[r.file]!;
    const fd = openSync(join(dir, f.path), 'r+');
    writeBlocks(plan, f, fd, Math.floor(r.offset / BLOCK), Math.floor((r.offset + r.length - 1) / BLOCK));
    closeSync(fd);
  }
  for (const a of m.bigAppends) {
    const f = plan.big[a.file]!;
    const fd = openSync(join(dir, f.path), 'r+');
    ftruncateSync(fd, f.size);
    closeSync(fd);
  }
  const { mutationSeed: _drop, ...rest } = marker;
  writeMarker(dir, { ...rest, state: 'pristine' });
}

// ---------------------------------------------------------------- cache

export interface EnsureResult {
  dir: string;
  plan: Plan;
  action: 'reused' | 'generated' | 'reverted';
  seconds: number;
}

/** The pristine dataset for (seed, scale) in `dir`: reused, repaired, or generated. */
export function ensureDataset(dir: string, seed: string, scale: Scale, log: (s: string) => void = () => {}): EnsureResult {
  const t0 = performance.now();
  const m = readMarker(dir);
  const matches = m && m.version === DATASET_VERSION && m.seed === seed && m.scale === scale && existsSync(dir);
  const spot = () => {
    // Cheap sanity check that the tree is still what the marker says.
    const plan = makePlan(seed, scale);
    for (const f of [plan.small[0]!, plan.small[plan.small.length - 1]!, ...plan.big]) {
      const st = statSync(join(dir, f.path), { throwIfNoEntry: false });
      if (!st || st.size !== f.size) return undefined;
    }
    return plan;
  };
  if (matches && m.state === 'pristine') {
    const plan = spot();
    if (plan) return { dir, plan, action: 'reused', seconds: (performance.now() - t0) / 1000 };
    log(`dataset ${dir} does not match its marker: regenerating`);
  } else if (matches && m.state !== 'generating') {
    log(`dataset ${dir} was left ${m.state} by an earlier run: reverting the mutation`);
    try {
      revert(dir);
      const plan = spot();
      if (plan) return { dir, plan, action: 'reverted', seconds: (performance.now() - t0) / 1000 };
    } catch (err) {
      log(`revert failed (${(err as Error).message}): regenerating`);
    }
  } else if (m) {
    log(`dataset ${dir} is stale (${m.state}, v${m.version}, seed ${m.seed}, ${m.scale}): regenerating`);
  } else {
    log(`generating the ${scale} dataset in ${dir}`);
  }
  const plan = generate(dir, seed, scale, log);
  return { dir, plan, action: 'generated', seconds: (performance.now() - t0) / 1000 };
}

// ---------------------------------------------------------------- CLI

const isMain = process.argv[1] !== undefined && import.meta.url === pathToFileURL(resolve(process.argv[1])).href;
if (isMain) {
  const args = process.argv.slice(2);
  const opt = (name: string) => {
    const i = args.indexOf(name);
    return i >= 0 ? args.splice(i, 2)[1] : undefined;
  };
  const quick = args.includes('--quick') ? (args.splice(args.indexOf('--quick'), 1), true) : false;
  const scale: Scale = quick ? 'quick' : 'full';
  const seed = opt('--seed') ?? DEFAULT_SEED;
  const work = process.env.PERMAFROST_BENCH_DIR ?? '/var/tmp/permafrost-bench';
  const dir = opt('--dir') ?? join(work, `data-${scale}`);
  const cmd = args[0] ?? 'info';
  const log = (s: string) => process.stderr.write(s + '\n');
  if (cmd === 'generate') ensureDataset(dir, seed, scale, log);
  else if (cmd === 'mutate') console.log(JSON.stringify(mutate(dir, opt('--mutation-seed') ?? args[1] ?? 'm1')));
  else if (cmd === 'revert') revert(dir);
  else {
    const p = makePlan(seed, scale);
    console.log(JSON.stringify({ dir, marker: readMarker(dir) ?? null, files: p.files, dirs: p.dirs.length, apparentBytes: p.apparentBytes, dataBytes: p.dataBytes }, null, 2));
  }
}
