/**
 * Filesystem and partition detection on a block device, with blkid (probing the
 * device itself, not the udev cache, which may not exist) and lsblk.
 */
import { loadExeca } from './exec.js';
import { DeviceError } from '../errors.js';

/** What blkid found on a device (a filesystem, or a partition table). */
export interface FsInfo {
  /** Filesystem type (ext4, xfs, btrfs, vfat, swap, ...); undefined for a bare partition table. */
  type?: string;
  uuid?: string;
  label?: string;
  /** Partition table type (gpt, dos) when the device carries one. */
  ptType?: string;
  /** blkid's USAGE: filesystem, raid, crypto, other. */
  usage?: string;
  version?: string;
  /** Every key blkid printed. */
  raw: Record<string, string>;
}

/** One partition of a device. */
export interface PartitionInfo {
  /** Kernel name (loop0p1, sdb1). */
  name: string;
  /** Device node (/dev/loop0p1). */
  path: string;
  /** Size in bytes. */
  size: number;
  /** Partition number (1-based), when it can be told from the name. */
  number?: number;
  fsType?: string;
  uuid?: string;
  label?: string;
}

const SBIN_PATH = `/usr/local/sbin:/usr/sbin:/sbin:${process.env.PATH ?? '/usr/bin:/bin'}`;
const env = { PATH: SBIN_PATH };

/** Parse `blkid -o export` output (KEY=VALUE lines). */
export function parseBlkidExport(text: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const line of text.split('\n')) {
    const i = line.indexOf('=');
    if (i > 0) out[line.slice(0, i)] = line.slice(i + 1);
  }
  return out;
}

/**
 * Probe a device with `blkid -p -o export`. Returns null when nothing is
 * recognised (blkid exit 2). Throws DeviceError when the device cannot be read.
 */
export async function detectFilesystem(device: string): Promise<FsInfo | null> {
  const { execa } = await loadExeca();
  const r = await execa('blkid', ['-p', '-o', 'export', device], { reject: false, env });
  if (r.exitCode === 2) return null;
  if (r.exitCode !== 0) {
    // blkid exits 4 for "usage or other error", also for ambivalent probing results.
    const msg = String(r.stderr || r.stdout).trim();
    if (/ambivalent/i.test(msg)) throw new DeviceError(`${device}: more than one filesystem signature found (${msg})`);
    throw new DeviceError(`blkid ${device} failed (exit ${r.exitCode}): ${msg}`);
  }
  const raw = parseBlkidExport(String(r.stdout));
  const info: FsInfo = { raw };
  if (raw.TYPE) info.type = raw.TYPE;
  if (raw.UUID) info.uuid = raw.UUID;
  if (raw.LABEL) info.label = raw.LABEL;
  if (raw.PTTYPE) info.ptType = raw.PTTYPE;
  if (raw.USAGE) info.usage = raw.USAGE;
  if (raw.VERSION) info.version = raw.VERSION;
  if (!info.type && !info.ptType) return null;
  return info;
}

interface LsblkNode {
  name: string;
  path?: string;
  type?: string;
  fstype?: string | null;
  size?: number | string;
  uuid?: string | null;
  label?: string | null;
  children?: LsblkNode[];
}

function partNumber(name: string): number | undefined {
  const m = /(\d+)$/.exec(name);
  return m ? Number(m[1]) : undefined;
}

/**
 * Partitions of a device, in order. The filesystem of each is probed with blkid
 * (lsblk's FSTYPE comes from udev, which may not run here).
 */
export async function listPartitions(device: string): Promise<PartitionInfo[]> {
  const { execa } = await loadExeca();
  const r = await execa('lsblk', ['-J', '-b', '-o', 'NAME,PATH,TYPE,FSTYPE,SIZE,UUID,LABEL', device], { reject: false, env });
  if (r.exitCode !== 0) throw new DeviceError(`lsblk ${device} failed: ${String(r.stderr).trim()}`);
  const parsed = JSON.parse(String(r.stdout)) as { blockdevices?: LsblkNode[] };
  const parts: PartitionInfo[] = [];
  const walk = (nodes: LsblkNode[] | undefined): void => {
    for (const n of nodes ?? []) {
      if (n.type === 'part') {
        const p: PartitionInfo = {
          name: n.name,
          path: n.path ?? `/dev/${n.name}`,
          size: Number(n.size ?? 0),
        };
        const num = partNumber(n.name);
        if (num !== undefined) p.number = num;
        parts.push(p);
      }
      walk(n.children);
    }
  };
  walk(parsed.blockdevices);
  for (const p of parts) {
    const fs = await detectFilesystem(p.path).catch(() => null);
    if (fs?.type) p.fsType = fs.type;
    if (fs?.uuid) p.uuid = fs.uuid;
    if (fs?.label) p.label = fs.label;
  }
  parts.sort((a, b) => (a.number ?? 0) - (b.number ?? 0));
  return parts;
}

/** Filesystems mountReadOnly knows how to mount without writing. */
export const mountableFilesystems: readonly string[] = ['ext2', 'ext3', 'ext4', 'xfs', 'btrfs', 'vfat'];

/** Whether a filesystem type can be backed up by the file engine. */
export function isMountable(fsType: string | undefined): boolean {
  return !!fsType && mountableFilesystems.includes(fsType);
}

/** Size in bytes of a block device (`blockdev --getsize64`). */
export async function blockDeviceSize(device: string): Promise<number> {
  const { execa } = await loadExeca();
  const r = await execa('blockdev', ['--getsize64', device], { reject: false, env });
  if (r.exitCode !== 0) throw new DeviceError(`blockdev --getsize64 ${device} failed: ${String(r.stderr).trim()}`);
  return Number(String(r.stdout).trim());
}
