/**
 * Extended attributes. Node has no xattr API: whole trees go through the
 * `attr` package's tools (one process per file would cost milliseconds each),
 * the changed entries of an incremental through the native addon when it is
 * built. So:
 *
 * - backup: ONE `getfattr -R -d -h -m - -e base64` over the whole root, started
 *   before the walk, writing into an unlinked temporary file (so it never
 *   blocks on a pipe while the walk keeps the event loop busy). It runs on the
 *   other core in parallel with the walk; directory trees wait for it before
 *   they are encoded. `-m -` selects every namespace (user, trusted, security,
 *   system.posix_acl_*), `-h` reads a symlink's own attributes.
 * - incrementals: the entries whose ctime changed, in batches, through the
 *   addon's llistxattr/lgetxattr on the libuv pool (~2 µs an entry; a
 *   `getfattr` process per batch cost a fork of the whole agent and ~40 ms
 *   that the last directories waited for), else one `getfattr` per batch.
 * - restore: ONE `setfattr -h --restore=-` fed the same dump format.
 *
 * Without getfattr/setfattr (package `attr` not installed) xattrs are skipped
 * with one warning.
 */
import { spawn } from 'node:child_process';
import { accessSync, closeSync, constants, fstatSync, openSync, readSync, statSync, unlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import type { Logger } from '../../src/util/log.js';
import { addon } from '../../src/util/native.js';
import { errnoNames } from './scan.js';

/** name → base64 value. */
export type Xattrs = Record<string, string>;

const toolCache = new Map<string, boolean>();
/**
 * True when `tool` (getfattr, setfattr) is an executable on PATH, as spawn
 * would find it (a lookup, not a run: every backup asks).
 */
export function hasTool(tool: string): boolean {
  let ok = toolCache.get(tool);
  if (ok === undefined) {
    ok = (process.env.PATH ?? '').split(':').some((dir) => {
      try {
        const p = join(dir === '' ? '.' : dir, tool);
        accessSync(p, constants.X_OK);
        return statSync(p).isFile();
      } catch {
        return false;
      }
    });
    toolCache.set(tool, ok);
  }
  return ok;
}

/** Undo getfattr's quoting (\ooo octal escapes, including \134 for backslash) of a path or name. */
export function unquote(raw: Buffer): string {
  if (!raw.includes(0x5c)) return raw.toString('utf8');
  const out = Buffer.allocUnsafe(raw.length);
  let o = 0;
  for (let i = 0; i < raw.length; i++) {
    const c = raw[i]!;
    if (c === 0x5c && i + 3 < raw.length && isOct(raw[i + 1]) && isOct(raw[i + 2]) && isOct(raw[i + 3])) {
      out[o++] = ((raw[i + 1]! - 48) << 6) | ((raw[i + 2]! - 48) << 3) | (raw[i + 3]! - 48);
      i += 3;
    } else out[o++] = c;
  }
  return out.subarray(0, o).toString('utf8');
}

function isOct(c: number | undefined): boolean {
  return c !== undefined && c >= 48 && c <= 55;
}

/** Quote a path or name the way setfattr --restore reads it: backslash, control characters, '=' and DEL as \ooo. Returns bytes. */
export function quote(s: string): Buffer {
  const b = Buffer.from(s, 'utf8');
  let n = 0;
  for (const c of b) if (c < 0x20 || c === 0x5c || c === 0x3d || c === 0x7f) n++;
  if (n === 0) return b;
  const out = Buffer.allocUnsafe(b.length + 3 * n);
  let o = 0;
  for (const c of b) {
    if (c < 0x20 || c === 0x5c || c === 0x3d || c === 0x7f) {
      out[o++] = 0x5c;
      out[o++] = 48 + ((c >> 6) & 7);
      out[o++] = 48 + ((c >> 3) & 7);
      out[o++] = 48 + (c & 7);
    } else out[o++] = c;
  }
  return out;
}

/**
 * Parse a `getfattr -d -e base64` dump into relative path → xattrs. Paths are
 * relative to the directory getfattr ran in ("" for the root itself).
 */
export function parseDump(dump: Buffer): Map<string, Xattrs> {
  const map = new Map<string, Xattrs>();
  let cur: Xattrs | undefined;
  let pos = 0;
  const FILE = Buffer.from('# file: ');
  while (pos < dump.length) {
    let nl = dump.indexOf(0x0a, pos);
    if (nl < 0) nl = dump.length;
    const line = dump.subarray(pos, nl);
    pos = nl + 1;
    if (line.length === 0) {
      cur = undefined;
      continue;
    }
    if (line.subarray(0, FILE.length).equals(FILE)) {
      let p = unquote(line.subarray(FILE.length));
      if (p === '.') p = '';
      else if (p.startsWith('./')) p = p.slice(2);
      cur = {};
      map.set(p, cur);
      continue;
    }
    if (!cur || line[0] === 0x23) continue;
    const eq = line.indexOf(0x3d);
    const name = unquote(eq < 0 ? line : line.subarray(0, eq));
    let value = eq < 0 ? '' : line.subarray(eq + 1).toString('latin1');
    if (value.startsWith('0s')) value = value.slice(2);
    else if (value.startsWith('"') && value.endsWith('"')) value = Buffer.from(value.slice(1, -1), 'latin1').toString('base64');
    else if (value.startsWith('0x')) value = Buffer.from(value.slice(2), 'hex').toString('base64');
    cur[name] = value;
  }
  for (const [k, v] of map) if (Object.keys(v).length === 0) map.delete(k);
  return map;
}

/** A running xattr scan of a tree. */
export interface XattrScan {
  /** Resolves with relative path → xattrs once getfattr finished (empty map when unavailable). */
  result: Promise<Map<string, Xattrs>>;
  /** True once `result` has settled. */
  readonly done: boolean;
  /** Stop the scan (on abort). */
  kill(): void;
}

/**
 * Start one `getfattr` over `root` in the background. It writes into an
 * unlinked temporary file; the dump is parsed when the process exits.
 */
export function startXattrScan(root: string, log: Logger): XattrScan {
  if (!hasTool('getfattr')) {
    log.warn('getfattr not found (install the "attr" package): extended attributes and ACLs are not backed up');
    return { result: Promise.resolve(new Map()), done: true, kill() {} };
  }
  const tmp = join(tmpdir(), `permafrost-xattr-${process.pid}-${randomBytes(6).toString('hex')}`);
  const fd = openSync(tmp, 'w+', 0o600);
  unlinkSync(tmp);
  let done = false;
  const child = spawn('getfattr', ['-R', '-d', '-h', '-m', '-', '-e', 'base64', '.'], {
    cwd: root,
    stdio: ['ignore', fd, 'pipe'],
    env: { ...process.env, LC_ALL: 'C' },
  });
  let stderr = '';
  child.stderr!.setEncoding('utf8');
  child.stderr!.on('data', (s: string) => {
    if (stderr.length < 4096) stderr += s;
  });
  const result = new Promise<Map<string, Xattrs>>((resolve) => {
    const finish = (code: number | null, err?: Error) => {
      let map = new Map<string, Xattrs>();
      try {
        if (err) log.warn(`getfattr failed: ${err.message}; extended attributes are not backed up`);
        else {
          if (code !== 0 && stderr) log.debug(`getfattr: ${stderr.trim().split('\n').slice(0, 5).join('; ')}`);
          const size = fstatSync(fd).size;
          const buf = Buffer.allocUnsafe(size);
          let off = 0;
          while (off < size) {
            const n = readSync(fd, buf, off, size - off, off);
            if (n === 0) break;
            off += n;
          }
          map = parseDump(buf.subarray(0, off));
        }
      } catch (e) {
        log.warn(`cannot read the xattr dump: ${(e as Error).message}`);
      } finally {
        try {
          closeSync(fd);
        } catch {
          /* already closed */
        }
        done = true;
        resolve(map);
      }
    };
    child.once('error', (e) => finish(null, e));
    child.once('close', (code) => finish(code));
  });
  return {
    result,
    get done() {
      return done;
    },
    kill() {
      if (!done) child.kill('SIGKILL');
    },
  };
}

/** One entry to restore: a path relative to the restore target and its xattrs. */
export interface XattrEntry {
  path: string;
  xattrs: Xattrs;
}

/**
 * Set xattrs on already restored paths (relative to `cwd`) with one
 * `setfattr -h --restore=-`. Returns the number of entries that failed (from
 * setfattr's messages; a failure of the tool itself counts all entries).
 */
export async function restoreXattrs(cwd: string, entries: XattrEntry[], log: Logger): Promise<number> {
  if (entries.length === 0) return 0;
  if (!hasTool('setfattr')) {
    log.warn(`setfattr not found (install the "attr" package): extended attributes of ${entries.length} entries not restored`);
    return entries.length;
  }
  const parts: Buffer[] = [];
  const FILE = Buffer.from('# file: ');
  const NL = Buffer.from('\n');
  for (const e of entries) {
    parts.push(FILE, quote(e.path), NL);
    for (const [k, v] of Object.entries(e.xattrs)) parts.push(quote(k), Buffer.from(`=0s${v}\n`));
    parts.push(NL);
  }
  return new Promise<number>((resolve) => {
    const child = spawn('setfattr', ['-h', '--restore=-'], { cwd, stdio: ['pipe', 'ignore', 'pipe'], env: { ...process.env, LC_ALL: 'C' } });
    let stderr = '';
    child.stderr!.setEncoding('utf8');
    child.stderr!.on('data', (s: string) => {
      if (stderr.length < 1 << 16) stderr += s;
    });
    child.once('error', (err) => {
      log.warn(`setfattr failed: ${err.message}`);
      resolve(entries.length);
    });
    child.once('close', (code) => {
      if (code === 0) return resolve(0);
      const lines = stderr.trim().split('\n').filter(Boolean);
      for (const l of lines.slice(0, 10)) log.warn(`setfattr: ${l}`);
      if (lines.length > 10) log.warn(`setfattr: ... ${lines.length - 10} more`);
      resolve(Math.max(1, lines.length));
    });
    child.stdin!.on('error', () => {
      /* reported through close */
    });
    child.stdin!.end(Buffer.concat(parts));
  });
}

/**
 * Read the xattrs of some paths (relative to `cwd`, not recursive): through
 * the native addon when it has xattrs(), else with one `getfattr` per call.
 * Used by incremental backups for the entries whose ctime changed: an xattr
 * change always updates ctime, so unchanged entries keep their parent's
 * xattrs without a scan. Resolves with relative path → xattrs (entries
 * without any are absent). Entries that vanished meanwhile have none; other
 * failures are logged at debug level, as getfattr's are.
 */
export function readXattrs(cwd: string, paths: string[], log: Logger): Promise<Map<string, Xattrs>> {
  if (paths.length === 0 || !hasTool('getfattr')) return Promise.resolve(new Map());
  return addon?.xattrs !== undefined ? readXattrsNative(cwd, paths, log) : readXattrsGetfattr(cwd, paths, log);
}

/** readXattrs through the addon (which must have xattrs()). */
export async function readXattrsNative(cwd: string, paths: string[], log: Logger): Promise<Map<string, Xattrs>> {
  const read = addon?.xattrs;
  if (read === undefined) throw new Error('the native addon cannot read xattrs');
  const root = cwd.endsWith('/') ? cwd : cwd + '/';
  const abs = Buffer.from(paths.map((p) => (p === '' ? cwd : root + p) + '\0').join(''));
  const { counts, data } = await read(abs);
  const map = new Map<string, Xattrs>();
  const failed: string[] = [];
  let o = 0;
  for (let i = 0; i < paths.length; i++) {
    const n = counts[i]!;
    if (n < 0) {
      const code = errnoNames.get(-n) ?? `E${-n}`;
      if (code !== 'ENOENT' && code !== 'ENOTDIR' && failed.length < 5) failed.push(`${paths[i] || '.'}: ${code}`);
      continue;
    }
    if (n === 0) continue;
    const x: Xattrs = {};
    for (let k = 0; k < n; k++) {
      const nl = data.readUInt32LE(o);
      const name = data.toString('utf8', o + 4, o + 4 + nl);
      o += 4 + nl;
      const vl = data.readUInt32LE(o);
      x[name] = data.toString('base64', o + 4, o + 4 + vl);
      o += 4 + vl;
    }
    map.set(paths[i]!, x);
  }
  if (failed.length > 0) log.debug(`xattrs not read: ${failed.join('; ')}`);
  return map;
}

/** readXattrs with one getfattr. */
export function readXattrsGetfattr(cwd: string, paths: string[], log: Logger): Promise<Map<string, Xattrs>> {
  return new Promise((resolve) => {
    const child = spawn('getfattr', ['-d', '-h', '-m', '-', '-e', 'base64', '--', ...paths.map((p) => './' + p)], {
      cwd,
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, LC_ALL: 'C' },
    });
    const out: Buffer[] = [];
    let stderr = '';
    child.stdout!.on('data', (b: Buffer) => out.push(b));
    child.stderr!.setEncoding('utf8');
    child.stderr!.on('data', (s: string) => {
      if (stderr.length < 4096) stderr += s;
    });
    child.once('error', (err) => {
      log.warn(`getfattr failed: ${err.message}`);
      resolve(new Map());
    });
    child.once('close', (code) => {
      if (code !== 0 && stderr) log.debug(`getfattr: ${stderr.trim().split('\n').slice(0, 5).join('; ')}`);
      resolve(parseDump(Buffer.concat(out)));
    });
  });
}
