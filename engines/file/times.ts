/**
 * File times at nanosecond precision for restores. Node's utimes family takes
 * seconds as a double, which at today's dates rounds away up to about a
 * microsecond; the native addon's setTimes (futimens/utimensat) is exact.
 * Without the addon, node:fs is used (times then exact to about a microsecond).
 */
import * as fs from 'node:fs';
import { addon } from '../../src/util/native.js';
import { errnoError } from './scan.js';

/** [seconds, nanoseconds in 0..999999999] of a decimal nanosecond count (negative before 1970). */
export function splitNs(ns: string): [number, number] {
  const v = BigInt(ns);
  let s = v / 1_000_000_000n;
  let r = v - s * 1_000_000_000n;
  if (r < 0n) {
    s -= 1n;
    r += 1_000_000_000n;
  }
  return [Number(s), Number(r)];
}

/**
 * Set access and modification times of an open file (fd), or of a path
 * (`nofollow`: a symlink's own times). Throws like node:fs (err.code).
 */
export function setTimes(target: number | string, atimeNs: string, mtimeNs: string, nofollow = false): void {
  const [as, an] = splitNs(atimeNs);
  const [ms, mn] = splitNs(mtimeNs);
  if (addon !== undefined) {
    const rc = addon.setTimes(target, as, an, ms, mn, nofollow);
    if (rc !== 0) throw errnoError(rc, typeof target === 'number' ? 'futimens' : 'utimensat', typeof target === 'number' ? `fd ${target}` : target);
    return;
  }
  const a = as + an / 1e9;
  const m = ms + mn / 1e9;
  if (typeof target === 'number') fs.futimesSync(target, a, m);
  else if (nofollow) fs.lutimesSync(target, a, m);
  else fs.utimesSync(target, a, m);
}
