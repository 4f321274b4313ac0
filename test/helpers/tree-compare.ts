/**
 * Tree comparison for the file engine's tests: a snapshot of everything below a directory
 * (types, modes, owners, sizes, sha256 of contents, link targets, mtimes, hardlink groups)
 * and an assertion that two snapshots describe the same tree.
 */
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import { join } from 'node:path';
import { expect } from 'vitest';

export interface Entry {
  type: string;
  mode: number;
  uid: number;
  gid: number;
  size?: number;
  mtimeNs: bigint;
  sha?: string;
  target?: string;
  ino: bigint;
  nlink: number;
  rdev?: number;
}

/** Everything below `root`, keyed by relative path. */
export function snapshot(root: string): Map<string, Entry> {
  const out = new Map<string, Entry>();
  const walk = (abs: string, rel: string) => {
    for (const name of fs.readdirSync(abs).sort()) {
      const p = join(abs, name);
      const r = rel ? `${rel}/${name}` : name;
      const st = fs.lstatSync(p, { bigint: true });
      const e: Entry = { type: '', mode: Number(st.mode & 0o7777n), uid: Number(st.uid), gid: Number(st.gid), mtimeNs: st.mtimeNs, ino: st.ino, nlink: Number(st.nlink) };
      if (st.isFile()) {
        e.type = 'file';
        e.size = Number(st.size);
        e.sha = createHash('sha256').update(fs.readFileSync(p)).digest('hex');
      } else if (st.isDirectory()) e.type = 'dir';
      else if (st.isSymbolicLink()) {
        e.type = 'symlink';
        e.target = fs.readlinkSync(p);
      } else if (st.isFIFO()) e.type = 'fifo';
      else if (st.isCharacterDevice()) {
        e.type = 'chardev';
        e.rdev = Number(st.rdev);
      } else e.type = 'other';
      out.set(r, e);
      if (st.isDirectory()) walk(p, r);
    }
  };
  walk(root, '');
  return out;
}

/** Compare two snapshots: types, modes, sizes, contents, link targets, owners, mtimes (exact, or within `timeTolNs`), hardlink groups. */
export function expectSameTree(a: Map<string, Entry>, b: Map<string, Entry>, opts: { timeTolNs?: bigint; owners?: boolean; symlinkTimes?: boolean } = {}): void {
  expect([...b.keys()].sort()).toEqual([...a.keys()].sort());
  const tol = opts.timeTolNs ?? 0n;
  const groupsA = new Map<bigint, string[]>();
  const groupsB = new Map<bigint, string[]>();
  for (const [k, ea] of a) {
    const eb = b.get(k)!;
    expect({ k, type: eb.type }).toEqual({ k, type: ea.type });
    if (ea.type !== 'symlink') expect({ k, mode: eb.mode }).toEqual({ k, mode: ea.mode });
    expect({ k, size: eb.size, sha: eb.sha, target: eb.target, rdev: eb.rdev }).toEqual({ k, size: ea.size, sha: ea.sha, target: ea.target, rdev: ea.rdev });
    if (opts.owners) expect({ k, uid: eb.uid, gid: eb.gid }).toEqual({ k, uid: ea.uid, gid: ea.gid });
    if (ea.type !== 'symlink' || opts.symlinkTimes !== false) {
      const d = ea.mtimeNs - eb.mtimeNs;
      if (d > tol || d < -tol) expect({ k, mtimeNs: eb.mtimeNs }).toEqual({ k, mtimeNs: ea.mtimeNs });
    }
    if (ea.type === 'file' && ea.nlink > 1) {
      groupsA.set(ea.ino, [...(groupsA.get(ea.ino) ?? []), k]);
      groupsB.set(eb.ino, [...(groupsB.get(eb.ino) ?? []), k]);
    }
  }
  const norm = (g: Map<bigint, string[]>) => [...g.values()].map((v) => v.sort().join('|')).sort();
  expect(norm(groupsB)).toEqual(norm(groupsA));
}
