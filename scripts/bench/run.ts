/**
 * npm run bench — Permafrost against restic and borg on one seeded dataset, in one run.
 *
 *   npm run bench                          # full dataset (≈100k files, ≈3.0 GB apparent), 1 run
 *   npm run bench -- --quick               # ≈10x smaller: a smoke run
 *   npm run bench -- --runs 3              # medians of 3 complete cycles
 *   npm run bench -- --tools permafrost,restic
 *   npm run bench -- --help
 *
 * One cycle (identical for every tool, phase by phase, the page cache dropped
 * before every timed command when root): init → full backup of the pristine
 * dataset → mutate ≈5% in place → incremental backup → no-change backup →
 * repository size (du -sb) → restore of the newest backup into an empty
 * directory, verified against the source → revert the mutation. See
 * scripts/bench/README.md for the design and how to read the table.
 */
import { spawnSync } from 'node:child_process';
import { appendFileSync, existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, statfsSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, release, totalmem } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { DEFAULT_SEED, ensureDataset, mutate, revert, type MutationStats, type Scale } from './dataset.js';
import { dropCaches, duBytes, haveGnuTime, interrupt, isRoot, measure as measureCmd, stopAll, type Cmd, type Measured } from './measure.js';
import { renderReport, summarize, type RunResult, type ToolRun } from './report.js';
import { ALL_TOOLS, borgTool, permafrostTool, resticTool, toolAvailable, type BackupPhase, type PermafrostEntry, type Tool, type ToolName } from './tools.js';
import { verifyTree, type VerifyMode } from './verify.js';

const HERE = dirname(fileURLToPath(import.meta.url));
const REPO_ROOT = resolve(HERE, '../..');
const MUTATION_SEED = 'm1';

const USAGE = `usage: npm run bench -- [options]

  --quick                 ≈10x smaller dataset (≈10k files, ≈290 MB): a smoke run
  --runs N                repeat the whole cycle N times and report medians (default 1)
  --tools LIST            comma-separated subset of permafrost,restic,borg (default all)
  --work-dir DIR          datasets, repositories, logs, bench-results.json
                          (default $PERMAFROST_BENCH_DIR or /var/tmp/permafrost-bench; not a tmpfs)
  --seed S                dataset seed (default ${DEFAULT_SEED})
  --verify MODE           restore check: full (every byte, default), sample (large files sampled), none
  --pf-build MODE         how Permafrost runs: bench (default: tsc -p tsconfig.build.json into
                          scripts/bench/.build/<pid>, then node runs that), dist (build into dist/ and run
                          bin/permafrost.js), source (bin/permafrost.js through tsx, no build)
  --borg-compression C    borg --compression (default zstd,3)
  --no-drop-caches        do not drop the page cache before each timed command
  --max-load L            before each timed command, wait (up to 10 min) until the 1-minute load
                          average is below L — for shared machines (default: do not wait)
  --timeout SEC           per command (default 7200)
  --keep                  keep the last cycle's repositories and restored trees
  --allow-tmpfs           allow a work dir on tmpfs (the dataset then lives in RAM)
`;

interface Options {
  quick: boolean;
  runs: number;
  tools: ToolName[];
  workDir: string;
  seed: string;
  verify: VerifyMode;
  pfBuild: 'bench' | 'dist' | 'source';
  borgCompression: string;
  dropCaches: boolean;
  timeoutSec: number;
  maxLoad?: number;
  keep: boolean;
  allowTmpfs: boolean;
}

function parseArgs(argv: string[]): Options {
  const o: Options = {
    quick: false,
    runs: 1,
    tools: [...ALL_TOOLS],
    workDir: process.env.PERMAFROST_BENCH_DIR || '/var/tmp/permafrost-bench',
    seed: DEFAULT_SEED,
    verify: 'full',
    pfBuild: 'bench',
    borgCompression: 'zstd,3',
    dropCaches: true,
    timeoutSec: 7200,
    keep: false,
    allowTmpfs: false,
  };
  const args = [...argv];
  const value = (flag: string): string => {
    const v = args.shift();
    if (v === undefined) fail(`${flag} needs a value`);
    return v;
  };
  while (args.length) {
    let a = args.shift()!;
    if (a.startsWith('--') && a.includes('=')) {
      args.unshift(a.slice(a.indexOf('=') + 1));
      a = a.slice(0, a.indexOf('='));
    }
    switch (a) {
      case '--quick': o.quick = true; break;
      case '--runs': o.runs = Number(value(a)); if (!Number.isInteger(o.runs) || o.runs < 1) fail('--runs: a positive integer'); break;
      case '--tools': {
        const list = value(a).split(',').map((s) => s.trim()).filter(Boolean);
        for (const t of list) if (!ALL_TOOLS.includes(t as ToolName)) fail(`--tools: unknown tool ${t} (permafrost, restic, borg)`);
        o.tools = ALL_TOOLS.filter((t) => list.includes(t));
        break;
      }
      case '--work-dir': o.workDir = value(a); break;
      case '--seed': o.seed = value(a); break;
      case '--verify': { const v = value(a); if (!['full', 'sample', 'none'].includes(v)) fail('--verify: full, sample or none'); o.verify = v as VerifyMode; break; }
      case '--pf-build': { const v = value(a); if (!['bench', 'dist', 'source'].includes(v)) fail('--pf-build: bench, dist or source'); o.pfBuild = v as Options['pfBuild']; break; }
      case '--borg-compression': o.borgCompression = value(a); break;
      case '--no-drop-caches': o.dropCaches = false; break;
      case '--timeout': o.timeoutSec = Number(value(a)); break;
      case '--max-load': o.maxLoad = Number(value(a)); if (!(o.maxLoad > 0)) fail('--max-load: a positive number'); break;
      case '--keep': o.keep = true; break;
      case '--allow-tmpfs': o.allowTmpfs = true; break;
      case '-h': case '--help': process.stdout.write(USAGE); process.exit(0);
      // falls through (process.exit never returns)
      default: fail(`unknown option ${a}`);
    }
  }
  o.workDir = resolve(o.workDir);
  return o;
}

function fail(msg: string): never {
  process.stderr.write(`bench: ${msg}\n\n${USAGE}`);
  process.exit(2);
}

let benchLog = '';
function log(msg: string): void {
  const line = `[${new Date().toISOString().slice(11, 19)}] ${msg}`;
  process.stderr.write(line + '\n');
  if (benchLog) appendFileSync(benchLog, line + '\n');
}

// ---------------------------------------------------------------- Permafrost build

interface Build {
  entry?: PermafrostEntry;
  error?: string;
  seconds: number;
  typeErrors: number;
}

function buildPermafrost(mode: Options['pfBuild'], logDir: string): Build {
  const bin = join(REPO_ROOT, 'bin/permafrost.js');
  if (mode === 'source') {
    return { entry: { exe: bin, env: { PERMAFROST_FROM_SOURCE: '1' }, describe: 'from the TypeScript sources through tsx (--pf-build source)', repoRoot: REPO_ROOT }, seconds: 0, typeErrors: 0 };
  }
  const t0 = performance.now();
  // bench: one build per bench process (scripts/bench/.build/<pid>), so a second bench
  // (another work dir) never rebuilds under the feet of a running one.
  const outDir = mode === 'bench' ? join(HERE, '.build', String(process.pid)) : join(REPO_ROOT, 'dist');
  if (mode === 'bench') {
    const parent = join(HERE, '.build');
    mkdirSync(parent, { recursive: true });
    for (const name of readdirSync(parent)) {
      const pid = Number(name);
      let alive = false;
      try {
        if (Number.isInteger(pid) && pid > 0 && pid !== process.pid) {
          process.kill(pid, 0);
          alive = true;
        }
      } catch {
        /* dead */
      }
      if (!alive) rmSync(join(parent, name), { recursive: true, force: true });
    }
    process.on('exit', () => rmSync(outDir, { recursive: true, force: true }));
  }
  const tsc = join(REPO_ROOT, 'node_modules/.bin/tsc');
  const args = ['-p', 'tsconfig.build.json', ...(mode === 'bench' ? ['--outDir', outDir] : [])];
  log(`building Permafrost: tsc ${args.join(' ')}`);
  const r = existsSync(tsc)
    ? spawnSync(tsc, args, { cwd: REPO_ROOT, encoding: 'utf8' })
    : spawnSync('npx', ['tsc', ...args], { cwd: REPO_ROOT, encoding: 'utf8' });
  const out = `${r.stdout ?? ''}${r.stderr ?? ''}`;
  writeFileSync(join(logDir, 'tsc.log'), out);
  const typeErrors = (out.match(/error TS\d+/g) ?? []).length;
  const seconds = (performance.now() - t0) / 1000;
  const runJs = join(outDir, 'src/cli/run.js');
  if (!existsSync(runJs)) return { error: `tsc produced no ${runJs} (exit ${r.status}): ${out.trim().slice(-600)}`, seconds, typeErrors };
  if (typeErrors) log(`  tsc reported ${typeErrors} type errors (code emitted anyway; see ${join(logDir, 'tsc.log')})`);
  // Then the bundle bin/permafrost.js runs (scripts/bundle.mjs), as `npm run build` makes it.
  const b = spawnSync(process.execPath, [join(REPO_ROOT, 'scripts/bundle.mjs'), outDir], { cwd: REPO_ROOT, encoding: 'utf8' });
  if (b.status !== 0) return { error: `scripts/bundle.mjs failed (exit ${b.status}): ${`${b.stdout ?? ''}${b.stderr ?? ''}`.trim().slice(-600)}`, seconds: (performance.now() - t0) / 1000, typeErrors };
  const native = nativeOf(outDir);
  if (mode === 'dist') return { entry: { exe: bin, env: {}, describe: `compiled into dist/ (--pf-build dist); ${native}`, repoRoot: REPO_ROOT }, seconds, typeErrors };
  const shim = join(outDir, 'entry.mjs');
  // Same as bin/permafrost.js, bound to this build (dist/ is left alone: a stale
  // dist/ would shadow the sources for everyone else running bin/permafrost.js).
  // Its first line is bin/permafrost.js's #! line: the same runtime options.
  const shebang = readFileSync(bin, 'utf8').split('\n', 1)[0]!;
  writeFileSync(shim, `${shebang}\nimport { runCli } from './permafrost.mjs';\nprocess.exitCode = await runCli(process.argv.slice(2));\n`, { mode: 0o755 });
  return { entry: { exe: shim, env: {}, describe: `compiled with tsc -p tsconfig.build.json and bundled (scripts/bundle.mjs) into scripts/bench/.build/<pid>; ${native}`, repoRoot: REPO_ROOT }, seconds, typeErrors };
}

/**
 * Whether a build finds the native scanner (directory cache, exact restore
 * times): without it Permafrost runs on node:fs, slower, and the table must say so.
 */
function nativeOf(outDir: string): string {
  const mod = join(outDir, 'src/util/native.js');
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', `const m = await import(${JSON.stringify(pathToFileURL(mod).href)}); console.log(m.addonPath ?? '');`], { encoding: 'utf8' });
  const path = (r.stdout ?? '').trim();
  if (path) return 'native scanner loaded';
  log(`  WARNING: this build does not find the native scanner (engines/file/native/build; run npm run install): ${(r.stderr ?? '').trim().slice(-300)}`);
  return 'native scanner NOT found (node:fs fallback)';
}

// ---------------------------------------------------------------- one cycle

function failure(m: Measured): string {
  const why = m.timedOut ? 'timed out' : `exit ${m.exitCode ?? m.signal}`;
  const lines = `${m.stderrTail}\n${m.stdout}`.split('\n').map((l) => l.trim()).filter((l) => l && !/^Node\.js v/.test(l) && !/^at /.test(l) && !/^[{}]$/.test(l));
  const key = lines.find((l) => /error/i.test(l)) ?? lines.slice(-2).join(' | ');
  return `${why}: ${key.slice(0, 400)}`;
}

/**
 * Restored trees are moved aside and deleted only when the bench ends: on ext4
 * without a journal (these machines' root filesystem), creating 100k files
 * within minutes of deleting 100k others costs about twice as long (the inode
 * allocator skips inodes deleted within the last 60–300 s), which slowed
 * whichever tool restored right after another's tree was removed.
 */
function trashDir(o: Options): string {
  return join(o.workDir, 'trash');
}

function toTrash(o: Options, path: string, name: string): void {
  if (!existsSync(path)) return;
  mkdirSync(trashDir(o), { recursive: true });
  renameSync(path, join(trashDir(o), name));
}

async function oneCycle(o: Options, r: number, dataDir: string, logDir: string, pfEntry: PermafrostEntry | undefined, unavailable: Map<ToolName, string>): Promise<RunResult> {
  const runDir = join(o.workDir, 'run');
  rmSync(runDir, { recursive: true, force: true });
  mkdirSync(runDir, { recursive: true });
  const tools: Tool[] = [];
  const res: RunResult = { run: r, tools: {}, mutation: undefined };
  for (const name of o.tools) {
    const tr: ToolRun = { phases: {} };
    res.tools[name] = tr;
    if (unavailable.has(name)) {
      tr.failed = unavailable.get(name);
      continue;
    }
    const paths = { work: o.workDir, data: dataDir, repo: join(runDir, name, 'repo'), cache: join(runDir, name, 'cache') };
    mkdirSync(join(runDir, name), { recursive: true });
    tools.push(name === 'permafrost' ? permafrostTool(paths, pfEntry!) : name === 'restic' ? resticTool(paths) : borgTool(paths, o.borgCompression));
  }
  const logFile = (t: ToolName, phase: string) => join(logDir, `run${r}-${t}-${phase}.log`);
  const alive = () => tools.filter((t) => !res.tools[t.name]!.failed);

  for (const t of alive()) {
    const m = await measure(t.init(), { logFile: logFile(t.name, 'init'), timeoutSec: 600, dropCaches: false, keepStdout: t.keepStdout });
    res.tools[t.name]!.phases.init = strip(m);
    if (!m.ok) {
      res.tools[t.name]!.failed = `init: ${failure(m)}`;
      log(`  ${t.name}: init FAILED — ${failure(m)}`);
    }
  }

  const backupPhase = async (phase: BackupPhase) => {
    for (const t of alive()) {
      log(`run ${r}: ${phase} backup — ${t.name}`);
      const m = await measure(t.backup(phase), { logFile: logFile(t.name, phase), timeoutSec: o.timeoutSec, dropCaches: o.dropCaches, keepStdout: t.keepStdout });
      res.tools[t.name]!.phases[phase] = strip(m);
      if (!m.ok) {
        res.tools[t.name]!.failed = `${phase} backup: ${failure(m)}`;
        log(`  ${t.name}: ${phase} backup FAILED — ${failure(m)}`);
        continue;
      }
      const id = t.backupId(phase, m);
      log(`  ${t.name}: ${m.seconds.toFixed(2)} s, max RSS ${m.maxRssMiB?.toFixed(0) ?? '?'} MiB${id && id !== phase && id !== 'latest' ? `, backup ${id}` : ''} (load ${m.loadBefore})`);
    }
  };

  try {
    await backupPhase('full');
    log(`run ${r}: mutating the dataset (seed ${MUTATION_SEED})`);
    const ms: MutationStats = mutate(dataDir, MUTATION_SEED);
    res.mutation = ms;
    log(`  edited ${ms.edited}, appended ${ms.appended}, deleted ${ms.deleted}, added ${ms.added} files; ${ms.bigRegions} regions of medium/large files; ${(ms.bytesWritten / 2 ** 20).toFixed(1)} MiB written`);
    await backupPhase('incremental');
    await backupPhase('nochange');

    for (const t of tools) {
      const p = join(runDir, t.name);
      res.tools[t.name]!.repoBytes = duBytes(join(p, 'repo')) ?? undefined;
      res.tools[t.name]!.cacheBytes = duBytes(join(p, 'cache')) ?? undefined;
    }

    for (const t of alive()) {
      const target = join(runDir, t.name, 'restore');
      rmSync(target, { recursive: true, force: true });
      log(`run ${r}: restore — ${t.name}`);
      let cmd;
      try {
        cmd = t.restore(target);
      } catch (err) {
        res.tools[t.name]!.failed = `restore: ${(err as Error).message}`;
        continue;
      }
      const m = await measure(cmd, { logFile: logFile(t.name, 'restore'), timeoutSec: o.timeoutSec, dropCaches: o.dropCaches, keepStdout: t.keepStdout });
      res.tools[t.name]!.phases.restore = strip(m);
      if (!m.ok) {
        res.tools[t.name]!.failed = `restore: ${failure(m)}`;
        log(`  ${t.name}: restore FAILED — ${failure(m)}`);
      } else {
        log(`  ${t.name}: ${m.seconds.toFixed(2)} s, max RSS ${m.maxRssMiB?.toFixed(0) ?? '?'} MiB; verifying (${o.verify})`);
      }
      if (existsSync(target) && o.verify !== 'none') {
        const v = verifyTree(dataDir, target, o.verify);
        res.tools[t.name]!.verify = v;
        const warn = [v.modeMismatch && `${v.modeMismatch} modes`, v.ownerMismatch && `${v.ownerMismatch} owners`, v.mtimeMismatch && `${v.mtimeMismatch} file mtimes (max diff ${v.mtimeMaxDeltaNs} ns)`].filter(Boolean).join(', ');
        log(
          `  ${t.name}: restore ${v.ok ? 'VERIFIED' : 'WRONG'} — ${v.entries} entries, ${(v.bytesCompared / 2 ** 20).toFixed(0)} MiB compared in ${v.seconds} s` +
            (v.ok ? '' : `; missing ${v.missing}, extra ${v.extra}, type ${v.typeMismatch}, size ${v.sizeMismatch}, content ${v.contentMismatch}`) +
            (warn ? `; differing metadata: ${warn}` : '') +
            (v.sparseCandidates ? `; sparse file restored sparse: ${v.sparseKept ? 'yes' : 'no'}` : ''),
        );
        if (!v.ok) for (const e of v.examples) log(`      ${e}`);
      }
      if (!(o.keep && r === o.runs)) toTrash(o, target, `${t.name}-${r}`);
    }
  } finally {
    log(`run ${r}: reverting the mutation`);
    revert(dataDir);
    if (!(o.keep && r === o.runs)) rmSync(runDir, { recursive: true, force: true });
  }

  return res;
}

class Interrupted extends Error {}

/** measure(), then stop the cycle if the user interrupted it. */
let maxLoad: number | undefined;

async function measure(c: Cmd, o: Parameters<typeof measureCmd>[1]): Promise<Measured> {
  if (interrupt.requested) throw new Interrupted('interrupted');
  if (maxLoad !== undefined && o.dropCaches) {
    const t0 = Date.now();
    if (loadavg()[0]! >= maxLoad) log(`  waiting for the load average (${loadavg()[0]!.toFixed(2)}) to fall below ${maxLoad}`);
    while (loadavg()[0]! >= maxLoad && Date.now() - t0 < 600_000 && !interrupt.requested) await new Promise((r) => setTimeout(r, 2000));
    if (loadavg()[0]! >= maxLoad) log(`  load still ${loadavg()[0]!.toFixed(2)} after 10 min: measuring anyway`);
  }
  const m = await measureCmd(c, o);
  if (interrupt.requested) throw new Interrupted('interrupted');
  return m;
}

/** What goes into the JSON (no captured stdout). */
function strip(m: Measured): Measured {
  return { ...m, stdout: m.stdout.length > 2000 ? `${m.stdout.slice(0, 2000)}…` : m.stdout };
}

// ---------------------------------------------------------------- main

async function main(): Promise<number> {
  const o = parseArgs(process.argv.slice(2));
  mkdirSync(o.workDir, { recursive: true });
  const TMPFS_MAGIC = 0x01021994;
  if (statfsSync(o.workDir).type === TMPFS_MAGIC && !o.allowTmpfs) {
    fail(`${o.workDir} is on tmpfs: the dataset would live in RAM and compete with the tools; use --work-dir on a disk (or --allow-tmpfs)`);
  }
  // One bench at a time per work dir: they would share the dataset and the repositories.
  const lock = join(o.workDir, 'bench.lock');
  try {
    writeFileSync(lock, String(process.pid), { flag: 'wx' });
  } catch {
    const pid = Number(readFileSync(lock, 'utf8'));
    let alive = false;
    try {
      process.kill(pid, 0);
      alive = pid !== process.pid;
    } catch {
      /* stale */
    }
    if (alive) fail(`another bench (pid ${pid}) is using ${o.workDir}; wait for it or use --work-dir`);
    writeFileSync(lock, String(process.pid));
  }
  process.on('exit', () => rmSync(lock, { force: true }));
  const startedAt = new Date();
  const stamp = startedAt.toISOString().replace(/[:.]/g, '-');
  const logDir = join(o.workDir, 'logs', stamp);
  mkdirSync(logDir, { recursive: true });
  benchLog = join(logDir, 'bench.log');
  const scale: Scale = o.quick ? 'quick' : 'full';
  maxLoad = o.maxLoad;
  log(`permafrost bench: ${scale} dataset, ${o.runs} run(s), tools ${o.tools.join(',')}, work dir ${o.workDir}, logs ${logDir}`);

  const canDrop = o.dropCaches && isRoot() && dropCaches();
  if (o.dropCaches && !canDrop) log('warning: cannot drop the page cache (not root?) — phases run with whatever is cached');
  if (!haveGnuTime()) log('warning: /usr/bin/time missing (apt-get install time) — peak memory polled from /proc/<pid>/status VmHWM');

  const unavailable = new Map<ToolName, string>();
  for (const t of o.tools) {
    const why = toolAvailable(t);
    if (why) {
      unavailable.set(t, why);
      log(`warning: ${why}`);
    }
  }
  let build: Build | undefined;
  if (o.tools.includes('permafrost')) {
    build = buildPermafrost(o.pfBuild, logDir);
    if (build.error) {
      unavailable.set('permafrost', `build failed: ${build.error}`);
      log(`warning: Permafrost build failed: ${build.error}`);
    } else log(`  built in ${build.seconds.toFixed(1)} s`);
  }

  const dataDir = join(o.workDir, `data-${scale}`);
  const ds = ensureDataset(dataDir, o.seed, scale, log);
  log(`dataset ${dataDir}: ${ds.action} in ${ds.seconds.toFixed(1)} s — ${ds.plan.files} files, ${ds.plan.dirs.length} directories, ${(ds.plan.apparentBytes / 1e9).toFixed(2)} GB apparent, ${(ds.plan.dataBytes / 1e9).toFixed(2)} GB data`);

  // From here on an interrupt stops the running command and unwinds (reverting the
  // dataset); before, the default (exit at once) is right: the marker says what to repair.
  let signals = 0;
  const onSignal = (sig: NodeJS.Signals) => {
    if (++signals > 1) process.exit(130);
    log(`${sig}: stopping the running command; the dataset is reverted before exit (again to exit at once)`);
    stopAll();
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);

  // Versions and configurations (the tool objects are rebuilt per cycle).
  const probe = { work: o.workDir, data: dataDir, repo: '/nonexistent', cache: join(o.workDir, 'run-probe') };
  const toolInfo: Record<string, { version: string; config: string; unavailable?: string }> = {};
  for (const t of o.tools) {
    const tool = t === 'permafrost' ? (build?.entry ? permafrostTool(probe, build.entry) : undefined) : t === 'restic' ? resticTool(probe) : borgTool(probe, o.borgCompression);
    toolInfo[t] = { version: unavailable.has(t) || !tool ? 'unavailable' : tool.version(), config: tool?.config ?? '', unavailable: unavailable.get(t) };
  }
  rmSync(probe.cache, { recursive: true, force: true });
  for (const [t, i] of Object.entries(toolInfo)) log(`  ${t}: ${i.version} — ${i.config}`);

  const runs: RunResult[] = [];
  rmSync(trashDir(o), { recursive: true, force: true });
  try {
    for (let r = 1; r <= o.runs; r++) {
      if (interrupt.requested) throw new Interrupted('interrupted');
      if (r > 1) ensureDataset(dataDir, o.seed, scale, log);
      runs.push(await oneCycle(o, r, dataDir, logDir, build?.entry, unavailable));
    }
  } finally {
    rmSync(trashDir(o), { recursive: true, force: true });
  }

  const summary = summarize(runs, o.tools);
  const loads = runs.flatMap((r) => Object.values(r.tools).flatMap((t) => Object.entries(t!.phases).filter(([p]) => p !== 'init').map(([, m]) => m!.loadBefore)));
  const meta = {
    scale,
    runs: o.runs,
    startedAt: startedAt.toISOString(),
    finishedAt: new Date().toISOString(),
    machine: { cpus: cpus().length, cpu: cpus()[0]?.model ?? '?', memGiB: Math.round(totalmem() / 2 ** 30), kernel: release(), node: process.version, loadAtEnd: loadavg()[0] },
    cachesDropped: canDrop,
    loadBefore: loads.length ? { min: Math.min(...loads), max: Math.max(...loads) } : undefined,
    dataset: { dir: dataDir, seed: o.seed, files: ds.plan.files, dirs: ds.plan.dirs.length, apparentBytes: ds.plan.apparentBytes, dataBytes: ds.plan.dataBytes, action: ds.action, mutationSeed: MUTATION_SEED },
    tools: toolInfo,
    permafrostBuild: build ? { mode: o.pfBuild, seconds: build.seconds, typeErrors: build.typeErrors, error: build.error } : undefined,
    verify: o.verify,
    logDir,
  };
  const report = renderReport(meta, summary);
  process.stdout.write(report);
  writeFileSync(join(logDir, 'report.txt'), report);
  const out = join(o.workDir, 'bench-results.json');
  writeFileSync(out, JSON.stringify({ ...meta, summary, runsDetail: runs }, null, 2) + '\n');
  log(`results: ${out}`);
  const bad = Object.values(summary.tools).some((t) => t.failed || t.restoreWrong);
  return bad ? 1 : 0;
}

main().then(
  (code) => {
    process.exitCode = code;
  },
  (err) => {
    if (err instanceof Interrupted) {
      log('interrupted');
      process.exitCode = 130;
      return;
    }
    log(`bench failed: ${(err as Error).stack ?? err}`);
    process.exitCode = 1;
  },
);

