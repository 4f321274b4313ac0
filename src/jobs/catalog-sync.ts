/**
 * Keep the catalog in step with the repository, which is the truth:
 * manifests the catalog lacks are added as complete, complete rows whose
 * manifest is gone are dropped. `rebuild` starts from nothing.
 */
import type { Catalog } from '../catalog/catalog.js';
import type { Repository } from '../repository/repository.js';
import { log } from '../util/log.js';

export interface SyncResult {
  added: number;
  removed: number;
  unreadable: string[];
  total: number;
}

export async function syncCatalog(repo: Repository, catalog: Catalog, rebuild = false): Promise<SyncResult> {
  if (rebuild) catalog.db.prepare(`DELETE FROM backups WHERE repo_id = ? AND status = 'complete'`).run(repo.config.id);
  const ids = await repo.listBackupIds();
  const present = new Set(ids);
  const missing = ids.filter((id) => catalog.getBackup(id)?.status !== 'complete');
  const unreadable: string[] = [];
  const manifests = await repo.loadManifests((id, err) => {
    unreadable.push(id);
    log.warn(`manifest ${id} unreadable: ${(err as Error).message}`);
  }, missing);
  const tx = catalog.db.transaction(() => {
    for (const m of manifests) catalog.completeBackup(m, repo.config.id, repo.storage.location);
  });
  tx();
  const removed = catalog.forgetMissing(repo.config.id, present);
  return { added: manifests.length, removed, unreadable, total: ids.length };
}
