/**
 * Restore a backup onto a volume (DESIGN.md, "Restore"): a new volume built
 * from the record saved in the manifest, or an existing one under the rules
 * operators know from Freezer:
 *
 * - an available volume is restored into (it must be large enough);
 * - an in-use volume is refused, unless --recreate-vol-on-error: then it is
 *   snapshotted, cloned from that snapshot, and the clone is restored into;
 * - --meta-override applies the saved metadata to the volume restored into;
 * - --remove-old-vol deletes the old volume after a verified restore into a
 *   different one (guarded: the old volume must not be in use).
 *
 * The file engine recreates the filesystem with the same type, label and UUID
 * and writes the files back; the block engine writes the blocks back sparse.
 */
import { rmdirSync } from 'node:fs';
import { join } from 'node:path';
import { restoreDevice } from '../../engines/block/restore.js';
import { restoreTree } from '../../engines/file/restore.js';
import type { Catalog } from '../catalog/catalog.js';
import { CloudError, IntegrityError, NotFoundError, UsageError, throwIfAborted } from '../errors.js';
import type { Manifest } from '../repository/manifest.js';
import { Repository } from '../repository/repository.js';
import { log } from '../util/log.js';
import { mkfs, mountReadWrite, umount } from '../util/mounts.js';
import type { CreateVolumeOptions, VolumeProvider, VolumeRecord } from '../volume/provider.js';
import { type VolumeJobOptions, attachForJob } from './attach.js';
import { CleanupStack } from './cleanup-stack.js';

const GiB = 1024 ** 3;

export interface VolumeRestoreOptions extends VolumeJobOptions {
  /** 'new', or the ID or name of an existing volume. */
  toVolume: string;
  name?: string;
  recreateVolOnError?: boolean;
  metaOverride?: boolean;
  removeOldVol?: boolean;
}

export interface VolumeRestoreResult {
  backupId: string;
  volume: VolumeRecord;
  created: boolean;
  /** The in-use volume's snapshot the clone was made from (--recreate-vol-on-error); kept as the old state. */
  safetySnapshotId?: string;
  removedOldVolumeId?: string;
  warnings: string[];
  engine: 'file' | 'block';
  bytes: number;
}

function neededGiB(m: Manifest): number {
  const devSize = Number((m.engineInfo as { size?: number } | undefined)?.size ?? 0);
  return Math.max(m.volume?.size ?? 1, Math.ceil(devSize / GiB), 1);
}

export async function restoreToVolume(repo: Repository, catalog: Catalog, provider: VolumeProvider, m: Manifest, o: VolumeRestoreOptions): Promise<VolumeRestoreResult> {
  const rec = m.volume;
  if (!rec) throw new UsageError(`backup ${m.id} is of a directory, not a volume: restore it with --target-dir or --tar`);
  const jobId = Repository.newBackupId();
  const cleanup = new CleanupStack(catalog);
  const warnings: string[] = [];
  const wait = (gib: number) => ((o.waitTimeout ?? 300) + 10 * gib) * 1000;
  const size = neededGiB(m);
  let target: VolumeRecord;
  let created = false;
  let safetySnapshotId: string | undefined;
  let old: VolumeRecord | undefined;
  let keep = false;
  let vrow: number | undefined;
  let result: Omit<VolumeRestoreResult, 'volume'> | undefined;
  try {
    if (o.toVolume === 'new') {
      // Recorded (by ID only, never by name: the name may be the original's) so that `permafrost
      // cleanup` deletes a half-restored volume after a crash; the row is closed once it is kept.
      vrow = catalog.planResource(jobId, 'volume', { provider: provider.kind, host: o.host, data: { restoreOf: m.id } });
      target = await createFromRecord(provider, m, rec, size, o.name ?? rec.name, warnings);
      catalog.resourceCreated(vrow, target.id);
      created = true;
    } else {
      old = await provider.getVolume(o.toVolume);
      if (old.status === 'in-use' || old.attachments.length > 0) {
        if (!o.recreateVolOnError)
          throw new CloudError(`volume ${old.name || old.id} is in use: detach it first, restore to a new volume (--to-volume new), or use --recreate-vol-on-error to restore into a clone of it`);
        const srow = catalog.planResource(jobId, 'snapshot', { provider: provider.kind, host: o.host, data: { volumeId: old.id, restoreOf: m.id } });
        const snap = await provider.createSnapshot(old.id, `permafrost-restore-${jobId}-safety`, { force: true, description: `state of ${old.id} before Permafrost restore of ${m.id}` });
        catalog.resourceCreated(srow, snap.id);
        safetySnapshotId = snap.id;
        cleanup.push(`delete safety snapshot ${snap.id} of a failed restore`, async () => {
          if (!keep) await provider.deleteSnapshot(snap.id, { wait: true });
        }, srow);
        await provider.waitSnapshot(snap.id, ['available'], wait(old.size), { signal: o.signal });
        vrow = catalog.planResource(jobId, 'volume', { provider: provider.kind, host: o.host, data: { restoreOf: m.id, snapshotId: snap.id } });
        target = await provider.createVolume({
          name: o.name ?? `${old.name || rec.name}-restored`,
          size: Math.max(size, old.size),
          snapshotId: snap.id,
          description: old.description ?? undefined,
          metadata: old.metadata,
          volumeType: old.volumeType,
          availabilityZone: old.availabilityZone,
        });
        catalog.resourceCreated(vrow, target.id);
        created = true;
        warnings.push(`volume ${old.id} is in use: restored into ${target.id}, a clone of snapshot ${snap.id}`);
      } else {
        if (old.size < size) throw new UsageError(`volume ${old.name || old.id} has ${old.size} GiB, the backup needs ${size} GiB`);
        if (old.status !== 'available') throw new CloudError(`volume ${old.name || old.id} is ${old.status}, not available`);
        target = old;
      }
    }
    const tgt = target;
    if (created)
      cleanup.push(`delete unfinished restored volume ${tgt.id}`, async () => {
        if (!keep) await provider.deleteVolume(tgt.id, { wait: true });
      }, vrow);
    target = await provider.waitVolume(tgt.id, ['available'], wait(size), { signal: o.signal });
    throwIfAborted(o.signal);

    const dev = await attachForJob(provider, catalog, cleanup, target.id, { jobId, host: o.host, readOnly: false, connector: o.connector, scripts: o.scripts, signal: o.signal });
    const ectx = { repo, signal: o.signal, progress: o.progress, log };
    let bytes = 0;
    if (m.engine === 'block') {
      const r = await restoreDevice(m.root, dev.path, { assumeZeroed: created && !safetySnapshotId, verify: Boolean(o.removeOldVol) }, ectx);
      bytes = r.bytesWritten;
    } else {
      const fs = m.filesystem;
      if (!fs) throw new IntegrityError(`backup ${m.id} has no filesystem record`);
      await mkfs(dev.path, { type: fs.type, label: fs.label, uuid: fs.uuid });
      const mp = join(o.stateDir, 'mnt', `restore-${jobId}`);
      const mrow = catalog.planResource(jobId, 'mount', { ref: mp, host: o.host });
      cleanup.push(`remove mount point ${mp}`, async () => rmdirSync(mp));
      await mountReadWrite(dev.path, mp, { fsType: fs.type });
      catalog.resourceCreated(mrow, mp);
      cleanup.push(`unmount ${mp}`, () => umount(mp), mrow);
      const r = (await restoreTree(m.root, mp, { overwrite: true }, ectx)) as { bytes?: number; files?: number; errors?: number } | undefined;
      bytes = r?.bytes ?? 0;
      if (r?.errors) throw new IntegrityError(`${r.errors} entries could not be restored`);
    }
    throwIfAborted(o.signal);

    if (rec.bootable && !target.bootable) await provider.setBootable(target.id, true);
    if (created || o.metaOverride) await provider.updateMetadata(target.id, { ...rec.metadata, 'permafrost:restored-from': m.id }, Boolean(o.metaOverride));
    keep = true;
    let removedOldVolumeId: string | undefined;
    if (o.removeOldVol) {
      if (!old || old.id === target.id) warnings.push('--remove-old-vol ignored: the backup was restored into the old volume itself');
      else {
        const now = await provider.getVolume(old.id);
        if (now.status === 'in-use') warnings.push(`--remove-old-vol: ${old.id} is still in use; not deleted (detach it and delete it yourself)`);
        else {
          await provider.deleteVolume(old.id);
          removedOldVolumeId = old.id;
        }
      }
    }
    result = { backupId: m.id, created, safetySnapshotId, removedOldVolumeId, warnings, engine: m.engine, bytes };
  } finally {
    const failed = await cleanup.unwind();
    if (failed.length && result) warnings.push(`${failed.length} cleanup steps failed (${failed.join('; ')}); run "permafrost cleanup"`);
  }
  // The record as it is now: detached (available), with the metadata and flags just set.
  return { ...result, volume: await provider.getVolume(target.id) };
}

/** A new volume from the saved record; type and zone only where they still exist. */
async function createFromRecord(provider: VolumeProvider, m: Manifest, rec: VolumeRecord, size: number, name: string, warnings: string[]): Promise<VolumeRecord> {
  const base: CreateVolumeOptions & { sizeBytes?: number } = { name, size, description: rec.description ?? `restored from Permafrost backup ${m.id}`, metadata: { ...rec.metadata, 'permafrost:restored-from': m.id } };
  // The local provider takes exact sizes: a 256 MiB volume comes back as 256 MiB, not as a whole GiB
  // (a block backup of a partitioned volume then keeps its GPT backup header at the end).
  const exact = Number((m.engineInfo as { size?: number } | undefined)?.size ?? (rec as { sizeBytes?: number }).sizeBytes ?? 0);
  if (provider.kind === 'local' && Number.isSafeInteger(exact) && exact > 0 && exact % 512 === 0 && exact <= size * GiB) base.sizeBytes = exact;
  try {
    return await provider.createVolume({ ...base, volumeType: rec.volumeType, availabilityZone: rec.availabilityZone });
  } catch (err) {
    const msg = (err as Error).message;
    // Cinder answers an unknown volume type with 404 (NotFoundError), an unknown zone with 400.
    if (!(err instanceof CloudError || err instanceof NotFoundError) || !/type|zone/i.test(msg)) throw err;
    const w = `volume type ${rec.volumeType ?? '-'} or zone ${rec.availabilityZone ?? '-'} of the saved record is not available here (${msg}); creating with the cloud's defaults`;
    log.warn(w);
    warnings.push(w);
    return provider.createVolume(base);
  }
}
