/**
 * Restore verification: walk the source tree and a restored tree and compare
 * every entry — type, size, content (byte for byte, or a sample of each large
 * file), and as warnings mode, owner and file mtime. A restore with any
 * missing, extra, wrongly typed, wrongly sized or wrong-content entry is wrong.
 */
import { closeSync, lstatSync, openSync, readdirSync, readlinkSync, readSync, type BigIntStats } from 'node:fs';
import { join } from 'node:path';
import { Rng } from './prng.js';

export type VerifyMode = 'full' | 'sample' | 'none';

export interface VerifyResult {
  ok: boolean;
  mode: VerifyMode;
  entries: number;
  files: number;
  bytesCompared: number;
  missing: number;
  extra: number;
  typeMismatch: number;
  sizeMismatch: number;
  contentMismatch: number;
  /** Warnings: metadata that differs. */
  modeMismatch: number;
  ownerMismatch: number;
  mtimeMismatch: number;
  /** Largest |mtime difference| among files, in nanoseconds (e.g. 999 = truncated to µs). */
  mtimeMaxDeltaNs: number;
  /** Files larger than 64 MiB restored with fewer allocated bytes than their size (holes kept). */
  sparseKept: number;
  sparseCandidates: number;
  examples: string[];
  seconds: number;
}

interface Entry {
  st: BigIntStats;
}

function walk(root: string): Map<string, Entry> {
  const out = new Map<string, Entry>();
  const stack = [''];
  while (stack.length) {
    const rel = stack.pop()!;
    const abs = rel ? join(root, rel) : root;
    for (const name of readdirSync(abs)) {
      const r = rel ? `${rel}/${name}` : name;
      const st = lstatSync(join(root, r), { bigint: true });
      out.set(r, { st });
      if (st.isDirectory()) stack.push(r);
    }
  }
  return out;
}

const typeOf = (st: BigIntStats) =>
  st.isFile() ? 'file' : st.isDirectory() ? 'dir' : st.isSymbolicLink() ? 'symlink' : st.isFIFO() ? 'fifo' : st.isSocket() ? 'socket' : st.isBlockDevice() ? 'blockdev' : 'chardev';

const CHUNK = 4 << 20;
const bufA = Buffer.allocUnsafe(CHUNK);
const bufB = Buffer.allocUnsafe(CHUNK);

function readFull(fd: number, buf: Buffer, len: number, pos: number): number {
  let got = 0;
  while (got < len) {
    const n = readSync(fd, buf, got, len - got, pos + got);
    if (n === 0) break;
    got += n;
  }
  return got;
}

/** Compare [pos, pos+len) of two open files; false on the first difference. */
function sameRange(fa: number, fb: number, pos: number, len: number): boolean {
  let off = 0;
  while (off < len) {
    const n = Math.min(CHUNK, len - off);
    const a = readFull(fa, bufA, n, pos + off);
    const b = readFull(fb, bufB, n, pos + off);
    if (a !== n || b !== n || bufA.compare(bufB, 0, n, 0, n) !== 0) return false;
    off += n;
  }
  return true;
}

/**
 * Compare two regular files of equal size. `sample`: files ≤ 1 MiB fully; larger
 * ones at the first and last MiB and 16 seeded 1 MiB windows.
 */
function sameContent(a: string, b: string, size: number, mode: VerifyMode, rel: string): { same: boolean; bytes: number } {
  const fa = openSync(a, 'r');
  const fb = openSync(b, 'r');
  try {
    if (mode === 'full' || size <= 1 << 20) return { same: sameRange(fa, fb, 0, size), bytes: size };
    const W = 1 << 20;
    const rng = new Rng(`verify/${rel}`);
    const starts = [0, size - W];
    for (let i = 0; i < 16; i++) starts.push(rng.int(0, size - W));
    for (const s of starts) if (!sameRange(fa, fb, s, W)) return { same: false, bytes: 0 };
    return { same: true, bytes: starts.length * W };
  } finally {
    closeSync(fa);
    closeSync(fb);
  }
}

export function verifyTree(source: string, restored: string, mode: VerifyMode): VerifyResult {
  const t0 = performance.now();
  const r: VerifyResult = {
    ok: true, mode, entries: 0, files: 0, bytesCompared: 0, missing: 0, extra: 0, typeMismatch: 0, sizeMismatch: 0, contentMismatch: 0,
    modeMismatch: 0, ownerMismatch: 0, mtimeMismatch: 0, mtimeMaxDeltaNs: 0, sparseKept: 0, sparseCandidates: 0, examples: [], seconds: 0,
  };
  if (mode === 'none') return r;
  const ex = (s: string) => {
    if (r.examples.length < 12) r.examples.push(s);
  };
  const src = walk(source);
  const dst = walk(restored);
  r.entries = src.size;
  for (const [rel, { st }] of src) {
    const d = dst.get(rel);
    if (!d) {
      r.missing++;
      ex(`missing: ${rel}`);
      continue;
    }
    const t = typeOf(st);
    if (t !== typeOf(d.st)) {
      r.typeMismatch++;
      ex(`type: ${rel} ${t} → ${typeOf(d.st)}`);
      continue;
    }
    if ((st.mode & 0o7777n) !== (d.st.mode & 0o7777n)) {
      r.modeMismatch++;
      ex(`mode: ${rel} ${(st.mode & 0o7777n).toString(8)} → ${(d.st.mode & 0o7777n).toString(8)}`);
    }
    if (st.uid !== d.st.uid || st.gid !== d.st.gid) r.ownerMismatch++;
    if (t === 'symlink') {
      if (readlinkSync(join(source, rel)) !== readlinkSync(join(restored, rel))) {
        r.contentMismatch++;
        ex(`symlink target: ${rel}`);
      }
      continue;
    }
    if (t !== 'file') continue;
    r.files++;
    if (st.mtimeNs !== d.st.mtimeNs) {
      r.mtimeMismatch++;
      const delta = Number(st.mtimeNs > d.st.mtimeNs ? st.mtimeNs - d.st.mtimeNs : d.st.mtimeNs - st.mtimeNs);
      r.mtimeMaxDeltaNs = Math.max(r.mtimeMaxDeltaNs, delta);
      if (r.mtimeMismatch <= 3) ex(`mtime (warning): ${rel} ${st.mtimeNs} → ${d.st.mtimeNs}`);
    }
    if (st.size !== d.st.size) {
      r.sizeMismatch++;
      ex(`size: ${rel} ${st.size} → ${d.st.size}`);
      continue;
    }
    const size = Number(st.size);
    if (size >= 64 << 20 && Number(st.blocks) * 512 < size / 2) {
      r.sparseCandidates++;
      if (Number(d.st.blocks) * 512 < size / 2) r.sparseKept++;
    }
    const c = sameContent(join(source, rel), join(restored, rel), size, mode, rel);
    r.bytesCompared += c.bytes;
    if (!c.same) {
      r.contentMismatch++;
      ex(`content: ${rel}`);
    }
  }
  for (const rel of dst.keys()) {
    if (!src.has(rel)) {
      r.extra++;
      ex(`extra: ${rel}`);
    }
  }
  r.ok = r.missing + r.extra + r.typeMismatch + r.sizeMismatch + r.contentMismatch === 0;
  r.seconds = Math.round((performance.now() - t0) / 100) / 10;
  return r;
}
