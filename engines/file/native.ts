/**
 * The file engine's native addon (native/scan.c, built by `npm ci` through
 * node-gyp; see scripts/build-native.mjs): directory scans for the backup walk
 * and exact (nanosecond) file times for restores. Undefined when it was not
 * built or PERMAFROST_NO_NATIVE=1; callers then use node:fs.
 */
import { createRequire } from 'node:module';

export interface Addon {
  scan(path: string): Promise<{ errno: number; names: Buffer; stats: Float64Array }>;
  FIELDS: number;
  /** futimens (fd) or utimensat (path; AT_SYMLINK_NOFOLLOW when nofollow): 0 or an errno. */
  setTimes(target: number | string, aSec: number, aNsec: number, mSec: number, mNsec: number, nofollow: boolean): number;
}

function load(): { addon: Addon; path: string } | undefined {
  if (process.env.PERMAFROST_NO_NATIVE === '1') return undefined;
  const require = createRequire(import.meta.url);
  // engines/file/native.ts in a checkout, dist/engines/file/native.js when built.
  for (const rel of ['./native/build/Release/pfscan.node', '../../../engines/file/native/build/Release/pfscan.node']) {
    try {
      const path = require.resolve(rel);
      const m = require(path) as Addon;
      if (typeof m.scan === 'function' && typeof m.setTimes === 'function') return { addon: m, path };
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
