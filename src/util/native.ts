/**
 * Permafrost's native addon (engines/file/native/scan.c, built by `npm ci`
 * through node-gyp; see scripts/build-native.mjs): directory scans for the
 * backup walk, xattrs of changed entries, exact (nanosecond) file times for restores, the holes of sparse
 * files (SEEK_DATA) so that backups do not read them, and plain memcpy/memset
 * for shared buffers (V8 copies into SharedArrayBuffers byte-safe and slowly).
 * Undefined when it was not built or PERMAFROST_NO_NATIVE=1; callers then use
 * node:fs and typed-array copies.
 */
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

export interface Addon {
  scan(path: string): Promise<{ errno: number; names: Buffer; stats: Float64Array }>;
  /**
   * The xattrs of NUL-terminated paths (a symlink's own): per path the number of attributes or
   * -errno; `data` holds them in order as u32 name length, name, u32 value length, value
   * (host byte order). Absent in addons built before it.
   */
  xattrs?(paths: Uint8Array): Promise<{ counts: Int32Array; data: Buffer }>;
  FIELDS: number;
  /** futimens (fd) or utimensat (path; AT_SYMLINK_NOFOLLOW when nofollow): 0 or an errno. */
  setTimes(target: number | string, aSec: number, aNsec: number, mSec: number, mNsec: number, nofollow: boolean): number;
  /** lseek SEEK_DATA: the first data at or after offset; -1 none (a hole to the end), -2 not known. */
  seekData(fd: number, offset: number): number;
  /** memcpy of all of `src` into `dst` at `at` (RangeError when it does not fit). */
  copy(dst: Uint8Array, at: number, src: Uint8Array): void;
  /** memset(0) of `dst`. */
  zero(dst: Uint8Array): void;
}

const ADDON = 'engines/file/native/build/Release/pfscan.node';

/**
 * Where the addon may be: in the package's engines/file/native/build, found by
 * walking up from this module (src/util/ in a checkout, dist/src/util/ when
 * built, scripts/bench/.build/<pid>/src/util/ in the bench's build).
 */
function candidates(): string[] {
  const out: string[] = [];
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 8; i++) {
    const up = dirname(dir);
    if (up === dir) break;
    dir = up;
    out.push(join(dir, ADDON));
  }
  return out;
}

function load(): { addon: Addon; path: string } | undefined {
  if (process.env.PERMAFROST_NO_NATIVE === '1') return undefined;
  const require = createRequire(import.meta.url);
  for (const path of candidates()) {
    if (!existsSync(path)) continue;
    try {
      const m = require(path) as Addon;
      if (typeof m.scan === 'function' && typeof m.setTimes === 'function' && typeof m.seekData === 'function' && typeof m.copy === 'function' && typeof m.zero === 'function') return { addon: m, path };
    } catch {
      /* next */
    }
  }
  return undefined;
}

const loaded = load();

export const addon: Addon | undefined = loaded?.addon;
/** What worker threads require() for the same addon. */
export const addonPath: string | undefined = loaded?.path;

/** Copy all of `src` into `dst` at `at`: memcpy when the addon is there (fast into shared buffers too). */
export function copyInto(dst: Uint8Array, at: number, src: Uint8Array): void {
  if (addon !== undefined) addon.copy(dst, at, src);
  else dst.set(src, at);
}

/** Buffer.concat with memcpy (the parts may be views of shared buffers). */
export function concatBytes(parts: readonly Uint8Array[], total: number): Buffer {
  const out = Buffer.allocUnsafe(total);
  let at = 0;
  for (const p of parts) {
    copyInto(out, at, p);
    at += p.length;
  }
  return out;
}
