/** Back up a directory with the file engine (Freezer's "fs" mode: no volume involved). */
import { statSync } from 'node:fs';
import { resolve } from 'node:path';
import { backupTree } from '../../engines/file/backup.js';
import { dirCacheOf } from '../../engines/file/dircache.js';
import type { Catalog } from '../catalog/catalog.js';
import { NotFoundError, UsageError } from '../errors.js';
import type { Manifest } from '../repository/manifest.js';
import type { Repository } from '../repository/repository.js';
import { log } from '../util/log.js';
import type { Progress } from '../util/progress.js';
import { runBackup } from './backup.js';

export interface PathBackupOptions {
  path: string;
  name?: string;
  excludes?: string[];
  full?: boolean;
  tags?: Record<string, string>;
  host?: string;
  signal: AbortSignal;
  progress: Progress;
}

export async function backupPath(repo: Repository, catalog: Catalog, o: PathBackupOptions): Promise<Manifest> {
  const path = resolve(o.path);
  let st;
  try {
    st = statSync(path);
  } catch {
    throw new NotFoundError(`path ${path} does not exist`);
  }
  if (!st.isDirectory()) throw new UsageError(`path ${path} is not a directory`);
  const name = o.name ?? path;
  return runBackup(
    repo,
    catalog,
    {
      name,
      source: { kind: 'path', path },
      engine: 'file',
      dataTimestamp: new Date().toISOString(),
      tags: o.tags,
      run: (ctx, parentRoot) => backupTree(path, { parentRoot, excludes: o.excludes, dirCache: dirCacheOf(repo, name) }, ctx),
    },
    { host: o.host, signal: o.signal, progress: o.progress, log, full: o.full },
  );
}
