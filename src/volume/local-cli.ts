/**
 * Helpers behind `permafrost volume create|list|delete`: create a volume with a
 * filesystem on it (create → attach read-write through the connector → mkfs →
 * detach), list volumes as rows, delete with Cinder's rules. They work with any
 * VolumeProvider; with the local one they also accept sizes below 1 GiB.
 */
import os from 'node:os';
import { connectorFor } from '../connectors/index.js';
import { connectorProperties } from '../connectors/properties.js';
import type { AttachedDevice } from '../connectors/connector.js';
import type { ScriptConnectorOptions } from '../connectors/script.js';
import { UsageError } from '../errors.js';
import { log } from '../util/log.js';
import { mkfs, mkfsCommand } from '../util/mounts.js';
import { GiB, type LocalCreateVolumeOptions } from './local.js';
import type { Attachment, VolumeProvider, VolumeRecord } from './provider.js';

const UNITS: Record<string, number> = {
  '': 1,
  b: 1,
  k: 1024,
  kb: 1024,
  kib: 1024,
  m: 1024 ** 2,
  mb: 1024 ** 2,
  mib: 1024 ** 2,
  g: GiB,
  gb: GiB,
  gib: GiB,
  t: 1024 ** 4,
  tb: 1024 ** 4,
  tib: 1024 ** 4,
};

/** Parse a size such as "2G", "512M", "1.5GiB" or "1073741824" (binary units) into bytes. */
export function parseSize(text: string | number): number {
  if (typeof text === 'number') {
    if (!Number.isFinite(text) || text <= 0) throw new UsageError(`invalid size ${text}`);
    return Math.round(text);
  }
  const m = /^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$/.exec(text);
  const unit = m ? UNITS[m[2]!.toLowerCase()] : undefined;
  if (!m || unit === undefined) throw new UsageError(`invalid size '${text}' (examples: 2G, 512M, 1.5GiB)`);
  const bytes = Math.round(Number(m[1]) * unit);
  if (bytes <= 0) throw new UsageError(`invalid size '${text}'`);
  return bytes;
}

/** What `volume create` asks for. */
export interface CreateVolumeWithFsOptions {
  name: string;
  /** Bytes, or a size string ("2G"). Cinder volumes are rounded up to whole GiB. */
  size: string | number;
  /** Filesystem to create (ext4, xfs, btrfs, vfat, ...), or none/undefined for a blank volume. */
  fs?: string;
  label?: string;
  uuid?: string;
  description?: string;
  metadata?: Record<string, string>;
  volumeType?: string | null;
  availabilityZone?: string | null;
  /** Options of the connector used to attach the volume for mkfs. */
  connector?: ScriptConnectorOptions;
  /** Wait for the volume to become available; default scales with size. */
  timeoutMs?: number;
}

/**
 * Create a volume, and with `fs`, put a filesystem on it: attach it read-write
 * to this node, mkfs, detach. The volume is deleted again when that fails.
 */
export async function createVolumeWithFilesystem(provider: VolumeProvider, o: CreateVolumeWithFsOptions): Promise<VolumeRecord> {
  const bytes = parseSize(o.size);
  const fs = o.fs && o.fs !== 'none' ? o.fs : undefined;
  if (fs) mkfsCommand('/dev/null', { type: fs }); // unknown type: UsageError before creating anything
  const req: LocalCreateVolumeOptions = {
    name: o.name,
    size: Math.max(1, Math.ceil(bytes / GiB)),
    description: o.description,
    metadata: o.metadata,
    volumeType: o.volumeType,
    availabilityZone: o.availabilityZone,
  };
  if (provider.kind === 'local') req.sizeBytes = Math.ceil(bytes / 512) * 512;
  const created = await provider.createVolume(req);
  try {
    await provider.waitVolume(created.id, ['available'], o.timeoutMs);
    if (fs) await formatVolume(provider, created.id, { type: fs, label: o.label, uuid: o.uuid, connector: o.connector });
    return await provider.getVolume(created.id);
  } catch (err) {
    await provider
      .waitVolume(created.id, ['available', 'error'], 60_000)
      .then(() => provider.deleteVolume(created.id))
      .catch((e: unknown) => log.warn(`could not delete volume ${created.id} after a failed create: ${String((e as Error)?.message ?? e)}`));
    throw err;
  }
}

/** Attach a volume read-write to this node, create a filesystem on it, detach. */
export async function formatVolume(
  provider: VolumeProvider,
  volumeId: string,
  o: { type: string; label?: string; uuid?: string; connector?: ScriptConnectorOptions },
): Promise<void> {
  let attachment: Attachment | undefined;
  let device: AttachedDevice | undefined;
  let failed = false;
  const connector = (type: string) => connectorFor(type, o.connector);
  try {
    attachment = await provider.attach(volumeId, connectorProperties({ host: os.hostname() }));
    device = await connector(attachment.connectionInfo.driver_volume_type).attach(attachment.connectionInfo, { readOnly: false });
    await mkfs(device.path, { type: o.type, label: o.label, uuid: o.uuid });
  } catch (err) {
    failed = true;
    throw err;
  } finally {
    // Unwind in reverse; a cleanup error never hides the first error.
    const steps: [string, () => Promise<void>][] = [];
    if (device && attachment) {
      const dev = device;
      const type = attachment.connectionInfo.driver_volume_type;
      steps.push([`detach ${dev.path}`, () => connector(type).detach(dev)]);
    }
    if (attachment) {
      const id = attachment.id;
      steps.push([`delete attachment ${id}`, () => provider.detach(volumeId, id)]);
    }
    let cleanupError: unknown;
    for (const [what, step] of steps) {
      try {
        await step();
      } catch (err) {
        log.warn(`cleanup: ${what}: ${String((err as Error)?.message ?? err)}`);
        cleanupError ??= err;
      }
    }
    if (!failed && cleanupError) throw cleanupError;
  }
}

/** One row of `volume list`. */
export interface VolumeRow {
  id: string;
  name: string;
  size: number;
  status: string;
  volumeType: string | null;
  bootable: boolean;
  attachedTo: string;
}

/** Rows for `volume list`, sorted by name. */
export async function listVolumeRows(provider: VolumeProvider): Promise<VolumeRow[]> {
  const vols = await provider.listVolumes();
  return vols
    .map((v) => ({
      id: v.id,
      name: v.name,
      size: v.size,
      status: v.status,
      volumeType: v.volumeType ?? null,
      bootable: v.bootable,
      attachedTo: v.attachments.map((a) => a.serverId ?? a.hostName ?? a.attachmentId ?? '').filter(Boolean).join(','),
    }))
    .sort((a, b) => a.name.localeCompare(b.name) || a.id.localeCompare(b.id));
}

/**
 * `volume delete`: by ID or name. Refused with CloudError when attached or
 * when it has snapshots, unless `withSnapshots` deletes those first.
 */
export async function deleteVolumeByRef(
  provider: VolumeProvider & { listSnapshots?: (volumeId?: string) => Promise<{ id: string }[]> },
  idOrName: string,
  o: { withSnapshots?: boolean } = {},
): Promise<string> {
  const v = await provider.getVolume(idOrName);
  if (o.withSnapshots && provider.listSnapshots) {
    for (const s of await provider.listSnapshots(v.id)) await provider.deleteSnapshot(s.id);
  }
  await provider.deleteVolume(v.id);
  return v.id;
}
