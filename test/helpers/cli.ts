/**
 * Run the permafrost CLI as a child process, the way an operator or a script does, and capture
 * stdout, stderr and the exit code.
 *
 * Which CLI:
 *   - default: the compiled sources (tsc -p tsconfig.build.json, then scripts/bundle.mjs, as
 *     `npm run build` does) in a private build directory
 *     under node_modules/.cache/permafrost-cli-test/ (never dist/: bin/permafrost.js prefers dist/,
 *     and a stale dist/ would hide other engineers' source edits). The build is redone when a
 *     source under src/ or engines/ is newer than the last build; parallel test files share it
 *     through a lock directory. Startup ~0.3 s instead of ~1 s through tsx.
 *   - PERMAFROST_TEST_CLI=source: bin/permafrost.js with PERMAFROST_FROM_SOURCE=1 (tsx), no build.
 *
 * Every run gets a clean environment: no PERMAFROST_*, AWS_*, OS_* variables leak in from the
 * test runner, PERMAFROST_CONFIG names an empty agent.ini of the sandbox, log level info.
 */
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import {
  chmodSync,
  existsSync,
  linkSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  readdirSync,
  readlinkSync,
  renameSync,
  rmSync,
  statSync,
  symlinkSync,
  utimesSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

export const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
export const BIN = join(ROOT, 'bin/permafrost.js');
const CACHE = join(ROOT, 'node_modules/.cache/permafrost-cli-test');
const LOCK = join(CACHE, 'build.lock');
const CURRENT = join(CACHE, 'current.json');

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

// ---------------------------------------------------------------------------------------------
// Build

/** A cheap fingerprint of the sources the build compiles: file count, newest mtime, total size. */
export function sourceFingerprint(): string {
  let count = 0;
  let newest = 0;
  let bytes = 0;
  const walk = (dir: string): void => {
    for (const ent of readdirSync(dir, { withFileTypes: true })) {
      const p = join(dir, ent.name);
      if (ent.isDirectory()) walk(p);
      else if (ent.isFile() && ent.name.endsWith('.ts')) {
        const st = statSync(p);
        count++;
        bytes += st.size;
        newest = Math.max(newest, st.mtimeMs);
      }
    }
  };
  for (const d of ['src', 'engines']) walk(join(ROOT, d));
  for (const f of ['tsconfig.json', 'tsconfig.build.json', 'scripts/bundle.mjs']) {
    const st = statSync(join(ROOT, f));
    newest = Math.max(newest, st.mtimeMs);
    bytes += st.size;
  }
  return createHash('sha256').update(`${count}:${newest}:${bytes}`).digest('hex').slice(0, 16);
}

interface BuildInfo {
  dir: string;
  fingerprint: string;
  builtAt: string;
  /** The test run that built it (vitest's main process: the parent of every test file's fork). */
  runner?: number;
}

function readCurrent(): BuildInfo | undefined {
  try {
    const b = JSON.parse(readFileSync(CURRENT, 'utf8')) as BuildInfo;
    return existsSync(join(b.dir, 'entry.mjs')) ? b : undefined;
  } catch {
    return undefined;
  }
}

async function takeLock(): Promise<void> {
  mkdirSync(CACHE, { recursive: true });
  const deadline = Date.now() + 15 * 60_000;
  for (;;) {
    try {
      mkdirSync(LOCK);
      writeFileSync(join(LOCK, 'owner'), String(process.pid));
      return;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    }
    // A lock whose owner died (or that is older than any build) is taken over.
    let stale = false;
    try {
      const owner = Number(readFileSync(join(LOCK, 'owner'), 'utf8'));
      try {
        process.kill(owner, 0);
      } catch {
        stale = true;
      }
    } catch {
      stale = Date.now() - statSync(LOCK, { throwIfNoEntry: false })!.mtimeMs > 60_000;
    }
    if (stale || Date.now() - (statSync(LOCK, { throwIfNoEntry: false })?.mtimeMs ?? 0) > 10 * 60_000) {
      rmSync(LOCK, { recursive: true, force: true });
      continue;
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for the CLI build lock ${LOCK}`);
    await sleep(250);
  }
}

function tsc(outDir: string): Promise<{ code: number; output: string }> {
  return new Promise((res) => {
    execFile(
      process.execPath,
      [join(ROOT, 'node_modules/typescript/bin/tsc'), '-p', join(ROOT, 'tsconfig.build.json'), '--outDir', outDir, '--sourceMap', 'false'],
      { cwd: ROOT, maxBuffer: 64 << 20 },
      (err, stdout, stderr) => res({ code: err ? Number((err as { code?: number }).code ?? 1) : 0, output: stdout + stderr }),
    );
  });
}

function bundle(outDir: string): Promise<{ code: number; output: string }> {
  return new Promise((res) => {
    execFile(process.execPath, [join(ROOT, 'scripts/bundle.mjs'), outDir], { cwd: ROOT, maxBuffer: 64 << 20 }, (err, stdout, stderr) =>
      res({ code: err ? Number((err as { code?: number }).code ?? 1) : 0, output: stdout + stderr }),
    );
  });
}

let entry: string | undefined;

/**
 * Make sure a CLI build of the current sources exists; returns the entry script. Call it in a
 * beforeAll (a build takes ~20 s on a busy 2-core machine; later calls are instant).
 */
export async function prepareCli(): Promise<string> {
  if (process.env.PERMAFROST_TEST_CLI === 'source') return (entry = BIN);
  if (entry) return entry;
  const fp = sourceFingerprint();
  const cur = readCurrent();
  // One build per test run: test files started later in the same run use it even when other
  // engineers' edits changed the sources meanwhile (each file would otherwise rebuild).
  if (cur?.fingerprint === fp || (cur?.runner !== undefined && cur.runner === process.ppid)) return (entry = join(cur.dir, 'entry.mjs'));
  const before = cur?.builtAt;
  await takeLock();
  try {
    // Someone else may have built while we waited: take theirs (sources keep changing under
    // other engineers' hands; one build per wait is enough).
    const now = readCurrent();
    if (now && (now.fingerprint === fp || now.builtAt !== before)) return (entry = join(now.dir, 'entry.mjs'));
    const dir = join(CACHE, `b-${Date.now()}-${process.pid}`);
    const t0 = Date.now();
    const r = await tsc(dir);
    if (!existsSync(join(dir, 'src/cli/run.js'))) throw new Error(`tsc -p tsconfig.build.json failed (exit ${r.code}):\n${r.output.slice(-4000)}`);
    if (r.code !== 0) console.warn(`[cli helper] tsc reported errors (the build was emitted anyway):\n${r.output.slice(-2000)}`);
    writeFileSync(join(dir, 'package.json'), JSON.stringify({ type: 'module' }));
    // The bundle, as `npm run build` makes it for bin/permafrost.js: the tests run what operators run.
    const b = await bundle(dir);
    if (b.code !== 0) throw new Error(`scripts/bundle.mjs failed (exit ${b.code}):\n${b.output.slice(-4000)}`);
    writeFileSync(
      join(dir, 'entry.mjs'),
      "// Same as bin/permafrost.js, for this private build.\nimport { runCli } from './permafrost.mjs';\nprocess.exitCode = await runCli(process.argv.slice(2));\n",
    );
    const tmp = `${CURRENT}.tmp-${process.pid}`;
    writeFileSync(tmp, JSON.stringify({ dir, fingerprint: fp, builtAt: new Date().toISOString(), runner: process.ppid } satisfies BuildInfo));
    renameSync(tmp, CURRENT);
    console.warn(`[cli helper] built the CLI into ${dir} in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
    // Old builds another test file may still be using are kept for a while.
    for (const d of readdirSync(CACHE)) {
      const p = join(CACHE, d);
      if (d.startsWith('b-') && p !== dir && Date.now() - statSync(p).mtimeMs > 30 * 60_000) rmSync(p, { recursive: true, force: true });
    }
    return (entry = join(dir, 'entry.mjs'));
  } finally {
    rmSync(LOCK, { recursive: true, force: true });
  }
}

// ---------------------------------------------------------------------------------------------
// Running

export interface CliResult {
  /** Exit code, or null when killed by a signal. */
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  ms: number;
}

export interface RunOptions {
  /** Extra environment (on top of the clean one). */
  env?: Record<string, string | undefined>;
  cwd?: string;
  /** Kill (SIGKILL) after this long and fail the promise (default 120 s). */
  timeoutMs?: number;
  /** Write stdout to this file descriptor instead of capturing it. */
  stdoutFd?: number;
  /** Leave the stdout pipe alone (binary output the caller pipes elsewhere). */
  rawStdout?: boolean;
}

/** The environment every CLI run starts from: the runner's minus anything that configures Permafrost, S3 or OpenStack. */
export function cleanEnv(extra: Record<string, string | undefined> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (/^(PERMAFROST_|AWS_|OS_|VITEST|NODE_OPTIONS$|TSX_)/.test(k)) continue;
    env[k] = v;
  }
  if (process.env.PERMAFROST_TEST_CLI === 'source') env.PERMAFROST_FROM_SOURCE = '1';
  env.NO_COLOR = '1';
  for (const [k, v] of Object.entries(extra)) {
    if (v === undefined) delete env[k];
    else env[k] = v;
  }
  return env;
}

/** A running CLI process. */
export interface CliProcess {
  child: ChildProcess;
  /** Resolves when the process ended (never rejects for a non-zero exit). */
  result: Promise<CliResult>;
  stdout(): string;
  stderr(): string;
  /** Resolve when stderr (or stdout) matches, reject when the process ends first or after timeoutMs. */
  waitFor(re: RegExp, opts?: { stream?: 'stderr' | 'stdout'; timeoutMs?: number }): Promise<void>;
}

export function startCli(args: string[], opts: RunOptions = {}): CliProcess {
  if (!entry) throw new Error('call prepareCli() in a beforeAll first');
  const t0 = Date.now();
  const child = spawn(process.execPath, [entry, ...args], {
    cwd: opts.cwd,
    env: cleanEnv(opts.env),
    stdio: ['ignore', opts.stdoutFd ?? 'pipe', 'pipe'],
  });
  let out = '';
  let err = '';
  const listeners = new Set<() => void>();
  const notify = () => listeners.forEach((l) => l());
  if (!opts.rawStdout)
    child.stdout?.setEncoding('utf8').on('data', (d: string) => {
      out += d;
      notify();
    });
  child.stderr!.setEncoding('utf8').on('data', (d: string) => {
    err += d;
    notify();
  });
  const timeoutMs = opts.timeoutMs ?? 120_000;
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    child.kill('SIGKILL');
  }, timeoutMs);
  const result = new Promise<CliResult>((res, rej) => {
    child.on('error', rej);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      notify();
      if (timedOut) rej(new Error(`permafrost ${args.join(' ')} did not finish within ${timeoutMs} ms\nstderr: ${err.slice(-3000)}`));
      else res({ code, signal, stdout: out, stderr: err, ms: Date.now() - t0 });
    });
  });
  let ended = false;
  result.then(
    () => (ended = true),
    () => (ended = true),
  );
  const waitFor: CliProcess['waitFor'] = (re, o = {}) =>
    new Promise<void>((res, rej) => {
      const text = () => (o.stream === 'stdout' ? out : err);
      const t = setTimeout(() => done(new Error(`timed out waiting for ${re} on ${o.stream ?? 'stderr'}:\n${text().slice(-2000)}`)), o.timeoutMs ?? 60_000);
      const check = () => {
        if (re.test(text())) done();
        else if (ended) done(new Error(`the process ended before ${re} appeared on ${o.stream ?? 'stderr'}:\n${text().slice(-2000)}`));
      };
      const done = (e?: Error) => {
        clearTimeout(t);
        listeners.delete(check);
        if (e) rej(e);
        else res();
      };
      listeners.add(check);
      check();
      void result.finally(check).catch(() => undefined);
    });
  return { child, result, stdout: () => out, stderr: () => err, waitFor };
}

/** Run the CLI to completion. */
export function runCli(args: string[], opts: RunOptions = {}): Promise<CliResult> {
  return startCli(args, opts).result;
}

/** Run the CLI with its stdout piped into another command (e.g. `tar -x`); both must end. */
export async function runCliPiped(
  args: string[],
  into: { cmd: string; args: string[]; cwd?: string },
  opts: RunOptions = {},
): Promise<{ cli: CliResult; sink: { code: number | null; stderr: string } }> {
  if (!entry) throw new Error('call prepareCli() in a beforeAll first');
  const sink = spawn(into.cmd, into.args, { cwd: into.cwd, stdio: ['pipe', 'ignore', 'pipe'] });
  let sinkErr = '';
  sink.stderr.setEncoding('utf8').on('data', (d: string) => (sinkErr += d));
  const sinkDone = new Promise<number | null>((res, rej) => {
    sink.on('error', rej);
    sink.on('close', (code) => res(code));
  });
  const p = startCli(args, { ...opts, rawStdout: true });
  // Binary: forwarded as bytes, with backpressure.
  p.child.stdout!.pipe(sink.stdin);
  sink.stdin.on('error', () => undefined); // EPIPE when tar gives up: the CLI's exit tells
  const [cli, code] = await Promise.all([p.result, sinkDone]);
  return { cli, sink: { code, stderr: sinkErr } };
}

/**
 * The one JSON document a --json run printed on stdout. Throws (with the output) when stdout is
 * not exactly one JSON document.
 */
export function jsonOf<T = any>(r: CliResult): T {
  const text = r.stdout.trim();
  try {
    return JSON.parse(text) as T;
  } catch (err) {
    throw new Error(`stdout is not one JSON document (${(err as Error).message}):\n${r.stdout.slice(0, 3000)}\nstderr:\n${r.stderr.slice(-3000)}`);
  }
}

/** The `{error: {code, message, exitCode}}` document of a failed --json run, checked against the exit code. */
export function jsonError(r: CliResult): { code: string; message: string; exitCode: number } {
  const doc = jsonOf<{ error?: { code: string; message: string; exitCode: number } }>(r);
  if (!doc.error || typeof doc.error.code !== 'string' || typeof doc.error.message !== 'string') throw new Error(`no {error} document on stdout:\n${r.stdout}`);
  if (doc.error.exitCode !== r.code) throw new Error(`error.exitCode ${doc.error.exitCode} differs from the exit code ${r.code}`);
  return doc.error;
}

/** Lines of stderr that are error messages ("error: ..."). */
export function errorLines(r: CliResult): string[] {
  return r.stderr.split('\n').filter((l) => l.startsWith('error: '));
}

/** A readable description of a run for assertion messages. */
export function describeRun(r: CliResult): string {
  return `exit ${r.code}${r.signal ? ` (signal ${r.signal})` : ''} after ${r.ms} ms\n--- stdout ---\n${r.stdout.slice(0, 3000)}\n--- stderr ---\n${r.stderr.slice(-3000)}`;
}

// ---------------------------------------------------------------------------------------------
// Sandbox: a temporary directory with a state dir, a repository path, an empty agent.ini

export interface SandboxOptions {
  /** Create the repository with a key file (encrypted). */
  encrypted?: boolean;
  /** Parent of the sandbox directory (default the OS temp dir). */
  parent?: string;
  /** Repository URL instead of <dir>/repo (e.g. s3://bucket/prefix). */
  repo?: string;
  /** Text of the sandbox's agent.ini (default empty). */
  ini?: string;
  /** Extra environment for every run. */
  env?: Record<string, string | undefined>;
}

export class Sandbox {
  readonly dir: string;
  readonly state: string;
  readonly repo: string;
  readonly config: string;
  readonly keyFile?: string;
  readonly env: Record<string, string | undefined>;

  constructor(o: SandboxOptions = {}) {
    this.dir = mkdtempSync(join(o.parent ?? tmpdir(), 'pf-cli-'));
    this.state = join(this.dir, 'state');
    this.repo = o.repo ?? join(this.dir, 'repo');
    this.config = join(this.dir, 'agent.ini');
    writeFileSync(this.config, o.ini ?? '');
    if (o.encrypted) this.keyFile = join(this.dir, 'repo.key');
    this.env = o.env ?? {};
  }

  /** Global options naming this sandbox's state dir, repository and key. */
  globals(o: { repo?: boolean; key?: boolean } = {}): string[] {
    const g = ['--state-dir', this.state];
    if (o.repo !== false) g.push('--repo', this.repo);
    if (o.key !== false && this.keyFile) g.push('--key-file', this.keyFile);
    return g;
  }

  #opts(opts: RunOptions): RunOptions {
    return { ...opts, cwd: opts.cwd ?? this.dir, env: { PERMAFROST_CONFIG: this.config, ...this.env, ...opts.env } };
  }

  /** Run `permafrost <globals> ...args`. */
  run(args: string[], opts: RunOptions & { repo?: boolean; key?: boolean } = {}): Promise<CliResult> {
    return runCli([...this.globals(opts), ...args], this.#opts(opts));
  }

  start(args: string[], opts: RunOptions & { repo?: boolean; key?: boolean } = {}): CliProcess {
    return startCli([...this.globals(opts), ...args], this.#opts(opts));
  }

  piped(args: string[], into: { cmd: string; args: string[]; cwd?: string }, opts: RunOptions & { repo?: boolean; key?: boolean } = {}) {
    return runCliPiped([...this.globals(opts), ...args], into, this.#opts(opts));
  }

  /** Run and expect exit 0; returns the result (the parsed JSON with --json via jsonOf). */
  async ok(args: string[], opts: RunOptions & { repo?: boolean; key?: boolean } = {}): Promise<CliResult> {
    const r = await this.run(args, opts);
    if (r.code !== 0) throw new Error(`permafrost ${args.join(' ')}: ${describeRun(r)}`);
    return r;
  }

  /** A path inside the sandbox. */
  path(...parts: string[]): string {
    return join(this.dir, ...parts);
  }

  remove(): void {
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/** Recursively list the files of a local repository directory (keys relative to its root). */
export function repoFiles(repoDir: string, prefix = ''): string[] {
  const out: string[] = [];
  const base = join(repoDir, prefix);
  if (!existsSync(base)) return out;
  const walk = (d: string, rel: string) => {
    for (const ent of readdirSync(d, { withFileTypes: true })) {
      const r = rel ? `${rel}/${ent.name}` : ent.name;
      if (ent.isDirectory()) walk(join(d, ent.name), r);
      else out.push(prefix ? `${prefix.replace(/\/$/, '')}/${r}` : r);
    }
  };
  walk(base, '');
  return out.sort();
}

/** Whether this process runs as root (tmpfs mounts, chown on restore). */
export const isRoot = typeof process.getuid === 'function' && process.getuid() === 0;

// ---------------------------------------------------------------------------------------------
// Source trees: build one with every kind of entry, snapshot it, compare two snapshots

/**
 * A small tree with what a restore must reproduce: text and random (multi-chunk) files, an empty
 * file, modes 0600/0700/0755, an empty directory, relative, dangling and directory symlinks, a
 * hardlink pair across directories, names with spaces and non-ASCII, fixed mtimes (also on
 * directories, set last).
 */
export function makeTree(root: string, o: { randomBytes?: number; seed?: string } = {}): void {
  const seed = o.seed ?? 'permafrost';
  const w = (rel: string, data: string | Buffer, mode = 0o644) => {
    const p = join(root, rel);
    mkdirSync(dirname(p), { recursive: true });
    writeFileSync(p, data, { mode });
    chmodSync(p, mode);
  };
  mkdirSync(root, { recursive: true });
  w('a.txt', `alpha ${seed}\n`);
  w('exec.sh', '#!/bin/sh\necho hello\n', 0o755);
  w('secret.txt', `only me ${seed}\n`, 0o600);
  w('empty', '');
  w('sub/deeper/c.txt', `${seed} line of text that compresses well\n`.repeat(3000));
  w('sub/rand.bin', pseudoRandom(o.randomBytes ?? (2.5 * (1 << 20)) | 0, seed));
  w('name with spaces & ünïcode ✓.txt', 'unicode\n');
  mkdirSync(join(root, 'emptydir'), { recursive: true });
  mkdirSync(join(root, 'sub/emptydir2'), { recursive: true });
  mkdirSync(join(root, 'private'), { recursive: true, mode: 0o700 });
  chmodSync(join(root, 'private'), 0o700);
  w('private/key.txt', 'k\n', 0o400);
  symlinkSync('a.txt', join(root, 'link-rel'));
  symlinkSync('does/not/exist', join(root, 'link-dangling'));
  symlinkSync('sub', join(root, 'link-dir'));
  w('hl1', `hardlinked ${seed}\n`);
  linkSync(join(root, 'hl1'), join(root, 'sub/hl2'));
  setTimes(root);
}

/** Deterministic incompressible bytes (SHA-256 in counter mode). */
export function pseudoRandom(n: number, seed: string): Buffer {
  const out = Buffer.allocUnsafe(n);
  let off = 0;
  for (let i = 0; off < n; i++) {
    const h = createHash('sha256').update(`${seed}:${i}`).digest();
    off += h.copy(out, off, 0, Math.min(32, n - off));
  }
  return out;
}

/** Give every file and directory under root a fixed, distinct whole-second mtime (directories last, deepest first). */
export function setTimes(root: string, base = 1_500_000_000): void {
  const dirs: string[] = [];
  let i = 0;
  const walk = (d: string) => {
    for (const ent of readdirSync(d, { withFileTypes: true }).sort((a, b) => (a.name < b.name ? -1 : 1))) {
      const p = join(d, ent.name);
      if (ent.isDirectory()) {
        walk(p);
        dirs.push(p);
      } else if (ent.isFile()) {
        const t = base + 1000 * ++i;
        utimesSync(p, t, t);
      }
    }
  };
  walk(root);
  for (const d of dirs) {
    const t = base + 1000 * ++i;
    utimesSync(d, t, t);
  }
}

export interface EntrySnap {
  type: 'file' | 'dir' | 'symlink' | 'other';
  mode: number;
  uid: number;
  gid: number;
  size: number;
  mtimeMs: number;
  sha?: string;
  target?: string;
  ino: number;
  nlink: number;
}

/** Every entry under root (relative paths; the root itself is "."). */
export function snapshotTree(root: string): Map<string, EntrySnap> {
  const out = new Map<string, EntrySnap>();
  const add = (rel: string, p: string) => {
    const st = lstatSync(p);
    const type = st.isFile() ? 'file' : st.isDirectory() ? 'dir' : st.isSymbolicLink() ? 'symlink' : 'other';
    out.set(rel, {
      type,
      mode: st.mode & 0o7777,
      uid: st.uid,
      gid: st.gid,
      size: type === 'file' ? st.size : 0,
      mtimeMs: st.mtimeMs,
      sha: type === 'file' ? createHash('sha256').update(readFileSync(p)).digest('hex') : undefined,
      target: type === 'symlink' ? readlinkSync(p) : undefined,
      ino: st.ino,
      nlink: st.nlink,
    });
    if (type === 'dir') for (const name of readdirSync(p).sort()) add(rel === '.' ? name : `${rel}/${name}`, join(p, name));
  };
  add('.', root);
  return out;
}

/** Groups of paths that share an inode (hardlinks), as sorted "a|b" strings. */
export function hardlinkGroups(s: Map<string, EntrySnap>): string[] {
  const by = new Map<number, string[]>();
  for (const [rel, e] of s) if (e.type === 'file' && e.nlink > 1) by.set(e.ino, [...(by.get(e.ino) ?? []), rel]);
  return [...by.values()].map((g) => g.sort().join('|')).sort();
}

/**
 * Differences between two snapshots (empty when equal): the set of paths, types, modes, sizes,
 * contents, symlink targets, hardlink groups, mtimes of files and directories (within tolMs; the
 * root's own mtime is not compared), owners when asked.
 */
export function diffTrees(a: Map<string, EntrySnap>, b: Map<string, EntrySnap>, o: { tolMs?: number; owners?: boolean; only?: (rel: string) => boolean } = {}): string[] {
  const tol = o.tolMs ?? 1;
  const keep = (m: Map<string, EntrySnap>) => new Map([...m].filter(([rel]) => rel === '.' || !o.only || o.only(rel)));
  const A = keep(a);
  const B = keep(b);
  const diffs: string[] = [];
  for (const rel of new Set([...A.keys(), ...B.keys()])) {
    const x = A.get(rel);
    const y = B.get(rel);
    if (!x || !y) {
      diffs.push(`${rel}: ${x ? 'missing from the second' : 'only in the second'}`);
      continue;
    }
    if (x.type !== y.type) {
      diffs.push(`${rel}: type ${x.type} vs ${y.type}`);
      continue;
    }
    if (x.type !== 'symlink' && rel !== '.' && x.mode !== y.mode) diffs.push(`${rel}: mode ${x.mode.toString(8)} vs ${y.mode.toString(8)}`);
    if (x.size !== y.size) diffs.push(`${rel}: size ${x.size} vs ${y.size}`);
    if (x.sha !== y.sha) diffs.push(`${rel}: content differs`);
    if (x.target !== y.target) diffs.push(`${rel}: symlink target ${x.target} vs ${y.target}`);
    if (x.type !== 'symlink' && rel !== '.' && Math.abs(x.mtimeMs - y.mtimeMs) > tol) diffs.push(`${rel}: mtime ${new Date(x.mtimeMs).toISOString()} vs ${new Date(y.mtimeMs).toISOString()}`);
    if (o.owners && (x.uid !== y.uid || x.gid !== y.gid)) diffs.push(`${rel}: owner ${x.uid}:${x.gid} vs ${y.uid}:${y.gid}`);
  }
  const ga = hardlinkGroups(A).join(', ');
  const gb = hardlinkGroups(B).join(', ');
  if (ga !== gb) diffs.push(`hardlink groups [${ga}] vs [${gb}]`);
  return diffs;
}

/** Flip `count` bytes of a file at `offset` (negative: from the end). */
export function flipBytes(path: string, offset: number, count = 4): void {
  const buf = readFileSync(path);
  const at = offset < 0 ? buf.length + offset : offset;
  for (let i = 0; i < count; i++) buf[at + i] = buf[at + i]! ^ 0xa5;
  writeFileSync(path, buf);
}
