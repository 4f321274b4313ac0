/**
 * Backup of one volume (DESIGN.md, "Backup of one volume"):
 * record → describe → snapshot (force when in use) → temporary volume →
 * attach → file engine on a read-only mount (or block engine) → commit →
 * unwind the cleanup stack, whatever happened.
 *
 * The job drives the cloud only through VolumeProvider and the node only
 * through Connector, so it is the same for the local provider and Cinder.
 */
import { mkdirSync, rmdirSync } from 'node:fs';
import { join } from 'node:path';
import { backupTree } from '../../engines/file/backup.js';
import { dirCacheOf } from '../../engines/file/dircache.js';
import { backupDevice } from '../../engines/block/backup.js';
import type { Catalog } from '../catalog/catalog.js';
import { CloudError, DeviceError, UsageError, throwIfAborted } from '../errors.js';
import type { FilesystemInfo, Manifest } from '../repository/manifest.js';
import { Repository } from '../repository/repository.js';
import { detectFilesystem, isMountable } from '../util/fs-detect.js';
import { mountReadOnly, umount } from '../util/mounts.js';
import { log } from '../util/log.js';
import type { Progress } from '../util/progress.js';
import type { SnapshotRecord, VolumeProvider, VolumeRecord } from '../volume/provider.js';
import { TEMP_PREFIX, tempMetadata } from '../volume/temporary.js';
import { type VolumeJobOptions, attachForJob } from './attach.js';
import { runBackup } from './backup.js';
import { CleanupStack } from './cleanup-stack.js';

export interface VolumeBackupOptions extends VolumeJobOptions {
  volume: string;
  engine?: 'file' | 'block' | 'auto';
  cold?: boolean;
  snapshotId?: string;
  full?: boolean;
  tags?: Record<string, string>;
}

function waitMs(o: VolumeBackupOptions, sizeGiB: number): number {
  return ((o.waitTimeout ?? 300) + 10 * Math.max(1, sizeGiB)) * 1000;
}

/** The job's progress, with its phase messages ("committing", ...) also logged at debug level. */
function phaseLogged(p: Progress, jobId: string): Progress {
  return {
    setTotal: (bytes, items) => p.setTotal(bytes, items),
    advance: (bytes, items) => p.advance(bytes, items),
    message: (text) => {
      log.debug(`backup ${jobId}: ${text}`);
      p.message(text);
    },
    done: () => p.done(),
  };
}

/** Back up one volume; always removes what it created. */
export async function backupVolume(repo: Repository, catalog: Catalog, provider: VolumeProvider, o: VolumeBackupOptions): Promise<Manifest> {
  const jobId = Repository.newBackupId();
  const cleanup = new CleanupStack(catalog);
  const meta = tempMetadata(o.host, jobId);
  let firstError: unknown;
  let started = false;
  // The backup's catalog row exists before the first temporary resource, so a run killed at any
  // point leaves a row that `permafrost cleanup` marks failed (runBackup reuses it).
  const recordStart = (volumeId: string, snapshotId?: string): void => {
    catalog.startBackup({
      id: jobId,
      repoId: repo.config.id,
      repoUrl: repo.storage.location,
      name: volumeId,
      engine: o.engine === 'block' ? 'block' : null,
      sourceKind: 'volume',
      source: volumeId,
      provider: provider.kind,
      volumeId,
      snapshotId: snapshotId ?? null,
      startedAt: new Date().toISOString(),
      host: o.host,
      pid: process.pid,
    });
    started = true;
  };
  try {
    const vol = await provider.getVolume(o.volume);
    throwIfAborted(o.signal);

    // Snapshot: an existing one, or a temporary one (forced when in use = hot backup).
    let snap: SnapshotRecord;
    let mode: 'hot' | 'cold' | 'snapshot';
    if (o.snapshotId) {
      snap = await provider.getSnapshot(o.snapshotId);
      if (snap.volumeId !== vol.id) throw new UsageError(`snapshot ${snap.id} belongs to volume ${snap.volumeId}, not ${vol.id}`);
      if (snap.status !== 'available') throw new CloudError(`snapshot ${snap.id} is ${snap.status}, not available`);
      mode = 'snapshot';
      recordStart(vol.id, snap.id);
    } else {
      const inUse = vol.status === 'in-use';
      if (o.cold && inUse) throw new UsageError(`volume ${vol.name || vol.id} is in use: a cold backup needs it detached (available); drop --cold for a crash-consistent hot backup`);
      if (vol.status !== 'available' && vol.status !== 'in-use') throw new CloudError(`volume ${vol.name || vol.id} is ${vol.status}; it must be available or in-use to be backed up`);
      mode = inUse ? 'hot' : 'cold';
      recordStart(vol.id);
      const name = `${TEMP_PREFIX}${jobId}-snap`;
      const row = catalog.planResource(jobId, 'snapshot', { provider: provider.kind, name, host: o.host, data: { volumeId: vol.id } });
      const created = await provider.createSnapshot(vol.id, name, { force: inUse, metadata: meta, description: `Permafrost backup ${jobId}` });
      catalog.resourceCreated(row, created.id);
      log.debug(`backup ${jobId}: creating snapshot ${created.id} of volume ${vol.id} (${mode})`);
      cleanup.push(`delete snapshot ${created.id}`, () => provider.deleteSnapshot(created.id, { wait: true }), row);
      snap = await provider.waitSnapshot(created.id, ['available'], waitMs(o, vol.size), { signal: o.signal });
    }
    throwIfAborted(o.signal);

    // Temporary volume from the snapshot.
    const tmpName = `${TEMP_PREFIX}${jobId}-vol`;
    const vrow = catalog.planResource(jobId, 'volume', { provider: provider.kind, name: tmpName, host: o.host, data: { snapshotId: snap.id } });
    const tmp = await provider.createVolume({ name: tmpName, size: vol.size, snapshotId: snap.id, metadata: meta, description: `Permafrost backup ${jobId} of ${vol.id}`, volumeType: vol.volumeType, availabilityZone: vol.availabilityZone });
    catalog.resourceCreated(vrow, tmp.id);
    log.debug(`backup ${jobId}: creating temporary volume ${tmp.id} from snapshot ${snap.id}`);
    cleanup.push(`delete temporary volume ${tmp.id}`, async () => {
      // Wait until it is gone: on RBD a clone keeps its snapshot busy, whose delete would fail silently.
      await provider.deleteVolume(tmp.id, { wait: true });
    }, vrow);
    await provider.waitVolume(tmp.id, ['available'], waitMs(o, vol.size), { signal: o.signal });
    throwIfAborted(o.signal);
    log.debug(`backup ${jobId}: attaching temporary volume ${tmp.id} read-only`);

    // Attach to this node, read-only.
    const dev = await attachForJob(provider, catalog, cleanup, tmp.id, {
      jobId,
      host: o.host,
      readOnly: true,
      connector: o.connector,
      scripts: o.scripts,
      signal: o.signal,
    });
    throwIfAborted(o.signal);

    // Choose the engine.
    const fs = o.engine === 'block' ? undefined : await detectFilesystem(dev.path);
    let engine: 'file' | 'block' = o.engine === 'block' ? 'block' : 'file';
    let filesystem: FilesystemInfo | undefined;
    if (engine === 'file') {
      // swap, LVM2_member, crypto_LUKS, ... are signatures, not filesystems the file engine can mount.
      if (!isMountable(fs?.type) || fs?.ptType) {
        const what = fs?.ptType ? `a partition table (${fs.ptType})` : fs?.type ? `${fs.type}, not a filesystem this node mounts` : 'no filesystem this node can mount';
        if (o.engine === 'file') throw new UsageError(`volume ${vol.id} has ${what}; use --engine block`);
        log.info(`volume ${vol.name || vol.id}: ${fs?.ptType ? `partition table (${fs.ptType})` : fs?.type ? `${fs.type}, not mountable` : 'no mountable filesystem'}, using the block engine`);
        engine = 'block';
      } else filesystem = { type: fs!.type!, uuid: fs!.uuid, label: fs!.label };
    }

    let mountpoint: string | undefined;
    if (engine === 'file') {
      const mp = join(o.stateDir, 'mnt', jobId);
      mountpoint = mp;
      mkdirSync(mp, { recursive: true });
      const mrow = catalog.planResource(jobId, 'mount', { ref: mp, host: o.host });
      cleanup.push(`remove mount point ${mp}`, async () => rmdirSync(mp));
      try {
        await mountReadOnly(dev.path, mp, filesystem!.type);
        catalog.resourceCreated(mrow, mp);
        cleanup.push(`unmount ${mp}`, () => umount(mp), mrow);
      } catch (err) {
        // auto: a filesystem this kernel will not mount (damaged, unsupported features) is still backed up, as blocks.
        catalog.resourceRemoved(mrow); // not mounted (the mount point goes with the step above)
        if (o.engine === 'file' || !(err instanceof DeviceError)) throw err;
        log.warn(`volume ${vol.name || vol.id}: ${err.message}; using the block engine`);
        engine = 'block';
        filesystem = undefined;
        mountpoint = undefined;
      }
    }

    const record: VolumeRecord = { ...vol };
    return await runBackup(
      repo,
      catalog,
      {
        name: vol.id,
        source: { kind: 'volume', provider: provider.kind, volumeId: vol.id, ...(o.snapshotId ? { snapshotId: snap.id } : {}), mode },
        engine,
        dataTimestamp: snap.createdAt,
        volume: record,
        filesystem,
        tags: o.tags,
        run: (ctx, parentRoot) =>
          engine === 'file' ? backupTree(mountpoint!, { parentRoot, dirCache: dirCacheOf(repo, vol.id) }, ctx) : backupDevice(dev.path, { parentRoot }, ctx),
      },
      { host: o.host, signal: o.signal, progress: phaseLogged(o.progress, jobId), log, backupId: jobId, full: o.full },
    );
  } catch (err) {
    firstError = err;
    // Failed before runBackup took over the row (it marks its own failures): record why.
    if (started) catalog.failBackup(jobId, o.signal.aborted ? 'interrupted' : err instanceof Error ? err.message : String(err));
    throw err;
  } finally {
    const failed = await cleanup.unwind();
    if (failed.length && !firstError) log.warn(`backup ${jobId}: ${failed.length} cleanup steps failed; run "permafrost cleanup"`);
  }
}
