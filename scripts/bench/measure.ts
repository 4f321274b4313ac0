/**
 * Running one benchmarked command: wall time, peak memory (max RSS of the
 * process tree, from GNU time's %M — the kernel's ru_maxrss of the waited-for
 * child, which covers all its threads, e.g. Node worker threads, and its reaped
 * children), exit status; plus dropping the page cache and timing `sync`.
 */
import { spawn, spawnSync } from 'node:child_process';
import { appendFileSync, existsSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { loadavg } from 'node:os';

export interface Cmd {
  cmd: string;
  args: string[];
  cwd?: string;
  env: NodeJS.ProcessEnv;
}

export interface Measured {
  ok: boolean;
  exitCode: number | null;
  signal: string | null;
  timedOut: boolean;
  seconds: number;
  maxRssMiB: number | null;
  /** Time of a `sync` right after the command (flushing what it left dirty). */
  syncSeconds: number;
  /** 1-minute load average just before the command (other work on the machine). */
  loadBefore: number;
  cachesDropped: boolean;
  stdout: string;
  stderrTail: string;
  command: string;
}

const GNU_TIME = '/usr/bin/time';

/** Process groups of the commands running now (for an interrupt to stop them). */
const running = new Set<number>();
export const interrupt = { requested: false };

/** Stop the running commands (their whole process groups) and remember that we were interrupted. */
export function stopAll(signal: NodeJS.Signals = 'SIGTERM'): void {
  interrupt.requested = true;
  for (const pid of running) {
    try {
      process.kill(-pid, signal);
    } catch {
      /* gone */
    }
  }
}
export const haveGnuTime = () => existsSync(GNU_TIME);

export function isRoot(): boolean {
  return typeof process.getuid === 'function' && process.getuid() === 0;
}

/** sync, then drop the page cache, dentries and inodes (root only). */
export function dropCaches(): boolean {
  spawnSync('sync');
  if (!isRoot()) return false;
  try {
    writeFileSync('/proc/sys/vm/drop_caches', '3');
    return true;
  } catch {
    return false;
  }
}

export function timeSync(): number {
  const t0 = performance.now();
  spawnSync('sync');
  return (performance.now() - t0) / 1000;
}

const quote = (s: string) => (/^[\w@%+=:,./-]+$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`);
export const showCmd = (c: Cmd) => [c.cwd ? `(cd ${quote(c.cwd)} &&` : '', c.cmd, ...c.args.map(quote), c.cwd ? ')' : ''].filter(Boolean).join(' ');

/**
 * Run `c`, timing it and recording its peak RSS. stderr (and stdout unless
 * `keepStdout`) go to `logFile`. Kills the whole process group on timeout.
 */
export async function measure(c: Cmd, o: { logFile: string; timeoutSec: number; dropCaches: boolean; keepStdout?: boolean }): Promise<Measured> {
  const cachesDropped = o.dropCaches ? dropCaches() : false;
  const loadBefore = Math.round(loadavg()[0]! * 100) / 100;
  const rssFile = `${o.logFile}.rss`;
  rmSync(rssFile, { force: true });
  const useTime = haveGnuTime();
  const [cmd, args] = useTime ? [GNU_TIME, ['-f', '%M', '-o', rssFile, c.cmd, ...c.args]] : [c.cmd, c.args];
  appendFileSync(o.logFile, `\n$ ${showCmd(c)}\n`);
  const t0 = performance.now();
  const child = spawn(cmd, args, { cwd: c.cwd, env: c.env, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
  let stdout = '';
  let tail = '';
  child.stdout.on('data', (d: Buffer) => {
    if (o.keepStdout) stdout += d.toString();
    else appendFileSync(o.logFile, d);
  });
  child.stderr.on('data', (d: Buffer) => {
    appendFileSync(o.logFile, d);
    tail = (tail + d.toString()).slice(-4000);
  });
  // Without GNU time: poll VmHWM (peak RSS of the process, all threads).
  let hwm = 0;
  const poll = useTime
    ? undefined
    : setInterval(() => {
        try {
          const m = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${child.pid}/status`, 'utf8'));
          if (m) hwm = Math.max(hwm, Number(m[1]));
        } catch {
          /* exited */
        }
      }, 50);
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    try {
      process.kill(-child.pid!, 'SIGKILL');
    } catch {
      /* gone */
    }
  }, o.timeoutSec * 1000);
  running.add(child.pid!);
  const [exitCode, signal] = await new Promise<[number | null, string | null]>((res) => child.on('close', (code, sig) => res([code, sig])));
  const seconds = (performance.now() - t0) / 1000;
  clearTimeout(timer);
  if (poll) clearInterval(poll);
  running.delete(child.pid!);
  const syncSeconds = timeSync();
  let maxRssMiB: number | null = hwm ? hwm / 1024 : null;
  if (useTime) {
    try {
      // GNU time writes "Command exited with non-zero status N" before the value on failure.
      const lines = readFileSync(rssFile, 'utf8').trim().split('\n');
      const v = Number(lines[lines.length - 1]);
      if (Number.isFinite(v) && v > 0) maxRssMiB = v / 1024;
    } catch {
      /* no value */
    }
    rmSync(rssFile, { force: true });
  }
  if (o.keepStdout) appendFileSync(o.logFile, stdout);
  appendFileSync(o.logFile, `# exit ${exitCode ?? signal}${timedOut ? ' (timeout)' : ''} in ${seconds.toFixed(2)} s, max RSS ${maxRssMiB?.toFixed(1) ?? '?'} MiB, sync ${syncSeconds.toFixed(2)} s\n`);
  return {
    ok: exitCode === 0 && !timedOut,
    exitCode,
    signal,
    timedOut,
    seconds,
    maxRssMiB,
    syncSeconds,
    loadBefore,
    cachesDropped,
    stdout,
    stderrTail: tail,
    command: showCmd(c),
  };
}

/** Apparent size in bytes of a directory tree (du -sb). */
export function duBytes(dir: string): number | null {
  const r = spawnSync('du', ['-sb', dir], { encoding: 'utf8' });
  const v = Number(r.stdout?.split(/\s/)[0]);
  return r.status === 0 && Number.isFinite(v) ? v : null;
}

/** Run a helper command (not measured); throws with its output on failure. */
export function runQuiet(c: Cmd, logFile?: string): string {
  const r = spawnSync(c.cmd, c.args, { cwd: c.cwd, env: c.env, encoding: 'utf8', maxBuffer: 64 << 20 });
  if (logFile) appendFileSync(logFile, `\n$ ${showCmd(c)}\n${r.stdout ?? ''}${r.stderr ?? ''}# exit ${r.status}\n`);
  if (r.status !== 0) throw new Error(`${showCmd(c)} failed (exit ${r.status ?? r.signal}): ${(r.stderr || r.stdout || String(r.error ?? '')).trim().slice(-800)}`);
  return r.stdout;
}
