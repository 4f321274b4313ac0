/**
 * The file engine's native addon (native/scan.c, built by `npm ci` through
 * node-gyp; see scripts/build-native.mjs): directory scans for the backup walk,
 * exact (nanosecond) file times for restores, and the holes of sparse files
 * (SEEK_DATA) so that backups do not read them. Undefined when it was not
 * built or PERMAFROST_NO_NATIVE=1; callers then use node:fs.
 */
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

export interface Addon {
  scan(path: string): Promise<{ errno: number; names: Buffer; stats: Float64Array }>;
  FIELDS: number;
  /** futimens (fd) or utimensat (path; AT_SYMLINK_NOFOLLOW when nofollow): 0 or an errno. */
  setTimes(target: number | string, aSec: number, aNsec: number, mSec: number, mNsec: number, nofollow: boolean): number;
  /** lseek SEEK_DATA: the first data at or after offset; -1 none (a hole to the end), -2 not known. */
  seekData(fd: number, offset: number): number;
}

const ADDON = 'engines/file/native/build/Release/pfscan.node';

/**
 * Where the addon may be: beside this module in a checkout, else in the
 * package's engines/file/native/build, found by walking up from this module
 * (dist/engines/file/ when built, scripts/bench/.build/<pid>/engines/file/ in
 * the bench's build).
 */
function candidates(): string[] {
  const here = dirname(fileURLToPath(import.meta.url));
  const out = [join(here, 'native/build/Release/pfscan.node')];
  let dir = here;
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
      if (typeof m.scan === 'function' && typeof m.setTimes === 'function' && typeof m.seekData === 'function') return { addon: m, path };
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
