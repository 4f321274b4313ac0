/**
 * The commit protocol every backup follows, whatever its source:
 * catalog row `running` → engine writes blobs → flush (packs → index) →
 * manifest → catalog row `complete`. Any failure or interruption before the
 * manifest leaves no backup (the row becomes `failed` with its reason).
 */
import { hostname } from 'node:os';
import type { EngineBackupResult, EngineContext } from '../../engines/engine.js';
import type { Catalog } from '../catalog/catalog.js';
import { InterruptedError, throwIfAborted } from '../errors.js';
import type { BackupSource, FilesystemInfo, Manifest } from '../repository/manifest.js';
import { Repository } from '../repository/repository.js';
import type { BlobId } from '../repository/types.js';
import type { Logger } from '../util/log.js';
import type { Progress } from '../util/progress.js';
import type { VolumeRecord } from '../volume/provider.js';
import { syncCatalog } from './catalog-sync.js';

export interface BackupPlan {
  /** The series: parents are chosen among backups of the same name. */
  name: string;
  source: BackupSource;
  engine: 'file' | 'block';
  /** When the data was captured (snapshot creation time, else now). */
  dataTimestamp: string;
  volume?: VolumeRecord;
  filesystem?: FilesystemInfo;
  partitionTable?: string;
  tags?: Record<string, string>;
  /** Run the engine; `parentRoot` is the parent's root of the same engine, if any. */
  run(ctx: EngineContext, parentRoot?: BlobId): Promise<EngineBackupResult>;
}

export interface BackupRunOptions {
  host?: string;
  signal: AbortSignal;
  progress: Progress;
  log: Logger;
  /** Use this ID (when temporary resources were already recorded under it). */
  backupId?: string;
  /** Ignore any parent: read everything. */
  full?: boolean;
}

/** Run one backup to completion; returns its committed manifest. */
export async function runBackup(repo: Repository, catalog: Catalog, plan: BackupPlan, opts: BackupRunOptions): Promise<Manifest> {
  const id = opts.backupId ?? Repository.newBackupId();
  const host = opts.host ?? hostname();
  const startedAt = new Date().toISOString();
  await syncCatalog(repo, catalog);
  const parent = opts.full ? undefined : catalog.findParent(repo.config.id, plan.name, plan.dataTimestamp, plan.engine);
  let parentRoot: BlobId | undefined;
  if (parent) {
    try {
      parentRoot = (await repo.loadManifest(parent.id)).root;
    } catch (err) {
      opts.log.warn(`parent ${parent.id} unreadable (${(err as Error).message}); backing up in full`);
    }
  }
  const source = plan.source.kind === 'path' ? plan.source.path : plan.source.volumeId;
  if (!catalog.getBackup(id))
    catalog.startBackup({
      id,
      repoId: repo.config.id,
      repoUrl: repo.storage.location,
      name: plan.name,
      engine: plan.engine,
      sourceKind: plan.source.kind,
      source,
      provider: plan.source.kind === 'volume' ? plan.source.provider : null,
      volumeId: plan.source.kind === 'volume' ? plan.source.volumeId : null,
      snapshotId: plan.source.kind === 'volume' ? (plan.source.snapshotId ?? null) : null,
      parentId: parent?.id ?? null,
      dataTimestamp: plan.dataTimestamp,
      startedAt,
      host,
      pid: process.pid,
    });
  try {
    opts.log.info(`backup ${id} of ${plan.name}: ${parent ? `incremental on ${parent.id}` : 'full'} (${plan.engine} engine)`);
    const result = await plan.run({ repo, signal: opts.signal, progress: opts.progress, log: opts.log }, parentRoot);
    throwIfAborted(opts.signal);
    opts.progress.message('committing');
    opts.log.debug(`backup ${id}: committing: last pack, then the index`);
    await repo.flush();
    throwIfAborted(opts.signal);
    const manifest: Manifest = {
      version: 1,
      id,
      name: plan.name,
      host,
      engine: plan.engine,
      root: result.root,
      source: plan.source,
      ...(plan.volume ? { volume: plan.volume } : {}),
      ...(plan.filesystem ? { filesystem: plan.filesystem } : {}),
      ...(plan.partitionTable ? { partitionTable: plan.partitionTable } : {}),
      ...(parent ? { parent: parent.id } : {}),
      dataTimestamp: plan.dataTimestamp,
      startedAt,
      finishedAt: new Date().toISOString(),
      stats: result.stats,
      tags: plan.tags ?? {},
      ...(result.info ? { engineInfo: result.info } : {}),
    };
    opts.log.debug(`backup ${id}: committing: manifest`);
    await repo.saveManifest(manifest);
    catalog.completeBackup(manifest, repo.config.id, repo.storage.location);
    return manifest;
  } catch (err) {
    const reason = opts.signal.aborted ? 'interrupted' : err instanceof Error ? err.message : String(err);
    catalog.failBackup(id, reason);
    if (opts.signal.aborted && !(err instanceof InterruptedError)) throw new InterruptedError('interrupted: nothing was committed', { cause: err });
    throw err;
  } finally {
    opts.progress.done();
  }
}
