/**
 * The directory cache of incrementals: a local file per backup name, in the
 * agent's state directory, that says for every directory of the last backup
 * the fingerprint of its listing (names and lstat fields of its entries, as
 * the native scanner returns them) and the tree blob it was stored as.
 *
 * A directory whose listing has the same fingerprint and whose
 * subdirectories all come out with the same trees again has, by
 * construction, the same tree: every field a tree node records comes from
 * that lstat (xattr changes move ctime, content changes move mtime and
 * ctime), so the walk takes the recorded tree without loading, decrypting
 * and comparing the parent's tree. Anything else (a changed entry, a
 * directory that had an unreadable entry or a hardlink, a tree no longer in
 * the repository) takes the ordinary path with the parent's tree.
 *
 * It also names the large files of the last backup with the lstat fields the
 * parent skip compares (`large`): the next backup starts reading those that
 * changed before its walk gets to them (see backup.ts, prereads).
 *
 * It is only a cache: used only when it was written by the backup that is
 * the parent of this one (same root tree) with the same options, ignored
 * when missing or damaged, and authenticated with the repository's hash key
 * (fingerprints are keyed hashes too), so it cannot be forged without the key.
 */
import { createHash } from 'node:crypto';
import { mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Blake3Hasher } from '../../src/util/blake3.js';
import type { BlobId } from '../../src/repository/types.js';

const VERSION = 1;
const MAC = 32;
const DOMAIN = Buffer.from('permafrost directory cache v1\0');

/** One directory of the last backup. */
export interface CachedDir {
  /** Keyed hash of the listing (scan.ts fingerprint). */
  fp: string;
  /** The tree it was stored as. */
  tree: BlobId;
  /** False when the tree cannot be taken on a fingerprint alone (an entry was left out, or hardlinks). */
  clean: boolean;
}

/** A large regular file of the last backup, as its node recorded it. */
export interface LargeFile {
  rel: string;
  size: number;
  mtimeNs: string;
  ctimeNs: string;
  ino: string;
}

/** What the cache holds. */
export interface DirCache {
  dirs: Map<string, CachedDir>;
  large: LargeFile[];
}

/** The cache file of a backup name of a repository, in a cache directory. */
export function dirCachePath(cacheDir: string, repoId: string, name: string): string {
  return join(cacheDir, `dirs-${repoId}-${createHash('sha256').update(name).digest('hex').slice(0, 32)}`);
}

/** The directory cache of a backup name when the repository has a cache directory. */
export function dirCacheOf(repo: { cacheDir?: string; config: { id: string } }, name: string): string | undefined {
  return repo.cacheDir === undefined ? undefined : dirCachePath(repo.cacheDir, repo.config.id, name);
}

function mac(hashKey: Buffer, body: Buffer): Buffer {
  return Blake3Hasher.newKeyed(hashKey).update(DOMAIN).update(body).digestBuffer();
}

/**
 * Load the cache when it is intact, was written with `options` and describes
 * the backup whose root tree is `root`. Otherwise undefined.
 */
export function loadDirCache(path: string, hashKey: Buffer, options: string, root: BlobId): DirCache | undefined {
  let buf: Buffer;
  try {
    buf = readFileSync(path);
  } catch {
    return undefined;
  }
  if (buf.length <= MAC) return undefined;
  const body = buf.subarray(0, buf.length - MAC);
  if (!mac(hashKey, body).equals(buf.subarray(buf.length - MAC))) return undefined;
  let doc: { version?: unknown; options?: unknown; root?: unknown; dirs?: unknown; large?: unknown };
  try {
    doc = JSON.parse(body.toString('utf8'));
  } catch {
    return undefined;
  }
  if (doc?.version !== VERSION || doc.options !== options || doc.root !== root || !Array.isArray(doc.dirs)) return undefined;
  const out = new Map<string, CachedDir>();
  for (const d of doc.dirs as unknown[]) {
    if (!Array.isArray(d) || typeof d[0] !== 'string' || typeof d[1] !== 'string' || typeof d[2] !== 'string') return undefined;
    out.set(d[0], { fp: d[1], tree: d[2], clean: d[3] === 1 });
  }
  const large: LargeFile[] = [];
  // Optional (caches of earlier versions have none); a malformed list is only ignored.
  if (Array.isArray(doc.large)) {
    for (const f of doc.large as unknown[]) {
      if (!Array.isArray(f) || f.length !== 5 || typeof f[0] !== 'string' || typeof f[1] !== 'number' || !f.slice(2).every((x) => typeof x === 'string')) {
        large.length = 0;
        break;
      }
      large.push({ rel: f[0], size: f[1], mtimeNs: f[2], ctimeNs: f[3], ino: f[4] });
    }
  }
  return { dirs: out, large };
}

/** Write the cache for the backup whose root tree is `root`. Atomic; errors propagate. */
export function saveDirCache(path: string, hashKey: Buffer, options: string, root: BlobId, dirs: Map<string, CachedDir>, large: readonly LargeFile[] = []): void {
  const list: [string, string, string, number][] = [];
  for (const [rel, d] of dirs) list.push([rel, d.fp, d.tree, d.clean ? 1 : 0]);
  const big = large.map((f) => [f.rel, f.size, f.mtimeNs, f.ctimeNs, f.ino]);
  const body = Buffer.from(JSON.stringify({ version: VERSION, options, root, dirs: list, large: big }));
  mkdirSync(join(path, '..'), { recursive: true, mode: 0o700 });
  const tmp = `${path}.${process.pid}.tmp`;
  try {
    writeFileSync(tmp, Buffer.concat([body, mac(hashKey, body)]), { mode: 0o600 });
    renameSync(tmp, path);
  } catch (err) {
    rmSync(tmp, { force: true });
    throw err;
  }
}
