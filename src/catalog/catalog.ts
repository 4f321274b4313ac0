/**
 * The catalog: a SQLite cache of what this agent knows — backups (running,
 * failed with a reason, complete with statistics) and the temporary resources
 * jobs create (recorded before they are created, so `permafrost cleanup` can
 * remove what a crashed run left behind).
 *
 * The repository is the truth: a backup is `complete` here only after its
 * manifest was committed, and `catalog rebuild` recreates every complete row
 * from the repository's manifests alone.
 */
import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import Database from 'better-sqlite3';
import type { Manifest } from '../repository/manifest.js';
import type { BackupStats } from '../repository/types.js';

export type BackupStatus = 'running' | 'complete' | 'failed';

export interface BackupRow {
  id: string;
  repoId: string;
  repoUrl: string;
  name: string;
  engine: string | null;
  sourceKind: string;
  source: string;
  provider: string | null;
  volumeId: string | null;
  snapshotId: string | null;
  parentId: string | null;
  dataTimestamp: string | null;
  startedAt: string;
  finishedAt: string | null;
  status: BackupStatus;
  reason: string | null;
  host: string | null;
  pid: number | null;
  stats: BackupStats | null;
}

export type ResourceKind = 'snapshot' | 'volume' | 'attachment' | 'device' | 'mount' | 'directory' | 'process';

export interface ResourceRow {
  id: number;
  jobId: string;
  kind: ResourceKind;
  provider: string | null;
  ref: string | null;
  name: string | null;
  data: Record<string, unknown>;
  state: 'planned' | 'created' | 'removed';
  createdAt: string;
  host: string | null;
  pid: number | null;
}

const SCHEMA = `
CREATE TABLE IF NOT EXISTS backups (
  id TEXT PRIMARY KEY,
  repo_id TEXT NOT NULL,
  repo_url TEXT NOT NULL,
  name TEXT NOT NULL,
  engine TEXT,
  source_kind TEXT NOT NULL,
  source TEXT NOT NULL,
  provider TEXT,
  volume_id TEXT,
  snapshot_id TEXT,
  parent_id TEXT,
  data_timestamp TEXT,
  started_at TEXT NOT NULL,
  finished_at TEXT,
  status TEXT NOT NULL CHECK (status IN ('running','complete','failed')),
  reason TEXT,
  host TEXT,
  pid INTEGER,
  stats TEXT
);
CREATE INDEX IF NOT EXISTS backups_series ON backups (repo_id, name, status, data_timestamp);
CREATE TABLE IF NOT EXISTS resources (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  job_id TEXT NOT NULL,
  kind TEXT NOT NULL,
  provider TEXT,
  ref TEXT,
  name TEXT,
  data TEXT NOT NULL DEFAULT '{}',
  state TEXT NOT NULL CHECK (state IN ('planned','created','removed')),
  created_at TEXT NOT NULL,
  removed_at TEXT,
  host TEXT,
  pid INTEGER
);
CREATE INDEX IF NOT EXISTS resources_open ON resources (state, job_id);
`;

/* eslint-disable @typescript-eslint/no-explicit-any */
function toBackup(r: any): BackupRow {
  return {
    id: r.id,
    repoId: r.repo_id,
    repoUrl: r.repo_url,
    name: r.name,
    engine: r.engine,
    sourceKind: r.source_kind,
    source: r.source,
    provider: r.provider,
    volumeId: r.volume_id,
    snapshotId: r.snapshot_id,
    parentId: r.parent_id,
    dataTimestamp: r.data_timestamp,
    startedAt: r.started_at,
    finishedAt: r.finished_at,
    status: r.status,
    reason: r.reason,
    host: r.host,
    pid: r.pid,
    stats: r.stats ? JSON.parse(r.stats) : null,
  };
}

function toResource(r: any): ResourceRow {
  return {
    id: r.id,
    jobId: r.job_id,
    kind: r.kind,
    provider: r.provider,
    ref: r.ref,
    name: r.name,
    data: JSON.parse(r.data),
    state: r.state,
    createdAt: r.created_at,
    host: r.host,
    pid: r.pid,
  };
}

export class Catalog {
  readonly db: Database.Database;

  constructor(readonly path: string) {
    if (path !== ':memory:') mkdirSync(dirname(path), { recursive: true });
    this.db = new Database(path, { timeout: 10_000 });
    this.db.pragma('journal_mode = WAL');
    this.db.pragma('synchronous = NORMAL');
    this.db.exec(SCHEMA);
  }

  close(): void {
    this.db.close();
  }

  // ---- backups -----------------------------------------------------------

  /** Record a backup that is starting (status running). */
  startBackup(row: Omit<BackupRow, 'status' | 'finishedAt' | 'reason' | 'stats' | 'dataTimestamp' | 'parentId' | 'engine'> & Partial<BackupRow>): void {
    this.db
      .prepare(
        `INSERT INTO backups (id, repo_id, repo_url, name, engine, source_kind, source, provider, volume_id, snapshot_id, parent_id, data_timestamp, started_at, status, host, pid)
         VALUES (@id, @repoId, @repoUrl, @name, @engine, @sourceKind, @source, @provider, @volumeId, @snapshotId, @parentId, @dataTimestamp, @startedAt, 'running', @host, @pid)`,
      )
      .run({ engine: null, parentId: null, dataTimestamp: null, ...row });
  }

  /** Mark a backup complete from its committed manifest (insert or update). */
  completeBackup(m: Manifest, repoId: string, repoUrl: string): void {
    this.db
      .prepare(
        `INSERT INTO backups (id, repo_id, repo_url, name, engine, source_kind, source, provider, volume_id, snapshot_id, parent_id, data_timestamp, started_at, finished_at, status, reason, host, stats)
         VALUES (@id, @repoId, @repoUrl, @name, @engine, @sourceKind, @source, @provider, @volumeId, @snapshotId, @parentId, @dataTimestamp, @startedAt, @finishedAt, 'complete', NULL, @host, @stats)
         ON CONFLICT (id) DO UPDATE SET status = 'complete', reason = NULL, engine = excluded.engine, parent_id = excluded.parent_id,
           data_timestamp = excluded.data_timestamp, finished_at = excluded.finished_at, stats = excluded.stats`,
      )
      .run({
        id: m.id,
        repoId,
        repoUrl,
        name: m.name,
        engine: m.engine,
        sourceKind: m.source.kind,
        source: m.source.kind === 'path' ? m.source.path : m.source.volumeId,
        provider: m.source.kind === 'volume' ? m.source.provider : null,
        volumeId: m.source.kind === 'volume' ? m.source.volumeId : null,
        snapshotId: m.source.kind === 'volume' ? (m.source.snapshotId ?? null) : null,
        parentId: m.parent ?? null,
        dataTimestamp: m.dataTimestamp,
        startedAt: m.startedAt,
        finishedAt: m.finishedAt,
        host: m.host,
        stats: JSON.stringify(m.stats),
      });
  }

  /** Mark a running backup failed with its reason (never touches a complete one). */
  failBackup(id: string, reason: string, stats?: BackupStats): void {
    this.db
      .prepare(`UPDATE backups SET status = 'failed', reason = ?, finished_at = ?, stats = COALESCE(?, stats) WHERE id = ? AND status = 'running'`)
      .run(reason, new Date().toISOString(), stats ? JSON.stringify(stats) : null, id);
  }

  getBackup(id: string): BackupRow | undefined {
    const r = this.db.prepare(`SELECT * FROM backups WHERE id = ?`).get(id);
    return r ? toBackup(r) : undefined;
  }

  listBackups(filter: { repoId?: string; name?: string; volumeId?: string; status?: BackupStatus } = {}): BackupRow[] {
    const where: string[] = [];
    const args: Record<string, string> = {};
    for (const [k, col] of [
      ['repoId', 'repo_id'],
      ['name', 'name'],
      ['volumeId', 'volume_id'],
      ['status', 'status'],
    ] as const) {
      if (filter[k]) {
        where.push(`${col} = @${k}`);
        args[k] = filter[k]!;
      }
    }
    const sql = `SELECT * FROM backups ${where.length ? 'WHERE ' + where.join(' AND ') : ''} ORDER BY started_at, id`;
    return this.db.prepare(sql).all(args).map(toBackup);
  }

  /**
   * The parent for an incremental: the newest complete backup of the same
   * series whose data timestamp is older than `before`.
   */
  findParent(repoId: string, name: string, before: string, engine?: string): BackupRow | undefined {
    const r = this.db
      .prepare(
        `SELECT * FROM backups WHERE repo_id = ? AND name = ? AND status = 'complete' AND data_timestamp < ?
         ${engine ? 'AND engine = ?' : ''} ORDER BY data_timestamp DESC LIMIT 1`,
      )
      .get(...(engine ? [repoId, name, before, engine] : [repoId, name, before]));
    return r ? toBackup(r) : undefined;
  }

  /** Complete rows of this repository whose manifests are gone (after prune, or a repository restored elsewhere). */
  forgetMissing(repoId: string, present: Set<string>): number {
    const rows = this.db.prepare(`SELECT id FROM backups WHERE repo_id = ? AND status = 'complete'`).all(repoId) as { id: string }[];
    const del = this.db.prepare(`DELETE FROM backups WHERE id = ?`);
    let n = 0;
    for (const { id } of rows)
      if (!present.has(id)) {
        del.run(id);
        n++;
      }
    return n;
  }

  /** Running rows whose process is gone: mark them failed. */
  failOrphans(host: string, isAlive: (pid: number) => boolean): string[] {
    const rows = this.db.prepare(`SELECT id, pid FROM backups WHERE status = 'running' AND host = ?`).all(host) as { id: string; pid: number | null }[];
    const out: string[] = [];
    for (const r of rows)
      if (r.pid === null || !isAlive(r.pid)) {
        this.failBackup(r.id, 'interrupted: the agent process ended before the backup was committed');
        out.push(r.id);
      }
    return out;
  }

  // ---- temporary resources ------------------------------------------------

  /** Record a resource before creating it. Returns the row id. */
  planResource(jobId: string, kind: ResourceKind, r: { provider?: string; name?: string; ref?: string; data?: Record<string, unknown>; host?: string }): number {
    const info = this.db
      .prepare(
        `INSERT INTO resources (job_id, kind, provider, ref, name, data, state, created_at, host, pid) VALUES (?, ?, ?, ?, ?, ?, 'planned', ?, ?, ?)`,
      )
      .run(jobId, kind, r.provider ?? null, r.ref ?? null, r.name ?? null, JSON.stringify(r.data ?? {}), new Date().toISOString(), r.host ?? null, process.pid);
    return Number(info.lastInsertRowid);
  }

  /** The resource exists now (with its real ID and whatever removal needs). */
  resourceCreated(rowId: number, ref: string, data?: Record<string, unknown>): void {
    this.db
      .prepare(`UPDATE resources SET state = 'created', ref = ?, data = COALESCE(?, data) WHERE id = ?`)
      .run(ref, data ? JSON.stringify(data) : null, rowId);
  }

  resourceRemoved(rowId: number): void {
    this.db.prepare(`UPDATE resources SET state = 'removed', removed_at = ? WHERE id = ?`).run(new Date().toISOString(), rowId);
  }

  /** Resources not yet removed, newest first (the order to remove them in). */
  openResources(filter: { jobId?: string; host?: string } = {}): ResourceRow[] {
    const where = [`state != 'removed'`];
    const args: string[] = [];
    if (filter.jobId) {
      where.push('job_id = ?');
      args.push(filter.jobId);
    }
    if (filter.host) {
      where.push('host = ?');
      args.push(filter.host);
    }
    return this.db.prepare(`SELECT * FROM resources WHERE ${where.join(' AND ')} ORDER BY id DESC`).all(...args).map(toResource);
  }
}
