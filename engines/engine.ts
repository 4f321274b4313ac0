/**
 * Engine: the data plane. An engine turns a source (a mounted tree or a block
 * device) into blobs in a repository and back. It never prints; it reports
 * through Progress and Logger and stops promptly when `signal` aborts.
 */
import type { BlobId, BlobStore, BackupStats } from '../src/repository/types.js';
import type { Progress } from '../src/util/progress.js';
import type { Logger } from '../src/util/log.js';

export interface EngineContext {
  repo: BlobStore;
  signal: AbortSignal;
  progress: Progress;
  log: Logger;
}

export interface EngineBackupResult {
  /** File engine: root tree blob. Block engine: block map blob. Goes into the manifest. */
  root: BlobId;
  stats: BackupStats;
  /** Engine-specific facts for the manifest (e.g. device size, block size). */
  info?: Record<string, unknown>;
}
