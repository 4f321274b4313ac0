/**
 * Mounting for the file engine: read-only mounts that never write to the device
 * (no journal replay), unmount with retries, mkfs of the same type/label/UUID
 * for restores, and the list of our mounts under a mount root for cleanup.
 */
import { mkdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { loadExeca } from './exec.js';
import { DeviceError, UsageError } from '../errors.js';
import { log } from './log.js';
import { detectFilesystem } from './fs-detect.js';

/** Default root under which the agent mounts volumes. */
export const DEFAULT_MOUNT_ROOT = '/var/lib/permafrost/mnt';

const env = { PATH: `/usr/local/sbin:/usr/sbin:/sbin:${process.env.PATH ?? '/usr/bin:/bin'}` };

/** One line of /proc/self/mountinfo. */
export interface MountEntry {
  id: number;
  parentId: number;
  /** "major:minor" of the mounted device. */
  majorMinor: string;
  /** Root of the mount inside its filesystem. */
  root: string;
  mountPoint: string;
  options: string;
  fsType: string;
  source: string;
  superOptions: string;
}

/** Undo mountinfo's octal escapes (\040 for a space, ...). */
function unescapeMount(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_m, o: string) => String.fromCharCode(parseInt(o, 8)));
}

/** Parse the text of /proc/<pid>/mountinfo. */
export function parseMountInfo(text: string): MountEntry[] {
  const out: MountEntry[] = [];
  for (const line of text.split('\n')) {
    if (!line.trim()) continue;
    const dash = line.indexOf(' - ');
    if (dash < 0) continue;
    const a = line.slice(0, dash).split(' ');
    const b = line.slice(dash + 3).split(' ');
    if (a.length < 6 || b.length < 2) continue;
    out.push({
      id: Number(a[0]),
      parentId: Number(a[1]),
      majorMinor: a[2]!,
      root: unescapeMount(a[3]!),
      mountPoint: unescapeMount(a[4]!),
      options: a[5]!,
      fsType: b[0]!,
      source: unescapeMount(b[1]!),
      superOptions: b[2] ?? '',
    });
  }
  return out;
}

/** Mounts of this process's namespace; with `root`, only those at or under it, deepest first. */
export async function listMounts(root?: string): Promise<MountEntry[]> {
  const all = parseMountInfo(await readFile('/proc/self/mountinfo', 'utf8'));
  if (!root) return all;
  const r = path.resolve(root);
  return all
    .filter((m) => m.mountPoint === r || m.mountPoint.startsWith(r.endsWith('/') ? r : r + '/'))
    .sort((x, y) => y.mountPoint.length - x.mountPoint.length || y.id - x.id);
}

/** Whether `p` is a mount point. */
export async function isMountPoint(p: string): Promise<boolean> {
  const r = path.resolve(p);
  return (await listMounts()).some((m) => m.mountPoint === r);
}

/**
 * Mount options that never write to the device, per filesystem, in the order
 * to try them (the first that the kernel accepts wins).
 */
export function readOnlyMountOptions(fsType: string): string[] {
  switch (fsType) {
    case 'ext4':
      return ['ro,noload'];
    case 'ext3':
      return ['ro,noload', 'ro'];
    case 'ext2':
      return ['ro'];
    case 'xfs':
      // nouuid: the clone of a snapshot has the same UUID as its origin, which may be mounted.
      return ['ro,norecovery,nouuid'];
    case 'btrfs':
      return ['ro,rescue=nologreplay', 'ro,nologreplay', 'ro'];
    case 'vfat':
    case 'msdos':
    case 'exfat':
    case 'ntfs3':
      return ['ro'];
    default:
      return ['ro'];
  }
}

async function runMount(args: string[]): Promise<{ ok: boolean; stderr: string }> {
  const { execa } = await loadExeca();
  const r = await execa('mount', args, { reject: false, env });
  return { ok: r.exitCode === 0, stderr: String(r.stderr || r.stdout).trim() };
}

/**
 * Mount a device read-only without replaying a journal or log. The filesystem
 * type is probed when not given; the mount point is created.
 */
export async function mountReadOnly(device: string, mountPoint: string, fsType?: string): Promise<{ fsType: string; options: string }> {
  let type = fsType;
  if (!type) {
    const info = await detectFilesystem(device);
    if (!info?.type) throw new DeviceError(`${device}: no filesystem found`);
    type = info.type;
  }
  await mkdir(mountPoint, { recursive: true, mode: 0o700 });
  const errors: string[] = [];
  for (const options of readOnlyMountOptions(type)) {
    const r = await runMount(['-t', type, '-o', options, device, mountPoint]);
    if (r.ok) {
      log.debug(`mounted ${device} (${type}) on ${mountPoint} with ${options}`);
      return { fsType: type, options };
    }
    errors.push(`-o ${options}: ${r.stderr}`);
  }
  throw new DeviceError(`cannot mount ${device} (${type}) read-only on ${mountPoint}: ${errors.join('; ')}`);
}

/** Mount a device read-write (restores); `options` are passed to mount -o. */
export async function mountReadWrite(device: string, mountPoint: string, opts: { fsType?: string; options?: string } = {}): Promise<void> {
  await mkdir(mountPoint, { recursive: true, mode: 0o700 });
  const args = opts.fsType ? ['-t', opts.fsType] : [];
  if (opts.options) args.push('-o', opts.options);
  const r = await runMount([...args, device, mountPoint]);
  if (!r.ok) throw new DeviceError(`cannot mount ${device} on ${mountPoint}: ${r.stderr}`);
}

/**
 * Unmount with retries (a busy mount is retried `retries` times, `delayMs`
 * apart), then lazily as a last resort when `lazy` (default true). Not mounted
 * is success.
 */
export async function umount(mountPoint: string, opts: { retries?: number; delayMs?: number; lazy?: boolean } = {}): Promise<void> {
  const retries = opts.retries ?? 5;
  const delayMs = opts.delayMs ?? 500;
  const lazy = opts.lazy ?? true;
  let last = '';
  for (let attempt = 0; attempt <= retries; attempt++) {
    if (!(await isMountPoint(mountPoint))) return;
    const { execa } = await loadExeca();
    const r = await execa('umount', [mountPoint], { reject: false, env });
    if (r.exitCode === 0) return;
    last = String(r.stderr).trim();
    if (/not mounted|no mount point/i.test(last)) return;
    if (attempt < retries) await sleep(delayMs * (attempt + 1));
  }
  if (lazy) {
    const { execa } = await loadExeca();
    const r = await execa('umount', ['-l', mountPoint], { reject: false, env });
    if (r.exitCode === 0) {
      log.warn(`${mountPoint} was busy (${last}); unmounted lazily`);
      return;
    }
    last = String(r.stderr).trim();
  }
  throw new DeviceError(`cannot unmount ${mountPoint}: ${last}`);
}

/** Unmount every mount at or under `root`, deepest first; returns what was unmounted. */
export async function umountAllUnder(root: string, opts: { retries?: number; delayMs?: number; lazy?: boolean } = {}): Promise<string[]> {
  const done: string[] = [];
  for (const m of await listMounts(root)) {
    await umount(m.mountPoint, opts);
    done.push(m.mountPoint);
  }
  return done;
}

/** What mkfs should create. */
export interface MkfsOptions {
  type: string;
  label?: string;
  uuid?: string;
}

/** The mkfs command line for a filesystem (exported for tests). */
export function mkfsCommand(device: string, o: MkfsOptions): [string, string[]] {
  const uuid = o.uuid;
  switch (o.type) {
    case 'ext2':
    case 'ext3':
    case 'ext4': {
      const args = ['-F', '-q'];
      if (o.label !== undefined) args.push('-L', o.label);
      if (uuid) args.push('-U', uuid);
      return [`mkfs.${o.type}`, [...args, device]];
    }
    case 'xfs': {
      const args = ['-f', '-q'];
      if (o.label !== undefined) args.push('-L', o.label);
      if (uuid) args.push('-m', `uuid=${uuid}`);
      return ['mkfs.xfs', [...args, device]];
    }
    case 'btrfs': {
      const args = ['-f', '-q'];
      if (o.label !== undefined) args.push('-L', o.label);
      if (uuid) args.push('-U', uuid);
      return ['mkfs.btrfs', [...args, device]];
    }
    case 'vfat': {
      const args: string[] = [];
      if (o.label !== undefined) args.push('-n', o.label);
      if (uuid) args.push('-i', uuid.replace('-', ''));
      return ['mkfs.vfat', [...args, device]];
    }
    default:
      throw new UsageError(`cannot create a '${o.type}' filesystem (supported: ext2, ext3, ext4, xfs, btrfs, vfat)`);
  }
}

/** Create a filesystem of the given type, with label and UUID when given. */
export async function mkfs(device: string, o: MkfsOptions): Promise<void> {
  const [cmd, args] = mkfsCommand(device, o);
  const { execa } = await loadExeca();
  const r = await execa(cmd, args, { reject: false, env });
  if (r.exitCode !== 0) {
    const why = (r as { code?: string }).code === 'ENOENT' ? `${cmd} is not installed` : String(r.stderr || r.stdout).trim();
    throw new DeviceError(`${cmd} on ${device} failed: ${why}`);
  }
  log.debug(`created ${o.type} on ${device}${o.label ? ` label ${o.label}` : ''}${o.uuid ? ` uuid ${o.uuid}` : ''}`);
}
