/**
 * Batch backups: the volumes of a project, of all projects, of volume groups,
 * or those selected by metadata — a bounded number at a time. One volume's
 * failure never stops the others; the result says which succeeded.
 */
import pLimit from 'p-limit';
import type { Catalog } from '../catalog/catalog.js';
import { PermafrostError, UsageError } from '../errors.js';
import type { Manifest } from '../repository/manifest.js';
import type { Repository } from '../repository/repository.js';
import { log } from '../util/log.js';
import { noProgress } from '../util/progress.js';
import type { VolumeProvider, VolumeRecord } from '../volume/provider.js';
import { TEMPORARY_KEY } from '../volume/temporary.js';
import { type VolumeBackupOptions, backupVolume } from './backup-volume.js';

export interface Selection {
  project?: boolean;
  allTenants?: boolean;
  groupIds?: string[];
  /** Only volumes whose metadata has all these pairs. */
  select?: Record<string, string>;
  /** Skip volumes whose metadata has any of these pairs. */
  skip?: Record<string, string>;
}

export interface BatchResult {
  volumeId: string;
  volumeName: string;
  ok: boolean;
  backupId?: string;
  manifest?: Manifest;
  error?: { code: string; message: string; exitCode: number };
  durationMs: number;
}

/** The volumes a selection names (never our own temporary volumes). */
export async function selectVolumes(provider: VolumeProvider, s: Selection): Promise<VolumeRecord[]> {
  let vols: VolumeRecord[];
  if (s.groupIds?.length) {
    const seen = new Map<string, VolumeRecord>();
    for (const g of s.groupIds) for (const v of await provider.listVolumes({ groupId: g, allTenants: s.allTenants, metadata: s.select })) seen.set(v.id, v);
    vols = [...seen.values()];
  } else if (s.project || s.allTenants || s.select) {
    vols = await provider.listVolumes({ allTenants: s.allTenants, metadata: s.select });
  } else throw new UsageError('no volumes selected');
  return vols.filter((v) => {
    if (v.metadata[TEMPORARY_KEY] === 'true') return false;
    if (s.select && !Object.entries(s.select).every(([k, val]) => v.metadata[k] === val)) return false;
    if (s.skip && Object.entries(s.skip).some(([k, val]) => v.metadata[k] === val)) return false;
    return true;
  });
}

export async function backupBatch(
  repo: Repository,
  catalog: Catalog,
  provider: VolumeProvider,
  volumes: VolumeRecord[],
  o: Omit<VolumeBackupOptions, 'volume' | 'progress'> & { concurrency: number },
  onResult?: (r: BatchResult) => void,
): Promise<BatchResult[]> {
  const limit = pLimit(Math.max(1, o.concurrency));
  return Promise.all(
    volumes.map((v) =>
      limit(async (): Promise<BatchResult> => {
        const t0 = Date.now();
        let r: BatchResult;
        if (o.signal.aborted) r = { volumeId: v.id, volumeName: v.name, ok: false, error: { code: 'interrupted', message: 'not started: interrupted', exitCode: 130 }, durationMs: 0 };
        else
          try {
            const m = await backupVolume(repo, catalog, provider, { ...o, volume: v.id, progress: noProgress });
            r = { volumeId: v.id, volumeName: v.name, ok: true, backupId: m.id, manifest: m, durationMs: Date.now() - t0 };
          } catch (err) {
            const pe = err instanceof PermafrostError ? err : undefined;
            r = { volumeId: v.id, volumeName: v.name, ok: false, error: { code: pe?.code ?? 'failure', message: (err as Error).message, exitCode: pe?.exitCode ?? 1 }, durationMs: Date.now() - t0 };
            log.error(`volume ${v.name || v.id}: ${r.error!.message}`);
          }
        onResult?.(r);
        return r;
      }),
    ),
  );
}
