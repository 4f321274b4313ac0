/** A small sample tree for `permafrost quickstart`, and a comparison of two trees. */
import { createHash } from 'node:crypto';
import { linkSync, lstatSync, mkdirSync, readdirSync, readFileSync, readlinkSync, symlinkSync, writeFileSync, appendFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';

/** Write a sample tree: text and binary files, nested dirs, a symlink, a hardlink, an empty dir. */
export function writeSample(dir: string): void {
  mkdirSync(dir, { recursive: true });
  let seed = 0x2545f491;
  const rnd = () => {
    // xorshift32: deterministic, and random enough that image.bin does not compress.
    seed ^= seed << 13;
    seed ^= seed >>> 17;
    seed ^= seed << 5;
    return (seed >>> 0) / 2 ** 32;
  };
  for (let d = 0; d < 20; d++) {
    const sub = join(dir, `dir${d}`, `sub${d % 3}`);
    mkdirSync(sub, { recursive: true });
    for (let f = 0; f < 25; f++) {
      const words = Array.from({ length: 20 + Math.floor(rnd() * 400) }, () => ['alpha', 'volume', 'snapshot', 'cinder', 'ceph', 'backup', 'restore'][Math.floor(rnd() * 7)]);
      writeFileSync(join(sub, `file${f}.txt`), words.join(' ') + '\n');
    }
  }
  const big = Buffer.alloc(8 << 20);
  for (let i = 0; i < big.length; i += 4) big.writeUInt32LE((rnd() * 2 ** 32) >>> 0, i);
  writeFileSync(join(dir, 'image.bin'), big);
  symlinkSync('dir0/sub0/file0.txt', join(dir, 'link-to-file0'));
  linkSync(join(dir, 'dir1/sub1/file1.txt'), join(dir, 'hardlink-to-file1'));
  mkdirSync(join(dir, 'empty'));
}

/** Change a few files: edit one, append to another, add and delete some. */
export function mutateSample(dir: string): void {
  writeFileSync(join(dir, 'dir0/sub0/file1.txt'), 'changed content\n');
  appendFileSync(join(dir, 'dir2/sub2/file3.txt'), 'appended line\n');
  writeFileSync(join(dir, 'new-file.txt'), 'a file added after the first backup\n');
  rmSync(join(dir, 'dir3/sub0/file4.txt'));
}

/** Path → digest of type, mode, size, content or target, for every entry under dir. */
export function treeDigest(dir: string): Map<string, string> {
  const out = new Map<string, string>();
  const walk = (rel: string) => {
    for (const name of readdirSync(join(dir, rel)).sort()) {
      const p = rel ? `${rel}/${name}` : name;
      const st = lstatSync(join(dir, p));
      if (st.isDirectory()) {
        out.set(p, `dir ${st.mode & 0o7777}`);
        walk(p);
      } else if (st.isSymbolicLink()) out.set(p, `symlink ${readlinkSync(join(dir, p))}`);
      else if (st.isFile()) out.set(p, `file ${st.mode & 0o7777} ${st.size} ${createHash('sha256').update(readFileSync(join(dir, p))).digest('hex')} ${Math.floor(st.mtimeMs)}`);
      else out.set(p, `other ${st.mode}`);
    }
  };
  walk('');
  return out;
}

/** Differences between two digests (empty when identical). */
export function diffDigests(a: Map<string, string>, b: Map<string, string>): string[] {
  const diffs: string[] = [];
  for (const [p, v] of a) if (b.get(p) !== v) diffs.push(`${p}: ${v} ≠ ${b.get(p) ?? 'missing'}`);
  for (const p of b.keys()) if (!a.has(p)) diffs.push(`${p}: unexpected`);
  return diffs;
}
