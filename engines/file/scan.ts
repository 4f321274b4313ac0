/**
 * Directory listings for the backup walk: every entry of a directory with its
 * lstat metadata, sorted by name.
 *
 * Two sources with the same results:
 * - the native scanner (native/scan.c, built by `npm ci` through node-gyp):
 *   one call per directory, readdir and fstatat run on the libuv thread pool,
 *   so the main thread makes no metadata syscalls and several directories can
 *   be listed at once (a cold device answers several requests in flight much
 *   faster than one at a time);
 * - node:fs (readdirSync plus lstatSync per entry) when the addon is not
 *   built or PERMAFROST_NO_NATIVE=1.
 */
import { constants as osConstants } from 'node:os';
import * as fs from 'node:fs';
import type { BigIntStats } from 'node:fs';
import { compareNames } from './tree.js';
import { addon, type Addon } from '../../src/util/native.js';

/** What the walk keeps of an entry's lstat. Times in nanoseconds and the inode as exact decimal strings. */
export interface EntryStat {
  mode: number;
  uid: number;
  gid: number;
  size: number;
  blocks: number;
  nlink: number;
  ino: string;
  dev: number;
  rdev: number;
  atimeNs: string;
  mtimeNs: string;
  ctimeNs: string;
}

/** One directory entry: its metadata, or the error code of its lstat (e.g. ENOENT when it vanished). */
export interface DirEntry {
  name: string;
  st: EntryStat | undefined;
  code: string | undefined;
}

// Field order of native/scan.c.
const F_ERRNO = 0, F_MODE = 1, F_UID = 2, F_GID = 3, F_SIZE = 4, F_BLOCKS = 5, F_NLINK = 6, F_INO_HI = 7, F_INO_LO = 8;
const F_DEV = 9, F_RDEV = 10, F_ATIME_S = 11, F_ATIME_NS = 12, F_MTIME_S = 13, F_MTIME_NS = 14, F_CTIME_S = 15, F_CTIME_NS = 16;
const FIELDS = 17;

const native = addon !== undefined && addon.FIELDS === FIELDS ? addon : undefined;

/** True when listings come from the native scanner. */
export const nativeScanner = native !== undefined;

/** errno number → name (ENOENT, …). */
export const errnoNames = new Map<number, string>(Object.entries(osConstants.errno).map(([k, v]) => [v, k]));

export function errnoError(errno: number, syscall: string, path: string): NodeJS.ErrnoException {
  const code = errnoNames.get(errno) ?? `E${errno}`;
  const err = new Error(`${code}: ${syscall} '${path}'`) as NodeJS.ErrnoException;
  err.errno = -errno;
  err.code = code;
  err.syscall = syscall;
  err.path = path;
  return err;
}

const NINES = '000000000';

/** sec·10⁹ + nsec as a decimal string, exactly as BigIntStats' *Ns fields print. */
export function nsString(sec: number, nsec: number): string {
  if (sec > 0) {
    const t = String(nsec);
    return String(sec) + NINES.slice(t.length) + t;
  }
  if (sec === 0) return String(nsec);
  return (BigInt(sec) * 1_000_000_000n + BigInt(nsec)).toString();
}

function inoString(hi: number, lo: number): string {
  return hi < 0x200000 ? String(hi * 0x100000000 + lo) : ((BigInt(hi) << 32n) | BigInt(lo)).toString();
}

/** The walk's view of a node:fs BigIntStats. */
export function entryStat(st: BigIntStats): EntryStat {
  return {
    mode: Number(st.mode),
    uid: Number(st.uid),
    gid: Number(st.gid),
    size: Number(st.size),
    blocks: Number(st.blocks),
    nlink: Number(st.nlink),
    ino: st.ino.toString(),
    dev: Number(st.dev),
    rdev: Number(st.rdev),
    atimeNs: st.atimeNs.toString(),
    mtimeNs: st.mtimeNs.toString(),
    ctimeNs: st.ctimeNs.toString(),
  };
}

function byName(a: DirEntry, b: DirEntry): number {
  return compareNames(a.name, b.name);
}

/** List a directory through node:fs. Throws the readdir error. */
export function listDirSync(abs: string): DirEntry[] {
  const names = fs.readdirSync(abs);
  const prefix = abs.endsWith('/') ? abs : abs + '/';
  const out: DirEntry[] = new Array(names.length);
  for (let i = 0; i < names.length; i++) {
    const name = names[i]!;
    let st: EntryStat | undefined;
    let code: string | undefined;
    try {
      const s = fs.lstatSync(prefix + name, { bigint: true, throwIfNoEntry: false });
      if (s === undefined) code = 'ENOENT';
      else st = entryStat(s);
    } catch (err) {
      code = (err as NodeJS.ErrnoException).code ?? 'EIO';
    }
    out[i] = { name, st, code };
  }
  return out.sort(byName);
}

/** The native scanner's output for one directory: entries in directory order. */
export interface RawListing {
  /** The names in directory order (decoded on first use). */
  readonly names: string[];
  /** How many entries. */
  readonly count: number;
  /** The names as the scanner returned them (NUL-terminated, directory order). */
  nameBytes: Buffer;
  /** RAW_FIELDS numbers per entry (see RAW_*). */
  stats: Float64Array;
}

/** Layout of RawListing.stats (native/scan.c): fields per entry and the offsets the walk reads directly. */
export const RAW_FIELDS = FIELDS;
export const RAW_ERRNO = F_ERRNO;
export const RAW_MODE = F_MODE;
export const RAW_SIZE = F_SIZE;
export const RAW_DEV = F_DEV;

/** A listing: its entries sorted by name (built on first use), and the native scanner's output when it made it. */
export interface Listing {
  readonly entries: DirEntry[];
  readonly raw?: RawListing;
}

const S_IFMT = 0o170000;
const S_IFDIR = 0o040000;
const S_IFLNK = 0o120000;

/**
 * A keyed hash of a native listing: every entry's name and lstat fields in
 * directory order, with what a tree does not record or what changes by itself
 * left out (the device when it is the backup root's, which changes with every
 * attachment of a volume; the access time of directories and symlinks, which
 * the walk itself moves). Equal fingerprints: equal entries, as far as a tree
 * records them (see dircache.ts).
 */
export function listingFingerprint(hasher: { reset(): unknown; update(b: Buffer): unknown; digest(f: string): string }, raw: RawListing, rootDev: number): string {
  const f = raw.stats.slice();
  for (let o = 0; o < f.length; o += FIELDS) {
    if (f[o + F_DEV] === rootDev) f[o + F_DEV] = 0;
    const t = f[o + F_MODE]! & S_IFMT;
    if (t === S_IFDIR || t === S_IFLNK) f[o + F_ATIME_S] = f[o + F_ATIME_NS] = 0;
  }
  hasher.reset();
  hasher.update(raw.nameBytes);
  hasher.update(Buffer.from(f.buffer, f.byteOffset, f.byteLength));
  return hasher.digest('hex');
}

function nativeEntry(raw: RawListing, i: number): DirEntry {
  const f = raw.stats;
  const o = i * FIELDS;
  const name = raw.names[i]!;
  const errno = f[o + F_ERRNO]!;
  if (errno !== 0) return { name, st: undefined, code: errnoNames.get(errno) ?? `E${errno}` };
  return {
    name,
    code: undefined,
    st: {
      mode: f[o + F_MODE]!,
      uid: f[o + F_UID]!,
      gid: f[o + F_GID]!,
      size: f[o + F_SIZE]!,
      blocks: f[o + F_BLOCKS]!,
      nlink: f[o + F_NLINK]!,
      ino: inoString(f[o + F_INO_HI]!, f[o + F_INO_LO]!),
      dev: f[o + F_DEV]!,
      rdev: f[o + F_RDEV]!,
      atimeNs: nsString(f[o + F_ATIME_S]!, f[o + F_ATIME_NS]!),
      mtimeNs: nsString(f[o + F_MTIME_S]!, f[o + F_MTIME_NS]!),
      ctimeNs: nsString(f[o + F_CTIME_S]!, f[o + F_CTIME_NS]!),
    },
  };
}

function nativeEntries(raw: RawListing): DirEntry[] {
  const out: DirEntry[] = new Array(raw.count);
  for (let i = 0; i < out.length; i++) out[i] = nativeEntry(raw, i);
  return out.sort(byName);
}

/** The entries at `indices` of a native listing, sorted by name. */
export function nativeEntriesOf(raw: RawListing, indices: readonly number[]): DirEntry[] {
  return indices.map((i) => nativeEntry(raw, i)).sort(byName);
}

class NativeRaw implements RawListing {
  #names?: string[];
  readonly count: number;
  constructor(
    readonly nameBytes: Buffer,
    readonly stats: Float64Array,
  ) {
    this.count = stats.length / FIELDS;
  }
  get names(): string[] {
    if (this.#names === undefined) {
      const names = this.nameBytes.toString('utf8').split('\0');
      names.pop(); // after the last NUL
      this.#names = names;
    }
    return this.#names;
  }
}

class NativeListing implements Listing {
  #entries?: DirEntry[];
  constructor(readonly raw: RawListing) {}
  get entries(): DirEntry[] {
    return (this.#entries ??= nativeEntries(this.raw));
  }
}

async function scanNative(n: Addon, abs: string): Promise<Listing> {
  const r = await n.scan(abs);
  if (r.errno !== 0) throw errnoError(r.errno, 'scandir', abs);
  return new NativeListing(new NativeRaw(r.names, r.stats));
}

/** A directory's listing (see listDir), with the native scanner's raw output when it made it. */
export function scanDir(abs: string): Promise<Listing> {
  if (native !== undefined) return scanNative(native, abs);
  try {
    return Promise.resolve({ entries: listDirSync(abs) });
  } catch (err) {
    return Promise.reject(err);
  }
}

/**
 * List a directory: its entries sorted by name, each with its lstat or the
 * error code of it. Rejects with the error of opening or reading the
 * directory (an Error with code, like node:fs's).
 */
export async function listDir(abs: string): Promise<DirEntry[]> {
  return (await scanDir(abs)).entries;
}
