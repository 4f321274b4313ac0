/**
 * Helpers for the volume end-to-end suites (test/real/volume-e2e*, volume-kill*): a sandbox with
 * its own repository, state directory and local volume pool; the CLI run as an operator runs it
 * (`bin/permafrost.js` from source); volumes filled and read back through loop devices; trees
 * described and compared (content, modes, owners, times, hardlinks, symlinks, xattrs, sparseness);
 * and the check that a run left nothing behind (loop devices, mounts, temporary volumes and
 * snapshots, connector state, qemu-storage-daemon processes).
 *
 * Everything a sandbox creates lives under one directory (/var/tmp/pf-<name>-XXXX), so the
 * leftover checks only look at what is ours: other suites (and other people) may use loop devices
 * and mounts on the same machine at the same time.
 */
import { type ChildProcess, execFile, execFileSync, spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, lstatSync, readFileSync, readdirSync, readlinkSync, writeFileSync } from 'node:fs';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import Database from 'better-sqlite3';
import { LocalVolumeProvider, type LocalVolumeRecord } from '../../src/volume/local.js';

export const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
export const BIN = join(ROOT, 'bin/permafrost.js');
export const MiB = 1024 * 1024;
export const GiB = 1024 * MiB;
const PATH = `/usr/local/sbin:/usr/sbin:/sbin:${process.env.PATH ?? '/usr/local/bin:/usr/bin:/bin'}`;

/** Run a command, return stdout; throws with stderr on failure. */
export function sh(cmd: string, args: string[], opts: { input?: string | Buffer } = {}): string {
  return execFileSync(cmd, args, { encoding: 'utf8', env: { ...process.env, PATH }, input: opts.input, maxBuffer: 64 * MiB, stdio: ['pipe', 'pipe', 'pipe'] });
}

/** Run a command, never throw: exit code and output. */
export function shTry(cmd: string, args: string[]): { code: number; stdout: string; stderr: string } {
  try {
    return { code: 0, stdout: sh(cmd, args), stderr: '' };
  } catch (err) {
    const e = err as { status?: number; stdout?: string; stderr?: string };
    return { code: e.status ?? 1, stdout: String(e.stdout ?? ''), stderr: String(e.stderr ?? '') };
  }
}

export function has(cmd: string): boolean {
  return shTry('sh', ['-c', `command -v ${cmd}`]).code === 0;
}

/** Why a root suite cannot run here (printed by the suite), or undefined. */
export function rootSkipReason(tools: string[]): string | undefined {
  if (typeof process.getuid !== 'function' || process.getuid() !== 0) return 'not running as root (loop devices, mkfs and mount need root)';
  for (const t of tools) if (!has(t)) return `${t} not installed`;
  if (shTry('losetup', ['--find']).code !== 0) return 'no free loop device (losetup --find failed)';
  return undefined;
}

// ---------------------------------------------------------------------------------------------
// The CLI

export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
  ms: number;
  /** stdout parsed as JSON when the run had --json. */
  json?: any; // eslint-disable-line @typescript-eslint/no-explicit-any
}

/** A clean environment for the CLI: nothing of the runner's PERMAFROST_*, OS_*, AWS_* leaks in. */
function cliEnv(config: string): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!/^(PERMAFROST_|OS_|AWS_)/.test(k)) env[k] = v;
  return { ...env, PATH, PERMAFROST_FROM_SOURCE: '1', PERMAFROST_CONFIG: config, PERMAFROST_HOST: 'pf-e2e-node' };
}

/** A sandbox: repository, state directory (catalog, run, mnt), local pool, empty agent.ini. */
export class VolumeLab {
  readonly state: string;
  readonly repo: string;
  readonly pool: string;
  readonly config: string;
  #provider?: LocalVolumeProvider;

  private constructor(readonly dir: string) {
    this.state = join(dir, 'state');
    this.repo = join(dir, 'repo');
    this.pool = join(this.state, 'volumes');
    this.config = join(dir, 'agent.ini');
  }

  static async create(name: string): Promise<VolumeLab> {
    const dir = await mkdtemp(`/var/tmp/pf-${name}-`);
    const lab = new VolumeLab(dir);
    await mkdir(lab.state, { recursive: true });
    writeFileSync(lab.config, '');
    const r = await lab.cli(['init']);
    if (r.code !== 0) throw new Error(`init failed: ${r.stderr}`);
    return lab;
  }

  private argv(args: string[], json: boolean): string[] {
    return [BIN, '--repo', this.repo, '--state-dir', this.state, ...(json ? ['--json'] : []), ...args];
  }

  /** Run `permafrost <args>` to its end. */
  cli(args: string[], o: { json?: boolean; timeoutMs?: number } = {}): Promise<CliResult> {
    const t0 = performance.now();
    return new Promise((res) => {
      execFile(process.execPath, this.argv(args, o.json ?? false), { env: cliEnv(this.config), cwd: ROOT, maxBuffer: 64 * MiB, timeout: o.timeoutMs ?? 300_000 }, (err, stdout, stderr) => {
        const code = err ? Number((err as { code?: number }).code ?? 1) : 0;
        const r: CliResult = { code: Number.isInteger(code) ? code : 1, stdout, stderr, ms: performance.now() - t0 };
        if (o.json) {
          try {
            r.json = JSON.parse(stdout);
          } catch {
            // left undefined: the caller's expectation on code/stdout says why
          }
        }
        res(r);
      });
    });
  }

  /** Run the CLI, expect exit 0 and return its JSON result. */
  async ok(args: string[]): Promise<any> { // eslint-disable-line @typescript-eslint/no-explicit-any
    const r = await this.cli(args, { json: true });
    if (r.code !== 0) throw new Error(`permafrost ${args.join(' ')} exited ${r.code}:\n${r.stderr}\n${r.stdout}`);
    return r.json;
  }

  /** Start `permafrost <args>` and leave it running (the kill tests); stderr lines go to `onLine`. */
  spawn(args: string[], onLine: (line: string) => void): { child: ChildProcess; exited: Promise<number | null>; stderr: () => string } {
    const child = spawn(process.execPath, this.argv(args, false), { env: cliEnv(this.config), cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
    let buf = '';
    let all = '';
    child.stderr!.setEncoding('utf8').on('data', (d: string) => {
      all += d;
      buf += d;
      let i;
      while ((i = buf.indexOf('\n')) >= 0) {
        onLine(buf.slice(0, i));
        buf = buf.slice(i + 1);
      }
    });
    child.stdout!.resume();
    const exited = new Promise<number | null>((res) => child.on('exit', (code, sig) => res(sig ? null : code)));
    return { child, exited, stderr: () => all };
  }

  /** The pool, seen directly (records with metadata, attachments, exact sizes). */
  provider(): LocalVolumeProvider {
    this.#provider ??= new LocalVolumeProvider({ poolDir: this.pool, host: 'pf-e2e-node', pollMs: 20 });
    return this.#provider;
  }

  async volume(ref: string): Promise<LocalVolumeRecord> {
    return this.provider().getVolume(ref);
  }

  image(id: string): string {
    return join(this.pool, 'volumes', `volume-${id}.img`);
  }

  /** `volume list`, as the operator sees it. */
  async volumeNames(): Promise<string[]> {
    const j = await this.ok(['volume', 'list']);
    return (j.volumes as { name: string }[]).map((v) => v.name).sort();
  }

  /** Create a volume through the CLI; returns its record. */
  async createVolume(name: string, size: string, fs: string, extra: string[] = []): Promise<LocalVolumeRecord> {
    const j = await this.ok(['volume', 'create', '--size', size, '--name', name, '--fs', fs, ...extra]);
    return this.volume(j.id as string);
  }

  /** Everything of this sandbox still on the machine. Empty lists = clean. */
  async leftovers(): Promise<Leftovers> {
    const p = this.provider();
    const vols = await p.listVolumes();
    const snaps = await p.listSnapshots();
    return {
      loops: loopsUnder(this.dir),
      mounts: mountsUnder(this.dir),
      temporaryVolumes: vols.filter((v) => v.metadata['permafrost:temporary'] === 'true' || v.name.startsWith('permafrost-tmp-')).map((v) => `${v.name} ${v.id} ${v.status}`),
      attachedVolumes: vols.filter((v) => v.attachments.length > 0 || v.status !== 'available').map((v) => `${v.name} ${v.id} ${v.status}`),
      snapshots: snaps.map((s) => `${s.name} ${s.id} ${s.status}`),
      poolFiles: [...listDir(join(this.pool, 'volumes')), ...listDir(join(this.pool, 'snapshots'))].filter((f) => f.endsWith('.tmp') || f.startsWith('snapshot-')),
      runDirs: listDir(join(this.state, 'run')),
      mountDirs: listDir(join(this.state, 'mnt')),
      processes: processesMentioning(this.dir),
    };
  }

  /** Remove every volume and snapshot of the pool and everything attached or mounted from the sandbox (after a failed test). */
  async scrub(): Promise<void> {
    for (const m of mountsUnder(this.dir).reverse()) shTry('umount', ['-l', m]);
    for (const l of loopsUnder(this.dir)) shTry('losetup', ['-d', l.split(' ')[0]!]);
    const p = this.provider();
    for (const v of await p.listVolumes()) for (const a of v.attachments) if (a.attachmentId) await p.detach(v.id, a.attachmentId);
    for (const s of await p.listSnapshots()) await p.deleteSnapshot(s.id).catch(() => undefined);
    for (const v of await p.listVolumes()) await p.deleteVolume(v.id).catch(() => undefined);
    for (const d of ['run', 'mnt']) await rm(join(this.state, d), { recursive: true, force: true });
    const db = new Database(join(this.state, 'catalog.db'));
    try {
      db.prepare(`UPDATE resources SET state = 'removed' WHERE state != 'removed'`).run();
      db.prepare(`UPDATE backups SET status = 'failed', reason = 'scrubbed by the test' WHERE status = 'running'`).run();
    } finally {
      db.close();
    }
  }

  /** Open catalog resources and running backups (both must be empty after a run). */
  catalogOpen(): { resources: unknown[]; running: unknown[] } {
    const db = new Database(join(this.state, 'catalog.db'), { readonly: true });
    try {
      return {
        resources: db.prepare(`SELECT job_id, kind, ref, state FROM resources WHERE state != 'removed'`).all(),
        running: db.prepare(`SELECT id FROM backups WHERE status = 'running'`).all(),
      };
    } finally {
      db.close();
    }
  }

  /** Backup rows of the catalog for one job. */
  backupRow(id: string): { id: string; status: string; reason: string | null } | undefined {
    const db = new Database(join(this.state, 'catalog.db'), { readonly: true });
    try {
      return db.prepare(`SELECT id, status, reason FROM backups WHERE id = ?`).get(id) as { id: string; status: string; reason: string | null } | undefined;
    } finally {
      db.close();
    }
  }

  async close(): Promise<void> {
    for (const m of mountsUnder(this.dir).reverse()) shTry('umount', ['-l', m]);
    for (const l of loopsUnder(this.dir)) shTry('losetup', ['-d', l.split(' ')[0]!]);
    await this.#provider?.close();
    if (!process.env.PF_KEEP_LAB) await rm(this.dir, { recursive: true, force: true });
  }
}

export interface Leftovers {
  loops: string[];
  mounts: string[];
  temporaryVolumes: string[];
  attachedVolumes: string[];
  snapshots: string[];
  poolFiles: string[];
  runDirs: string[];
  mountDirs: string[];
  processes: string[];
}

export const CLEAN: Leftovers = { loops: [], mounts: [], temporaryVolumes: [], attachedVolumes: [], snapshots: [], poolFiles: [], runDirs: [], mountDirs: [], processes: [] };

function listDir(d: string): string[] {
  try {
    return readdirSync(d).sort();
  } catch {
    return [];
  }
}

/** Loop devices whose backing file is under `dir` ("/dev/loopN file"). */
export function loopsUnder(dir: string): string[] {
  const out: string[] = [];
  for (const name of listDir('/sys/block')) {
    if (!name.startsWith('loop')) continue;
    let b = '';
    try {
      b = readFileSync(`/sys/block/${name}/loop/backing_file`, 'utf8').trim();
    } catch {
      continue;
    }
    if (b.startsWith(dir + '/')) out.push(`/dev/${name} ${b}`);
  }
  return out;
}

/** Mount points at or under `dir`. */
export function mountsUnder(dir: string): string[] {
  return readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .map((l) => l.split(' ')[4] ?? '')
    .map((m) => m.replace(/\\040/g, ' '))
    .filter((m) => m === dir || m.startsWith(dir + '/'))
    .sort();
}

/** Processes (qemu-storage-daemon, connector scripts, cp, ...) whose command line or environment mentions `dir`. */
export function processesMentioning(dir: string): string[] {
  const out: string[] = [];
  for (const pid of listDir('/proc')) {
    if (!/^\d+$/.test(pid) || Number(pid) === process.pid) continue;
    let cmd = '';
    try {
      cmd = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').join(' ').trim();
    } catch {
      continue;
    }
    if (!cmd) continue; // kernel thread or zombie
    if (cmd.includes('vitest')) continue;
    let environ = '';
    try {
      environ = readFileSync(`/proc/${pid}/environ`, 'utf8');
    } catch {
      // gone, or not readable
    }
    // Connector scripts get their state dir as PF_STATE_DIR; the CLI gets our agent.ini as PERMAFROST_CONFIG.
    if (cmd.includes(dir) || environ.includes(`=${dir}/`)) out.push(`${pid} ${cmd.slice(0, 200)}`);
  }
  return out;
}

/** qemu-storage-daemon processes on the machine (for the userspace attach paths). */
export function qsdProcesses(): string[] {
  return processesMentioning('/').filter((p) => /qemu-storage-daemon/.test(p));
}

// ---------------------------------------------------------------------------------------------
// Devices

/** Set up a loop device on an image (partitions made visible, with partx when the kernel did not). */
export function attachImage(img: string, o: { readOnly?: boolean } = {}): string {
  const dev = sh('losetup', ['--find', '--show', '--partscan', ...(o.readOnly ? ['--read-only'] : []), img]).trim();
  const pt = shTry('blkid', ['-p', '-o', 'value', '-s', 'PTTYPE', dev]).stdout.trim();
  if (pt) {
    const name = dev.replace('/dev/', '');
    if (!listDir(`/sys/block/${name}`).some((n) => n.startsWith(`${name}p`))) shTry('partx', ['-a', dev]);
    for (let i = 0; i < 50 && !existsSync(`${dev}p1`); i++) execFileSync('sleep', ['0.1']);
  }
  return dev;
}

export function detachLoop(dev: string): void {
  shTry('partx', ['-d', dev]);
  sh('losetup', ['-d', dev]);
  for (let i = 0; i < 50 && loopBacking(dev); i++) execFileSync('sleep', ['0.1']);
}

function loopBacking(dev: string): string {
  try {
    return readFileSync(`/sys/block/${dev.replace('/dev/', '')}/loop/backing_file`, 'utf8').trim();
  } catch {
    return '';
  }
}

/** Mount options that leave a read-only device alone. */
export function roOptions(fsType: string): string {
  return fsType === 'xfs' ? 'ro,norecovery,nouuid' : fsType.startsWith('ext') ? 'ro,noload' : 'ro';
}

/** Attach an image (a loop device), mount it (or one partition of it), run fn, unmount, detach. */
export async function withMounted<T>(img: string, mnt: string, fn: (root: string) => Promise<T> | T, o: { readOnly?: boolean; partition?: number } = {}): Promise<T> {
  const dev = attachImage(img, { readOnly: o.readOnly });
  try {
    const part = o.partition ? `${dev}p${o.partition}` : dev;
    const type = blkid(part).TYPE ?? '';
    await mkdir(mnt, { recursive: true });
    sh('mount', ['-t', type, ...(o.readOnly ? ['-o', roOptions(type)] : []), part, mnt]);
    try {
      return await fn(mnt);
    } finally {
      sh('umount', [mnt]);
    }
  } finally {
    detachLoop(dev);
  }
}

/** blkid -p of a device or an image file. */
export function blkid(devOrFile: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const line of shTry('blkid', ['-p', '-o', 'export', devOrFile]).stdout.split('\n')) {
    const i = line.indexOf('=');
    if (i > 0) out[line.slice(0, i)] = line.slice(i + 1);
  }
  return out;
}

export function sha256File(file: string): string {
  return sh('sha256sum', [file]).split(' ')[0]!;
}

/** The partition table as sfdisk dumps it, without the line naming the device. */
export function partitionTable(img: string): string {
  return sh('sfdisk', ['-d', img])
    .split('\n')
    .filter((l) => !l.startsWith('device:'))
    .map((l) => l.replace(/^\S+?(\d+) :/, 'part$1 :'))
    .join('\n');
}

// ---------------------------------------------------------------------------------------------
// Trees

/** Write the sample tree: nested dirs, text and random files, hardlinks, symlinks, xattrs, a sparse file, modes, owners, times, an empty dir, a fifo. */
export function fillTree(root: string, o: { randomMiB?: number } = {}): void {
  const w = (rel: string, data: string | Buffer) => writeFileSync(join(root, rel), data);
  for (const d of ['etc/app/conf.d', 'srv/data/a/b/c/d', 'srv/empty', 'home/user/.cache', 'var/log', 'space name/ünïcode']) sh('mkdir', ['-p', join(root, d)]);
  w('etc/app/app.conf', 'listen = 0.0.0.0:8080\nworkers = 4\n');
  w('etc/app/conf.d/10-db.conf', 'db = postgres://db/app\n');
  w('srv/data/a/b/c/d/deep.txt', 'deep\n'.repeat(1000));
  w('space name/ünïcode/fïle with spaces.txt', 'unicode\n');
  for (let i = 0; i < 40; i++) w(`var/log/app-${String(i).padStart(2, '0')}.log`, `line ${i}\n`.repeat(50 + i * 20));
  w('srv/data/random.bin', randomBytes((o.randomMiB ?? 24) * MiB));
  w('srv/data/small.bin', randomBytes(3000));
  w('home/user/.profile', 'export PATH=$HOME/bin:$PATH\n');
  // Hardlinks: a pair across directories and a triple.
  sh('ln', [join(root, 'etc/app/app.conf'), join(root, 'srv/data/app.conf.hardlink')]);
  w('srv/data/triple', 'three names\n');
  sh('ln', [join(root, 'srv/data/triple'), join(root, 'srv/data/a/triple2')]);
  sh('ln', [join(root, 'srv/data/triple'), join(root, 'home/user/triple3')]);
  // Symlinks: relative, absolute dangling, to a directory.
  sh('ln', ['-s', '../../etc/app/app.conf', join(root, 'srv/data/conf-link')]);
  sh('ln', ['-s', '/nonexistent/target', join(root, 'srv/data/dangling')]);
  sh('ln', ['-s', 'a/b', join(root, 'srv/data/dirlink')]);
  // A sparse file: 64 MiB with data at 0 and at 40 MiB.
  sh('truncate', ['-s', '64M', join(root, 'srv/data/sparse.img')]);
  sh('dd', ['if=/dev/urandom', `of=${join(root, 'srv/data/sparse.img')}`, 'bs=64K', 'count=1', 'conv=notrunc', 'status=none']);
  sh('dd', ['if=/dev/urandom', `of=${join(root, 'srv/data/sparse.img')}`, 'bs=64K', 'count=2', 'seek=640', 'conv=notrunc', 'status=none']);
  // xattrs: user (text and binary), trusted (root only), on files and on a directory.
  sh('setfattr', ['-n', 'user.mime_type', '-v', 'text/plain', join(root, 'etc/app/app.conf')]);
  sh('setfattr', ['-n', 'user.checksum', '-v', '0x00ff10fe', join(root, 'srv/data/small.bin')]);
  sh('setfattr', ['-n', 'trusted.app', '-v', 'secret-ish', join(root, 'srv/data/random.bin')]);
  sh('setfattr', ['-n', 'user.dir', '-v', 'yes', join(root, 'srv/data/a')]);
  // A fifo.
  sh('mkfifo', [join(root, 'srv/data/pipe')]);
  // Modes and owners.
  sh('chmod', ['0640', join(root, 'etc/app/conf.d/10-db.conf')]);
  sh('chown', ['1234:5678', join(root, 'etc/app/conf.d/10-db.conf')]);
  sh('chown', ['-R', '1000:1000', join(root, 'home/user')]);
  sh('chmod', ['0700', join(root, 'home/user')]);
  sh('chmod', ['4755', join(root, 'srv/data/small.bin')]);
  sh('chmod', ['2775', join(root, 'srv/data/a/b')]);
  sh('chmod', ['1777', join(root, 'srv/empty')]);
  sh('chown', ['-h', '4321:4321', join(root, 'srv/data/conf-link')]);
  // Times (with sub-second parts), deepest first so the directories keep theirs.
  sh('touch', ['-h', '-d', '2001-02-03 04:05:06.123456789', join(root, 'srv/data/conf-link')]);
  sh('touch', ['-d', '2010-10-10 10:10:10.987654321', join(root, 'srv/data/random.bin')]);
  sh('touch', ['-d', '1999-12-31 23:59:59.5', join(root, 'srv/data/a/b/c/d/deep.txt')]);
  sh('touch', ['-d', '2020-01-01 00:00:00.000001', join(root, 'srv/data/a/b/c/d'), join(root, 'srv/empty')]);
}

/** Change the tree: edit, append, add, delete, rename, chmod, a new hardlink, a new xattr. */
export function mutateTree(root: string): void {
  writeFileSync(join(root, 'etc/app/app.conf'), 'listen = 0.0.0.0:9090\nworkers = 8\n');
  writeFileSync(join(root, 'var/log/app-00.log'), 'appended\n', { flag: 'a' });
  writeFileSync(join(root, 'srv/data/new-file.txt'), 'added after the first backup\n');
  sh('rm', [join(root, 'var/log/app-39.log')]);
  sh('mv', [join(root, 'var/log/app-38.log'), join(root, 'var/log/renamed.log')]);
  sh('chmod', ['0600', join(root, 'home/user/.profile')]);
  sh('ln', [join(root, 'srv/data/new-file.txt'), join(root, 'srv/data/new-hardlink')]);
  sh('setfattr', ['-n', 'user.added', '-v', 'later', join(root, 'var/log/app-01.log')]);
  sh('mkdir', ['-p', join(root, 'srv/new-empty-dir')]);
}

/** What a tree entry must keep through backup and restore. */
export interface Entry {
  type: string;
  mode: string;
  uid: number;
  gid: number;
  size?: number;
  /**
   * Modification time in microseconds. Restores set times through Node's utimes (seconds as a
   * double, truncated to the microsecond by libuv), so diffTrees accepts 1 µs of difference.
   */
  mtimeUs: string;
  sha256?: string;
  target?: string;
  /** All names of this inode, when it has more than one. */
  links?: string;
  xattrs?: string;
  /** Allocated bytes (st_blocks × 512), for files. */
  allocated?: number;
}

const TYPE = (m: number): string => {
  const t = m & 0o170000;
  return t === 0o100000 ? 'file' : t === 0o040000 ? 'dir' : t === 0o120000 ? 'symlink' : t === 0o010000 ? 'fifo' : t === 0o140000 ? 'socket' : t === 0o020000 ? 'chardev' : 'blockdev';
};

/** Describe a tree: relative path → entry. `lost+found` (made by mkfs) is left out. */
export function describeTree(root: string): Map<string, Entry> {
  const out = new Map<string, Entry>();
  const byInode = new Map<string, string[]>();
  const walk = (rel: string): void => {
    const abs = rel ? join(root, rel) : root;
    const st = lstatSync(abs, { bigint: true });
    const type = TYPE(Number(st.mode));
    const e: Entry = {
      type,
      mode: (Number(st.mode) & 0o7777).toString(8),
      uid: Number(st.uid),
      gid: Number(st.gid),
      mtimeUs: String(st.mtimeNs / 1000n),
    };
    if (type === 'file') {
      e.size = Number(st.size);
      e.sha256 = createHash('sha256').update(readFileSync(abs)).digest('hex');
      e.allocated = Number(st.blocks) * 512;
      if (st.nlink > 1n) {
        const k = String(st.ino);
        byInode.set(k, [...(byInode.get(k) ?? []), rel]);
      }
    }
    if (type === 'symlink') e.target = readlinkSync(abs);
    if (type === 'dir') e.mode = (Number(st.mode) & 0o7777).toString(8);
    out.set(rel || '.', e);
    if (type === 'dir') for (const n of readdirSync(abs).sort()) if (!(rel === '' && n === 'lost+found')) walk(rel ? `${rel}/${n}` : n);
  };
  walk('');
  for (const names of byInode.values()) for (const n of names) out.get(n)!.links = [...names].sort().join(' ');
  // xattrs of every entry (symlinks not followed), hex-encoded, in one getfattr run.
  const dump = shTry('getfattr', ['--absolute-names', '-R', '-P', '-h', '-d', '-m', '-', '-e', 'hex', root]);
  let cur: string | undefined;
  const xa = new Map<string, string[]>();
  for (const line of dump.stdout.split('\n')) {
    if (line.startsWith('# file: ')) {
      const p = line.slice(8);
      cur = p === root ? '.' : p.startsWith(root + '/') ? p.slice(root.length + 1) : undefined;
    } else if (line.includes('=') && cur !== undefined && !line.startsWith('security.')) xa.set(cur, [...(xa.get(cur) ?? []), line]);
  }
  for (const [p, lines] of xa) {
    const e = out.get(p);
    if (e) e.xattrs = lines.sort().join(';');
  }
  return out;
}

/** Differences between two described trees (empty = identical). Sparse files: the copy must be as sparse as the original (within 1 MiB). */
export function diffTrees(a: Map<string, Entry>, b: Map<string, Entry>): string[] {
  const out: string[] = [];
  for (const [p, ea] of a) {
    const eb = b.get(p);
    if (!eb) {
      out.push(`${p}: missing`);
      continue;
    }
    for (const k of ['type', 'mode', 'uid', 'gid', 'size', 'sha256', 'target', 'links', 'xattrs'] as const) {
      if (ea[k] !== eb[k]) out.push(`${p}: ${k} ${String(ea[k])} → ${String(eb[k])}`);
    }
    const dt = BigInt(ea.mtimeUs) - BigInt(eb.mtimeUs);
    if (dt > 1n || dt < -1n) out.push(`${p}: mtime ${ea.mtimeUs} → ${eb.mtimeUs} µs`);
    if (ea.type === 'file' && ea.allocated !== undefined && eb.allocated !== undefined && ea.size! > 8 * MiB && ea.allocated < ea.size! / 2) {
      if (eb.allocated > ea.allocated + MiB) out.push(`${p}: not sparse any more (${ea.allocated} → ${eb.allocated} bytes allocated)`);
    }
  }
  for (const p of b.keys()) if (!a.has(p)) out.push(`${p}: unexpected`);
  return out;
}
