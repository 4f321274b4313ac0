/**
 * Helpers for the Cinder end-to-end suites (test/real/cinder-e2e*.test.ts): the lab and its
 * credentials, a janitor that removes everything a suite created in the cloud (even on failure),
 * attaching a volume to this node through the provider and the RBD connector (the same path the
 * agent uses) to write or read its content, a tree fingerprint to compare contents, running the
 * CLI as a child process, the list of temporary resources Permafrost may have left behind, and
 * the lab, working directory and final checks every suite shares.
 */
import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { chmodSync, chownSync, lstatSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync, symlinkSync, utimesSync, writeFileSync } from 'node:fs';
import { hostname, tmpdir } from 'node:os';
import { join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { expect } from 'vitest';
import { connectorFor } from '../../src/connectors/index.js';
import type { AttachedDevice } from '../../src/connectors/connector.js';
import { NotFoundError } from '../../src/errors.js';
import { completeAttachment, createAttachment, deleteAttachment } from '../../src/volume/cinder/attachments.js';
import { CinderVolumeProvider } from '../../src/volume/cinder/provider.js';
import { deleteGroup, deleteGroupType, getGroup } from '../../src/volume/cinder/resources.js';
import type { ConnectorProperties, VolumeRecord } from '../../src/volume/provider.js';
import { mkfs, mountReadOnly, mountReadWrite, umount } from '../../src/util/mounts.js';
import { ensureLab, isSkip, type LabEnv, type LabPart } from '../setup/lab.js';

export const ROOT = resolve(fileURLToPath(import.meta.url), '../../..');
export const BIN = join(ROOT, 'bin/permafrost.js');
const SBIN_PATH = `/usr/local/sbin:/usr/sbin:/sbin:${process.env.PATH ?? '/usr/local/bin:/usr/bin:/bin'}`;

/** Keystone credentials of one user. */
export interface Creds {
  authUrl: string;
  username: string;
  password: string;
  projectName: string;
}

/** The lab as the e2e suites see it. */
export interface CinderLab {
  lab: LabEnv;
  admin: Creds;
  demo: Creds;
  cephConf: string;
  keyring: string;
}

function has(cmd: string): boolean {
  try {
    execFileSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore', env: { PATH: SBIN_PATH } });
    return true;
  } catch {
    return false;
  }
}

/** The lab with Cinder (and the tools an RBD userspace attach needs), or a reason to skip. */
export async function cinderLab(parts: LabPart[] = ['cinder']): Promise<CinderLab | { skip: string }> {
  if (typeof process.getuid !== 'function' || process.getuid() !== 0) return { skip: 'not root: attaching volumes (FUSE, losetup, mount) and the lab need root' };
  for (const cmd of ['losetup', 'mount', 'mkfs.ext4', 'blkid']) if (!has(cmd)) return { skip: `${cmd} is not installed` };
  if (!has('qemu-storage-daemon') && !has('rbd-fuse')) return { skip: 'neither qemu-storage-daemon nor rbd-fuse is installed (RBD userspace attach)' };
  let lab: Awaited<ReturnType<typeof ensureLab>>;
  try {
    lab = await ensureLab(parts);
  } catch (err) {
    // A lab that cannot come up here (no packages, ports taken by another lab, ...): skip, saying why.
    return { skip: `the lab (${parts.join(', ')}) could not come up: ${(err as Error).message.split('\n').slice(0, 6).join(' | ')}` };
  }
  if (isSkip(lab)) return { skip: lab.skip };
  const v = lab.vars;
  if (!v.OS_AUTH_URL) return { skip: 'the lab environment has no OS_AUTH_URL (cinder part not up)' };
  if (!v.CEPH_CONF || !v.CEPH_CINDER_KEYRING) return { skip: 'the lab environment has no CEPH_CONF / CEPH_CINDER_KEYRING' };
  return {
    lab,
    admin: { authUrl: v.OS_AUTH_URL, username: v.OS_USERNAME!, password: v.OS_PASSWORD!, projectName: v.OS_PROJECT_NAME! },
    demo: { authUrl: v.OS_AUTH_URL, username: v.LAB_DEMO_USERNAME ?? 'demo', password: v.LAB_DEMO_PASSWORD ?? 'labdemo', projectName: v.LAB_DEMO_PROJECT_NAME ?? 'demo' },
    cephConf: v.CEPH_CONF,
    keyring: v.CEPH_CINDER_KEYRING,
  };
}

/** The lab of one suite; when the suite cannot run, `skip` says why (also printed as `[name] skipped: …`). */
export async function suiteLab(name: string, parts?: LabPart[]): Promise<{ cl: CinderLab; skip: string | undefined }> {
  const found = await cinderLab(parts);
  const skip = 'skip' in found ? found.skip : undefined;
  if (skip) console.warn(`[${name}] skipped: ${skip}`);
  return { cl: found as CinderLab, skip };
}

/** A suite's working directory (a new temporary one): its state and repository paths, and an empty agent.ini as empty.ini. */
export function suiteWork(prefix: string): { work: string; state: string; repo: string } {
  const work = mkdtempSync(join(tmpdir(), prefix));
  const state = join(work, 'state');
  const repo = join(work, 'repo');
  writeFileSync(join(work, 'empty.ini'), '');
  return { work, state, repo };
}

/**
 * The end of a suite (its afterAll): the janitor's steps, then `cleanup` (`permafrost cleanup
 * --provider cinder`) for whatever a failed test left, the timings printed and the working
 * directory removed. Then nothing may be left: no janitor error, no temporary resource tagged with
 * the suite's host, no volume named after its run.
 */
export async function endSuite(o: {
  name: string;
  run: string;
  host: string;
  admin: CinderVolumeProvider;
  janitor: Janitor;
  work: string;
  timings: Record<string, number>;
  cleanup: () => Promise<unknown>;
}): Promise<void> {
  const errors = await o.janitor.cleanup();
  await o.cleanup().catch(() => undefined);
  const left = await tempLeftovers(o.admin, { host: o.host });
  const ours = (await o.admin.client.listVolumes({ allTenants: true })).filter((v) => (v.name ?? '').startsWith(o.run));
  console.warn(`[${o.name}] timings (ms): ${JSON.stringify(o.timings)}`);
  rmSync(o.work, { recursive: true, force: true });
  expect(errors).toEqual([]);
  expect(left).toEqual([]);
  expect(ours.map((v) => `${v.name} ${v.id} ${v.status}`)).toEqual([]);
}

/** OS_* variables for these credentials. */
export function osEnv(c: Creds): Record<string, string> {
  return {
    OS_AUTH_URL: c.authUrl,
    OS_USERNAME: c.username,
    OS_PASSWORD: c.password,
    OS_PROJECT_NAME: c.projectName,
    OS_USER_DOMAIN_NAME: 'Default',
    OS_PROJECT_DOMAIN_NAME: 'Default',
    OS_REGION_NAME: 'RegionOne',
    OS_IDENTITY_API_VERSION: '3',
  };
}

/** A provider for these credentials (nothing from this process's environment or clouds.yaml). */
export function provider(c: Creds): Promise<CinderVolumeProvider> {
  return CinderVolumeProvider.create({ env: osEnv(c), searchDirs: [] });
}

/**
 * Everything a suite creates in the cloud, removed in reverse order by `cleanup()` (attachments,
 * then clones before their snapshots, snapshots before their volumes, volumes before their groups).
 */
export class Janitor {
  private readonly steps: { what: string; fn: () => Promise<unknown> }[] = [];

  add(what: string, fn: () => Promise<unknown>): void {
    this.steps.push({ what, fn });
  }

  volume(p: CinderVolumeProvider, id: string): void {
    this.add(`delete volume ${id}`, async () => {
      const v = await p.getVolume(id).catch((e: unknown) => (e instanceof NotFoundError ? undefined : Promise.reject(e)));
      if (!v) return;
      for (const a of v.attachments) if (a.attachmentId) await deleteAttachment(p.client, a.attachmentId);
      if (v.attachments.length) await p.waitVolume(id, ['available', 'error'], 120_000).catch(() => undefined);
      // No cascade: Cinder refuses a tenant's cascade delete of a volume another project ever snapshotted
      // (the admin's temporary snapshot of an --all-tenants backup); the suites delete their snapshots first.
      await p.deleteVolume(id, { wait: true });
    });
  }

  snapshot(p: CinderVolumeProvider, id: string): void {
    this.add(`delete snapshot ${id}`, () => p.deleteSnapshot(id, { wait: true }));
  }

  attachment(p: CinderVolumeProvider, id: string): void {
    this.add(`delete attachment ${id}`, () => deleteAttachment(p.client, id));
  }

  group(p: CinderVolumeProvider, id: string): void {
    this.add(`delete group ${id}`, async () => {
      await deleteGroup(p.client, id, true);
      for (let i = 0; i < 240; i++) {
        const gone = await getGroup(p.client, id).then(
          () => false,
          (e: unknown) => e instanceof NotFoundError,
        );
        if (gone) return;
        await sleep(500);
      }
      throw new Error(`group ${id} still there after 120 s`);
    });
  }

  groupType(p: CinderVolumeProvider, id: string): void {
    this.add(`delete group type ${id}`, () => deleteGroupType(p.client, id));
  }

  volumeType(p: CinderVolumeProvider, id: string): void {
    // Cinder answers 500 now and then while the volumes of the type are still going (their rows
    // not yet marked deleted): a few tries, a second apart, before it counts as left behind.
    this.add(`delete volume type ${id}`, async () => {
      for (let attempt = 1; ; attempt++) {
        try {
          return await p.client.call('DELETE', `/types/${id}`, { what: `delete volume type ${id}`, ok: [404] });
        } catch (err) {
          if (attempt >= 5) throw err;
          await sleep(1000);
        }
      }
    });
  }

  /** Run every step, newest first; returns the errors (never throws). */
  async cleanup(): Promise<string[]> {
    const errors: string[] = [];
    while (this.steps.length) {
      const s = this.steps.pop()!;
      try {
        await s.fn();
      } catch (err) {
        errors.push(`${s.what}: ${(err as Error).message}`);
      }
    }
    return errors;
  }
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Create a volume through the API (registered with the janitor) and wait until it is available. */
export async function createVolume(
  p: CinderVolumeProvider,
  j: Janitor,
  o: { name: string; size?: number; metadata?: Record<string, string>; bootable?: boolean; volumeType?: string; description?: string; groupId?: string },
): Promise<VolumeRecord> {
  let id: string;
  if (o.groupId) {
    const v = await p.client.createVolume({ size: o.size ?? 1, name: o.name, group_id: o.groupId, volume_type: o.volumeType, metadata: o.metadata, description: o.description });
    id = v.id;
  } else {
    id = (await p.createVolume({ name: o.name, size: o.size ?? 1, metadata: o.metadata, volumeType: o.volumeType, description: o.description })).id;
  }
  j.volume(p, id);
  await p.waitVolume(id, ['available']);
  if (o.bootable) await p.setBootable(id, true);
  return p.getVolume(id);
}

/** Options of the RBD connector for the helpers' own attachments. */
export function scriptOptions(cl: CinderLab, stateDir: string) {
  return { stateDir, mode: 'userspace' as const, timeoutMs: 120_000, env: { PF_KEYRING: cl.keyring, PF_CEPH_CONF: cl.cephConf } };
}

/**
 * Attach a volume to this node through the attachments API and the RBD connector (the agent's own
 * path), run `fn` with the block device, detach whatever happens.
 */
export async function withDevice<T>(
  cl: CinderLab,
  p: CinderVolumeProvider,
  volumeId: string,
  o: { readOnly: boolean; stateDir: string; host?: string },
  fn: (device: string) => Promise<T>,
): Promise<T> {
  const props: ConnectorProperties = { ip: '127.0.0.1', host: o.host ?? `${hostname()}-e2e-helper`, multipath: false, platform: 'x86_64', os_type: 'linux2', do_local_attach: false };
  const att = await p.attach(volumeId, props);
  let dev: AttachedDevice | undefined;
  const c = connectorFor(att.connectionInfo.driver_volume_type, scriptOptions(cl, o.stateDir));
  try {
    dev = await c.attach(att.connectionInfo, { readOnly: o.readOnly });
    return await fn(dev.path);
  } finally {
    try {
      if (dev) await c.detach(dev);
    } finally {
      await p.detach(volumeId, att.id);
      await p.waitVolume(volumeId, ['available', 'in-use'], 120_000);
    }
  }
}

/**
 * Attach a volume and mount it: read-write (optionally after mkfs of `mkfsType`) or read-only
 * (no journal replay, as the agent does), run `fn` with the mount point, unmount and detach.
 */
export async function withMounted<T>(
  cl: CinderLab,
  p: CinderVolumeProvider,
  volumeId: string,
  o: { stateDir: string; mkfsType?: string; label?: string; readOnly?: boolean },
  fn: (dir: string) => Promise<T>,
): Promise<T> {
  return withDevice(cl, p, volumeId, { readOnly: Boolean(o.readOnly), stateDir: o.stateDir }, async (dev) => {
    if (o.mkfsType) await mkfs(dev, { type: o.mkfsType, label: o.label });
    const mp = join(o.stateDir, `mnt-${randomBytes(4).toString('hex')}`);
    mkdirSync(mp, { recursive: true });
    if (o.readOnly) await mountReadOnly(dev, mp);
    else await mountReadWrite(dev, mp);
    try {
      const r = await fn(mp);
      if (!o.readOnly) execFileSync('sync', ['-f', mp]);
      return r;
    } finally {
      await umount(mp);
      rmSync(mp, { recursive: true, force: true });
    }
  });
}

/** Write a tree of test content under `dir`: files of several sizes, a symlink, modes, owners, a fixed mtime. */
export function writeContent(dir: string, seed: string, o: { bigMiB?: number } = {}): void {
  const rnd = (n: number, salt: string) => {
    // Deterministic pseudo-random bytes from the seed (sha256 in counter mode).
    const out = Buffer.alloc(n);
    for (let off = 0, i = 0; off < n; i++) {
      const h = createHash('sha256').update(`${seed}/${salt}/${i}`).digest();
      h.copy(out, off, 0, Math.min(32, n - off));
      off += 32;
    }
    return out;
  };
  mkdirSync(join(dir, 'etc/app'), { recursive: true });
  mkdirSync(join(dir, 'data/deep/er'), { recursive: true });
  writeFileSync(join(dir, 'etc/app/config.ini'), `[app]\nseed = ${seed}\n`);
  writeFileSync(join(dir, 'etc/app/secret.key'), rnd(64, 'key'));
  chmodSync(join(dir, 'etc/app/secret.key'), 0o600);
  chownSync(join(dir, 'etc/app/secret.key'), 1234, 2345);
  for (let i = 0; i < 20; i++) writeFileSync(join(dir, `data/small-${i}.txt`), `file ${i} of ${seed}\n`.repeat(i + 1));
  writeFileSync(join(dir, 'data/deep/er/blob.bin'), rnd((o.bigMiB ?? 4) * 1024 * 1024, 'big'));
  symlinkSync('../etc/app/config.ini', join(dir, 'data/config-link'));
  const t = new Date('2024-03-01T12:00:00Z');
  utimesSync(join(dir, 'etc/app/config.ini'), t, t);
}

/** One entry of a tree fingerprint. */
export interface EntryPrint {
  type: 'file' | 'dir' | 'symlink' | 'other';
  mode: number;
  uid: number;
  gid: number;
  size?: number;
  sha256?: string;
  link?: string;
  mtimeMs?: number;
}

/** Fingerprint of a tree: path → type, mode, owner, size, content hash, link target, file mtime (lost+found left out). */
export function fingerprint(dir: string): Record<string, EntryPrint> {
  const out: Record<string, EntryPrint> = {};
  const walk = (d: string): void => {
    for (const name of readdirSync(d).sort()) {
      const full = join(d, name);
      const rel = relative(dir, full);
      if (rel === 'lost+found') continue;
      const st = lstatSync(full);
      const base = { mode: st.mode & 0o7777, uid: st.uid, gid: st.gid };
      if (st.isDirectory()) {
        out[rel] = { type: 'dir', ...base };
        walk(full);
      } else if (st.isSymbolicLink()) out[rel] = { type: 'symlink', ...base, link: readlinkSync(full) };
      else if (st.isFile())
        out[rel] = { type: 'file', ...base, size: st.size, sha256: createHash('sha256').update(readFileSync(full)).digest('hex'), mtimeMs: Math.floor(st.mtimeMs / 1000) * 1000 };
      else out[rel] = { type: 'other', ...base };
    }
  };
  walk(dir);
  return out;
}

/** What a CLI run produced. */
export interface CliRun {
  code: number | null;
  stdout: string;
  stderr: string;
  ms: number;
  /** stdout parsed as JSON, when it is. */
  json?: any; // eslint-disable-line @typescript-eslint/no-explicit-any
}

/** Environment of a CLI run: nothing inherited but PATH/HOME/locale, plus `extra` (pass PERMAFROST_CONFIG: an empty agent.ini). */
export function cliEnv(cl: CinderLab, extra: Record<string, string | undefined> = {}): Record<string, string> {
  const base: Record<string, string | undefined> = {
    PATH: SBIN_PATH,
    HOME: process.env.HOME,
    LANG: process.env.LANG,
    PERMAFROST_FROM_SOURCE: '1',
    PERMAFROST_CEPH_KEYRING: cl.keyring,
    CEPH_CONF: cl.cephConf,
    PERMAFROST_ATTACH_MODE: 'userspace',
    ...extra,
  };
  return Object.fromEntries(Object.entries(base).filter((e): e is [string, string] => e[1] !== undefined));
}

/** Run `permafrost ARGS` as a child process; `onSpawn` gets the child (for kill tests). */
export function runCli(args: string[], env: Record<string, string>, o: { cwd?: string; timeoutMs?: number; onSpawn?: (pid: number) => void } = {}): Promise<CliRun> {
  const t0 = Date.now();
  return new Promise((resolvePromise, reject) => {
    const child = spawn(process.execPath, [BIN, ...args], { env, cwd: o.cwd ?? ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (b: Buffer) => (stdout += b.toString('utf8')));
    child.stderr.on('data', (b: Buffer) => (stderr += b.toString('utf8')));
    const timer = setTimeout(() => child.kill('SIGKILL'), o.timeoutMs ?? 600_000);
    child.on('error', reject);
    if (child.pid !== undefined) o.onSpawn?.(child.pid);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      let json: unknown;
      try {
        json = JSON.parse(stdout);
      } catch {
        json = undefined;
      }
      resolvePromise({ code: code ?? (signal === 'SIGKILL' ? 137 : null), stdout, stderr, ms: Date.now() - t0, json });
    });
  });
}

/** A short description of a CLI run for assertion messages. */
export function describeRun(r: CliRun): string {
  return `exit ${r.code} after ${r.ms} ms\n--- stdout\n${r.stdout.slice(-3000)}\n--- stderr\n${r.stderr.slice(-5000)}`;
}

/** Temporary resources Permafrost left in the cloud (any project): permafrost-tmp-* volumes and snapshots. */
export async function tempLeftovers(admin: CinderVolumeProvider, o: { host?: string } = {}): Promise<string[]> {
  // Resources tagged with another host belong to other suites running at the same time.
  const keep = (name: string | null | undefined, md: Record<string, string> | undefined) =>
    ((name ?? '').startsWith('permafrost-tmp-') || md?.['permafrost:temporary'] === 'true') && (!o.host || md?.['permafrost:host'] === o.host);
  const vols = (await admin.client.listVolumes({ allTenants: true })).filter((v) => keep(v.name, v.metadata));
  const snaps = (await admin.client.listSnapshots({ allTenants: true })).filter((s) => keep(s.name, s.metadata));
  return [...vols.map((v) => `volume ${v.name} ${v.id} ${v.status}`), ...snaps.map((s) => `snapshot ${s.name} ${s.id} ${s.status}`)];
}

/**
 * Simulate a server using a volume: an attachment made through the API with a foreign connector
 * (another compute host), completed: the volume is in-use and stays so. No instance_uuid: since the
 * CVE-2023-2088 fix, Cinder asks Nova before deleting an attachment of an instance (HTTP 500
 * EndpointNotFound without Nova), or wants a service token — a test could not remove it again.
 */
export async function attachAsServer(p: CinderVolumeProvider, j: Janitor, volumeId: string): Promise<string> {
  const b = await p.client.call<{ attachment: { id: string } }>('POST', '/attachments', {
    body: { attachment: { volume_uuid: volumeId, connector: { ip: '127.0.0.2', host: 'fake-compute-1', initiator: 'iqn.2004-10.org.example:fake-compute-1', platform: 'x86_64', os_type: 'linux2', multipath: false }, mode: 'rw' } },
    what: `attach volume ${volumeId} to a simulated server`,
  });
  const id = b.attachment.id;
  j.attachment(p, id);
  await completeAttachment(p.client, id);
  await p.waitVolume(volumeId, ['in-use'], 60_000);
  return id;
}

/** Delete a volume now (its janitor step then finds nothing to do). */
export async function dropVolume(p: CinderVolumeProvider, id: string): Promise<void> {
  await p.deleteVolume(id, { wait: true });
}

/**
 * Make sure the projects' volume and snapshot quotas allow `min` of each (Cinder's default is 10,
 * which the e2e suites running beside the provider suite can exceed). Only ever raises a quota.
 */
export async function ensureQuotas(admin: CinderVolumeProvider, projectIds: string[], min = 60): Promise<void> {
  for (const pid of projectIds) {
    const q = await admin.client.call<{ quota_set: Record<string, number> }>('GET', `/os-quota-sets/${pid}`, { what: `show quotas of ${pid}` });
    const want: Record<string, number> = {};
    for (const k of ['volumes', 'snapshots']) {
      const cur = q.quota_set[k] ?? 0;
      if (cur !== -1 && cur < min) want[k] = min;
    }
    if (Object.keys(want).length) await admin.client.call('PUT', `/os-quota-sets/${pid}`, { body: { quota_set: want }, what: `raise quotas of ${pid}` });
  }
}

/** Re-export: an attachment without a server (for tests that call the API directly). */
export { createAttachment, deleteAttachment };

/** Processes whose command line contains `needle` (to find leftover qemu-storage-daemon / rbd-fuse). */
export function processesMatching(needle: string): { pid: number; cmd: string }[] {
  const out: { pid: number; cmd: string }[] = [];
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const cmd = readFileSync(`/proc/${d}/cmdline`, 'utf8').replace(/\0/g, ' ').trim();
      if (cmd.includes(needle)) out.push({ pid: Number(d), cmd });
    } catch {
      // gone
    }
  }
  return out;
}

/** Loop devices whose backing file is under `dir`. */
export function loopsUnder(dir: string): string[] {
  const out: string[] = [];
  for (const name of readdirSync('/sys/block')) {
    if (!name.startsWith('loop')) continue;
    try {
      const b = readFileSync(`/sys/block/${name}/loop/backing_file`, 'utf8').trim();
      if (b.startsWith(dir)) out.push(`/dev/${name} → ${b}`);
    } catch {
      // not bound
    }
  }
  return out;
}
