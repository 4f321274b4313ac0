/**
 * Backup manifests: snapshots/<backup id>. A backup exists if and only if its
 * manifest exists; it carries everything a restore needs, including the
 * volume record, so disaster recovery works from the repository alone.
 */
import { IntegrityError } from '../errors.js';
import type { VolumeRecord } from '../volume/provider.js';
import type { BackupStats, BlobId } from './types.js';

export interface FilesystemInfo {
  type: string;
  uuid?: string;
  label?: string;
  /** Partition (e.g. "1") when the filesystem came from a partition of the volume. */
  partition?: string;
}

export type BackupSource =
  | { kind: 'path'; path: string }
  | { kind: 'volume'; provider: string; volumeId: string; snapshotId?: string; mode: 'hot' | 'cold' | 'snapshot' };

export interface Manifest {
  version: 1;
  id: string;
  /** Backup name: --name for paths, the volume's id for volumes (the series parents are chosen in). */
  name: string;
  host: string;
  engine: 'file' | 'block';
  root: BlobId;
  source: BackupSource;
  volume?: VolumeRecord;
  filesystem?: FilesystemInfo;
  /** Partition layout for partitioned volumes (sfdisk dump) — block engine restores it with the data. */
  partitionTable?: string;
  parent?: string;
  /** When the data was captured: the snapshot's creation time, else the backup's start. ISO 8601. */
  dataTimestamp: string;
  startedAt: string;
  finishedAt: string;
  stats: BackupStats;
  tags: Record<string, string>;
  engineInfo?: Record<string, unknown>;
}

export function manifestKey(id: string): string {
  return `snapshots/${id}`;
}

const ID_RE = /^[0-9a-f]{16}$/;

export function isBackupId(id: string): boolean {
  return ID_RE.test(id);
}

/** Reject manifests that are malformed or hostile before anything uses them. */
export function validateManifest(m: unknown, id: string): Manifest {
  const v = m as Manifest;
  const bad = (why: string): never => {
    throw new IntegrityError(`manifest ${id}: ${why}`);
  };
  if (!v || typeof v !== 'object') bad('not an object');
  if (v.version !== 1) bad(`unsupported version ${String(v.version)}`);
  if (v.id !== id) bad('id does not match its name');
  if (v.engine !== 'file' && v.engine !== 'block') bad('unknown engine');
  if (typeof v.root !== 'string' || !/^[0-9a-f]{64}$/.test(v.root)) bad('bad root');
  if (typeof v.name !== 'string' || v.name.length === 0 || v.name.length > 1024) bad('bad name');
  if (typeof v.dataTimestamp !== 'string' || Number.isNaN(Date.parse(v.dataTimestamp))) bad('bad data timestamp');
  if (!v.source || (v.source.kind !== 'path' && v.source.kind !== 'volume')) bad('bad source');
  if (v.parent !== undefined && (typeof v.parent !== 'string' || !ID_RE.test(v.parent))) bad('bad parent');
  if (!v.stats || typeof v.stats !== 'object') bad('no statistics');
  return v;
}
