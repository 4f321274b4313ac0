/**
 * LocalVolumeProvider: the embedded volume plane. Volumes are sparse raw image
 * files in a pool directory; their records (shaped like Cinder's) live in a
 * SQLite database in the same directory, so several agent processes can share
 * the pool: every change is one IMMEDIATE transaction (SQLite's lock), and the
 * slow work (copies) runs outside it, guarded by a worker token.
 *
 * Pool layout:
 *   <pool>/pool.db                     records (volumes, snapshots)
 *   <pool>/volumes/volume-<id>.img     volume images (sparse)
 *   <pool>/snapshots/snapshot-<id>.img snapshot images (reflink copies when the
 *                                      filesystem can, sparse copies otherwise)
 *
 * Status values and refusals follow Cinder's: creating → available; attach →
 * in-use; deleting; error. A non-forced snapshot of an in-use volume, and the
 * deletion of an attached volume or of one with snapshots, are refused with a
 * CloudError of status 400.
 */
import { randomUUID } from 'node:crypto';
import { existsSync, mkdirSync } from 'node:fs';
import { open, readdir, rename, rm, stat, truncate } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import Database from 'better-sqlite3';
import { loadExeca } from '../util/exec.js';
import { CloudError, NotFoundError, UsageError, pause } from '../errors.js';
import { log } from '../util/log.js';
import type {
  Attachment,
  ConnectorProperties,
  CreateVolumeOptions,
  SnapshotRecord,
  VolumeFilter,
  VolumeProvider,
  VolumeRecord,
  WaitOptions,
} from './provider.js';
import { isProcessAlive } from '../util/process.js';
import { HOST_KEY, TEMPORARY_KEY } from './temporary.js';

/** Default pool directory of the local provider. */
export const DEFAULT_POOL_DIR = '/var/lib/permafrost/volumes';
/** Bytes in one GiB. */
export const GiB = 1024 ** 3;

const ERROR_STATES = new Set(['error', 'error_deleting', 'error_restoring', 'error_extending', 'error_managing']);

/** Options of the local provider. */
export interface LocalVolumeProviderOptions {
  /** Pool directory; default /var/lib/permafrost/volumes. */
  poolDir?: string;
  /** Host name recorded in attachments; default os.hostname(). */
  host?: string;
  /** First poll interval of the waits (doubles up to 1 s); default 100 ms. */
  pollMs?: number;
}

/** createVolume options; `sizeBytes` (multiple of 512) overrides `size` for small test volumes. */
export interface LocalCreateVolumeOptions extends CreateVolumeOptions {
  sizeBytes?: number;
}

/** One attachment of a local volume, as stored. */
export interface LocalAttachmentRecord {
  attachmentId: string;
  serverId: string | null;
  hostName: string | null;
  device: string | null;
  connector: ConnectorProperties | null;
  attachedAt: string;
}

/** A local volume: Cinder's fields plus the exact size and the image path. */
export interface LocalVolumeRecord extends VolumeRecord {
  /** Exact size of the image in bytes (`size` is that rounded up to GiB). */
  sizeBytes: number;
  /** The image file. */
  path: string;
  snapshotId: string | null;
  sourceVolid: string | null;
  updatedAt: string;
  /** Why the volume is in an error state. */
  fault?: string;
}

/** A local snapshot: Cinder's fields plus the exact size and the image path. */
export interface LocalSnapshotRecord extends SnapshotRecord {
  sizeBytes: number;
  path: string;
  description: string | null;
  updatedAt: string;
  fault?: string;
}

interface Worker {
  token: string;
  pid: number;
  host: string;
}

interface StoredVolume extends Omit<LocalVolumeRecord, 'attachments'> {
  attachments: LocalAttachmentRecord[];
  worker?: Worker | null;
}

interface StoredSnapshot extends LocalSnapshotRecord {
  worker?: Worker | null;
}

/** How the paths volumes and snapshots share (copy, reap, delete, wait) reach one kind of record. */
interface RecordKind<R extends StoredVolume | StoredSnapshot> {
  /** 'volume' or 'snapshot', for messages. */
  noun: string;
  /** The table of the records. */
  table: 'volumes' | 'snapshots';
  load(id: string): R | undefined;
  save(r: R): void;
}

/** Tokens of copies running in this process (a record whose token is not here and whose pid is ours is stale). */
const activeWork = new Set<string>();

function now(): string {
  return new Date().toISOString();
}


function invalidVolume(msg: string): CloudError {
  return new CloudError(`Invalid volume: ${msg}`, 400);
}

/** setpriv (util-linux), to tie a copy's life to this process's. */
const SETPRIV = ['/usr/bin/setpriv', '/bin/setpriv'].find((p) => existsSync(p));

/**
 * Copy an image sparsely, sharing extents (reflink) when the filesystem can.
 * The copy dies with this process (parent-death signal): a killed agent never
 * leaves a cp writing into the pool.
 */
export async function copyImage(src: string, dst: string): Promise<void> {
  const args = ['--reflink=auto', '--sparse=always', '--', src, dst];
  const { execa } = await loadExeca();
  const r = SETPRIV
    ? await execa(SETPRIV, ['--pdeathsig', 'KILL', '--', 'cp', ...args], { reject: false })
    : await execa('cp', args, { reject: false });
  if (r.exitCode !== 0) throw new Error(`cp ${src} ${dst} failed: ${String(r.stderr).trim()}`);
}

/** The local volume provider (kind 'local'). */
export class LocalVolumeProvider implements VolumeProvider {
  /** Always 'local'. */
  readonly kind = 'local';
  /** The pool directory. */
  readonly poolDir: string;
  private readonly host: string;
  private readonly pollMs: number;
  private readonly db: Database.Database;
  private readonly pending = new Set<Promise<void>>();
  private readonly volumes: RecordKind<StoredVolume> = {
    noun: 'volume',
    table: 'volumes',
    load: (id) => this.loadVolume(id),
    save: (v) => this.saveVolume(v),
  };
  private readonly snapshots: RecordKind<StoredSnapshot> = {
    noun: 'snapshot',
    table: 'snapshots',
    load: (id) => this.loadSnapshot(id),
    save: (s) => this.saveSnapshot(s),
  };

  constructor(opts: LocalVolumeProviderOptions = {}) {
    this.poolDir = path.resolve(opts.poolDir ?? DEFAULT_POOL_DIR);
    this.host = opts.host ?? os.hostname();
    this.pollMs = opts.pollMs ?? 100;
    mkdirSync(path.join(this.poolDir, 'volumes'), { recursive: true, mode: 0o700 });
    mkdirSync(path.join(this.poolDir, 'snapshots'), { recursive: true, mode: 0o700 });
    this.db = new Database(path.join(this.poolDir, 'pool.db'), { timeout: 30_000 });
    this.db.pragma('journal_mode = WAL');
    this.db.pragma('synchronous = NORMAL');
    this.db.exec(`
      CREATE TABLE IF NOT EXISTS volumes (id TEXT PRIMARY KEY, name TEXT NOT NULL, doc TEXT NOT NULL);
      CREATE INDEX IF NOT EXISTS volumes_name ON volumes(name);
      CREATE TABLE IF NOT EXISTS snapshots (id TEXT PRIMARY KEY, volume_id TEXT NOT NULL, doc TEXT NOT NULL);
      CREATE INDEX IF NOT EXISTS snapshots_volume ON snapshots(volume_id);
    `);
  }

  // ------------------------------------------------------------------ storage

  private tx<T>(fn: () => T): T {
    return this.db.transaction(fn).immediate();
  }

  private loadVolume(id: string): StoredVolume | undefined {
    const row = this.db.prepare('SELECT doc FROM volumes WHERE id = ?').get(id) as { doc: string } | undefined;
    return row ? (JSON.parse(row.doc) as StoredVolume) : undefined;
  }

  private saveVolume(v: StoredVolume): void {
    v.updatedAt = now();
    this.db.prepare('INSERT OR REPLACE INTO volumes (id, name, doc) VALUES (?, ?, ?)').run(v.id, v.name, JSON.stringify(v));
  }

  private allVolumes(): StoredVolume[] {
    return (this.db.prepare('SELECT doc FROM volumes ORDER BY rowid').all() as { doc: string }[]).map(
      (r) => JSON.parse(r.doc) as StoredVolume,
    );
  }

  private loadSnapshot(id: string): StoredSnapshot | undefined {
    const row = this.db.prepare('SELECT doc FROM snapshots WHERE id = ?').get(id) as { doc: string } | undefined;
    return row ? (JSON.parse(row.doc) as StoredSnapshot) : undefined;
  }

  private saveSnapshot(s: StoredSnapshot): void {
    s.updatedAt = now();
    this.db.prepare('INSERT OR REPLACE INTO snapshots (id, volume_id, doc) VALUES (?, ?, ?)').run(s.id, s.volumeId, JSON.stringify(s));
  }

  private allSnapshots(volumeId?: string): StoredSnapshot[] {
    const rows = (
      volumeId
        ? this.db.prepare('SELECT doc FROM snapshots WHERE volume_id = ? ORDER BY rowid').all(volumeId)
        : this.db.prepare('SELECT doc FROM snapshots ORDER BY rowid').all()
    ) as { doc: string }[];
    return rows.map((r) => JSON.parse(r.doc) as StoredSnapshot);
  }

  private volumePath(id: string): string {
    return path.join(this.poolDir, 'volumes', `volume-${id}.img`);
  }

  private snapshotPath(id: string): string {
    return path.join(this.poolDir, 'snapshots', `snapshot-${id}.img`);
  }

  private newWorker(): Worker {
    const w = { token: randomUUID(), pid: process.pid, host: this.host };
    activeWork.add(w.token);
    return w;
  }

  /** A transitional record whose worker is gone (crashed process) is stale. */
  private isStale(w: Worker | null | undefined): boolean {
    if (!w) return false;
    if (w.host !== this.host) return false;
    if (w.pid === process.pid) return !activeWork.has(w.token);
    return !isProcessAlive(w.pid);
  }

  /** Move a record stuck in creating/deleting by a dead worker to error. */
  private reap<R extends StoredVolume | StoredSnapshot>(kind: RecordKind<R>, id: string): void {
    this.tx(() => {
      const r = kind.load(id);
      if (!r || !['creating', 'deleting'].includes(r.status) || !this.isStale(r.worker)) return;
      r.fault = `the process that was ${r.status === 'creating' ? 'creating' : 'deleting'} it (pid ${r.worker?.pid}) is gone`;
      r.status = r.status === 'creating' ? 'error' : 'error_deleting';
      r.worker = null;
      kind.save(r);
    });
  }

  /**
   * Write a record's image through `<image>.<token>.tmp` (renamed into place once `write` is
   * done, removed when it fails), then settle the record if `worker` still owns it: available,
   * or error with the fault.
   */
  private async buildImage<R extends StoredVolume | StoredSnapshot>(
    kind: RecordKind<R>,
    rec: R,
    worker: Worker,
    write: (tmp: string) => Promise<void>,
  ): Promise<void> {
    const tmp = `${rec.path}.${worker.token.slice(0, 8)}.tmp`;
    let fault: string | undefined;
    try {
      await write(tmp);
      await rename(tmp, rec.path);
    } catch (err) {
      fault = String((err as Error)?.message ?? err);
      await rm(tmp, { force: true }).catch(() => undefined);
    }
    try {
      this.tx(() => {
        const cur = kind.load(rec.id);
        if (!cur || cur.worker?.token !== worker.token) return;
        cur.worker = null;
        if (fault) {
          cur.status = 'error';
          cur.fault = fault;
        } else {
          cur.status = 'available';
        }
        kind.save(cur);
      });
      if (fault) log.warn(`local ${kind.noun} ${rec.id} failed: ${fault}`);
    } finally {
      activeWork.delete(worker.token);
    }
  }

  /**
   * Remove the image of a record marked deleting (and the partial copies beside it), then the
   * record; a failure leaves it in error_deleting with the fault and throws CloudError 500.
   */
  private async removeImage<R extends StoredVolume | StoredSnapshot>(kind: RecordKind<R>, rec: R): Promise<void> {
    const token = rec.worker!.token;
    try {
      await rm(rec.path, { force: true });
      await removePartialCopies(rec.path);
      this.tx(() => this.db.prepare(`DELETE FROM ${kind.table} WHERE id = ?`).run(rec.id));
    } catch (err) {
      this.tx(() => {
        const cur = kind.load(rec.id);
        if (!cur) return;
        cur.status = 'error_deleting';
        cur.fault = String((err as Error)?.message ?? err);
        cur.worker = null;
        kind.save(cur);
      });
      throw new CloudError(`cannot delete local ${kind.noun} ${rec.id}: ${String((err as Error)?.message ?? err)}`, 500, { cause: err });
    } finally {
      activeWork.delete(token);
    }
  }

  /** Poll until the record reaches one of `states`; error states throw CloudError with the fault. */
  private async waitRecord<R extends StoredVolume | StoredSnapshot>(kind: RecordKind<R>, id: string, states: string[], timeoutMs?: number, opts: WaitOptions = {}): Promise<R> {
    let delay = this.pollMs;
    let deadline: number | undefined = timeoutMs !== undefined ? Date.now() + timeoutMs : undefined;
    for (;;) {
      this.reap(kind, id);
      const r = kind.load(id);
      if (!r) throw new NotFoundError(`${kind.noun} ${id} not found`);
      if (deadline === undefined) deadline = Date.now() + defaultWaitMs(r.sizeBytes);
      if (states.includes(r.status)) return r;
      if (ERROR_STATES.has(r.status)) throw new CloudError(`${kind.noun} ${id} went to ${r.status}${r.fault ? `: ${r.fault}` : ''}`);
      if (Date.now() >= deadline) {
        throw new CloudError(`timed out waiting for ${kind.noun} ${id} to become ${states.join('|')} (still ${r.status})`);
      }
      await pause(delay, opts.signal);
      delay = Math.min(delay * 2, 1000);
    }
  }

  private publicVolume(v: StoredVolume): LocalVolumeRecord {
    const { worker: _w, attachments, ...rest } = v;
    return {
      ...rest,
      metadata: { ...v.metadata },
      attachments: attachments.map((a) => ({
        attachmentId: a.attachmentId,
        serverId: a.serverId,
        hostName: a.hostName,
        device: a.device,
      })),
    };
  }

  private publicSnapshot(s: StoredSnapshot): LocalSnapshotRecord {
    const { worker: _w, ...rest } = s;
    return { ...rest, metadata: { ...s.metadata } };
  }

  private track(p: Promise<void>): void {
    const q = p.finally(() => this.pending.delete(q));
    this.pending.add(q);
  }

  // ------------------------------------------------------------------ volumes

  /** A volume by ID, else by name (NotFoundError; UsageError when the name is ambiguous). */
  async getVolume(idOrName: string): Promise<LocalVolumeRecord> {
    const byId = this.loadVolume(idOrName);
    if (byId) return this.publicVolume(byId);
    const rows = this.db.prepare('SELECT doc FROM volumes WHERE name = ?').all(idOrName) as { doc: string }[];
    if (rows.length === 1) return this.publicVolume(JSON.parse(rows[0]!.doc) as StoredVolume);
    if (rows.length > 1) throw new UsageError(`${rows.length} local volumes are named '${idOrName}'; use the ID`);
    throw new NotFoundError(`volume ${idOrName} not found in local pool ${this.poolDir}`);
  }

  /** Volumes of the pool, filtered by name, group and metadata. */
  async listVolumes(filter: VolumeFilter = {}): Promise<LocalVolumeRecord[]> {
    return this.allVolumes()
      .filter((v) => filter.name === undefined || v.name === filter.name)
      .filter((v) => filter.groupId === undefined || v.groupId === filter.groupId)
      .filter((v) => Object.entries(filter.metadata ?? {}).every(([k, val]) => v.metadata[k] === val))
      .map((v) => this.publicVolume(v));
  }

  /** Snapshots of the pool, or of one volume. */
  async listSnapshots(volumeId?: string): Promise<LocalSnapshotRecord[]> {
    return this.allSnapshots(volumeId).map((s) => this.publicSnapshot(s));
  }

  /**
   * Create a volume: empty (sparse), from a snapshot, or a clone of a volume.
   * Returns at once with status 'creating'; waitVolume for 'available'.
   */
  async createVolume(opts: LocalCreateVolumeOptions): Promise<LocalVolumeRecord> {
    if (typeof opts.name !== 'string') throw new UsageError('a volume needs a name');
    if (opts.sizeBytes !== undefined && (!Number.isSafeInteger(opts.sizeBytes) || opts.sizeBytes <= 0 || opts.sizeBytes % 512 !== 0)) {
      throw new UsageError(`sizeBytes must be a positive multiple of 512, not ${opts.sizeBytes}`);
    }
    if (opts.sizeBytes === undefined && !(typeof opts.size === 'number' && opts.size > 0 && Number.isFinite(opts.size))) {
      throw new CloudError(`Invalid input received: size must be a positive number of GiB, not ${String(opts.size)}`, 400);
    }
    if (opts.snapshotId && opts.sourceVolumeId) throw new UsageError('give a snapshot or a source volume, not both');
    let sizeBytes = opts.sizeBytes ?? Math.ceil((opts.size * GiB) / 512) * 512;
    const id = randomUUID();
    const worker = this.newWorker();
    let source: string | undefined;

    let rec: StoredVolume;
    try {
      rec = this.tx(() => {
        if (opts.snapshotId) {
          const s = this.loadSnapshot(opts.snapshotId);
          if (!s) {
            throw new NotFoundError(`snapshot ${opts.snapshotId} not found`);
          }
          if (s.status !== 'available') throw new CloudError(`Invalid snapshot: Originating snapshot status must be one of 'available' values`, 400);
          if (opts.sizeBytes === undefined && opts.size < s.size) {
            throw new CloudError(`Invalid input received: Volume size '${opts.size}'GB cannot be smaller than the snapshot size ${s.size}GB. They must be >= original snapshot size.`, 400);
          }
          // The same size in GiB as the snapshot keeps its exact size (a sub-GiB test volume stays so).
          if (opts.sizeBytes === undefined && opts.size === s.size) sizeBytes = s.sizeBytes;
          if (sizeBytes < s.sizeBytes) {
            if (opts.sizeBytes !== undefined) throw new CloudError(`Invalid input received: volume smaller than snapshot ${s.id}`, 400);
            sizeBytes = s.sizeBytes;
          }
          source = s.path;
        } else if (opts.sourceVolumeId) {
          const src = this.loadVolume(opts.sourceVolumeId);
          if (!src) throw new NotFoundError(`source volume ${opts.sourceVolumeId} not found`);
          if (!['available', 'in-use'].includes(src.status)) {
            throw invalidVolume(`Volume ${src.id} status must be available or in-use, but current status is: ${src.status}.`);
          }
          if (opts.sizeBytes === undefined && opts.size < src.size) {
            throw new CloudError(`Invalid input received: Clones currently must be >= original volume size.`, 400);
          }
          if (opts.sizeBytes === undefined && opts.size === src.size) sizeBytes = src.sizeBytes;
          if (sizeBytes < src.sizeBytes) {
            if (opts.sizeBytes !== undefined) throw new CloudError(`Invalid input received: clone smaller than volume ${src.id}`, 400);
            sizeBytes = src.sizeBytes;
          }
          source = src.path;
        }
        const v: StoredVolume = {
          id,
          name: opts.name,
          description: opts.description ?? null,
          size: Math.max(1, Math.ceil(sizeBytes / GiB)),
          sizeBytes,
          status: 'creating',
          volumeType: opts.volumeType ?? 'local',
          availabilityZone: opts.availabilityZone ?? 'local',
          bootable: opts.bootable ?? false,
          metadata: { ...(opts.metadata ?? {}) },
          imageMetadata: {},
          groupId: null,
          projectId: 'local',
          attachments: [],
          createdAt: now(),
          updatedAt: now(),
          multiattach: false,
          encrypted: false,
          path: this.volumePath(id),
          snapshotId: opts.snapshotId ?? null,
          sourceVolid: opts.sourceVolumeId ?? null,
          worker,
        };
        this.saveVolume(v);
        return v;
      });
    } catch (err) {
      activeWork.delete(worker.token);
      throw err;
    }

    this.track(this.buildVolume(rec, source, worker));
    return this.publicVolume(rec);
  }

  private buildVolume(v: StoredVolume, source: string | undefined, worker: Worker): Promise<void> {
    return this.buildImage(this.volumes, v, worker, async (tmp) => {
      if (source) {
        await copyImage(source, tmp);
        const st = await stat(tmp);
        if (st.size < v.sizeBytes) await truncate(tmp, v.sizeBytes);
      } else {
        const fh = await open(tmp, 'wx', 0o600);
        try {
          await fh.truncate(v.sizeBytes);
        } finally {
          await fh.close();
        }
      }
    });
  }

  /**
   * Delete a volume and its image. Missing is success. Refused (CloudError 400)
   * while attached, while it has snapshots, or while it is being created or
   * copied from.
   */
  async deleteVolume(id: string): Promise<void> {
    this.reap(this.volumes, id);
    const v = this.tx(() => {
      const cur = this.loadVolume(id);
      if (!cur) return undefined;
      const rules =
        'Volume status must be available or error or error_restoring or error_extending or error_managing and must not be migrating, attached, belong to a group, have snapshots or be disassociated from snapshots after volume transfer.';
      if (cur.status === 'deleting') return undefined;
      if (!['available', 'error', 'error_deleting', 'error_restoring', 'error_extending', 'error_managing'].includes(cur.status)) {
        throw invalidVolume(`${rules} (volume ${id} is ${cur.status})`);
      }
      if (cur.attachments.length > 0) throw invalidVolume(`${rules} (volume ${id} is attached)`);
      const snaps = this.allSnapshots(id);
      if (snaps.length > 0) throw invalidVolume(`${rules} (volume ${id} has ${snaps.length} snapshot(s))`);
      const cloning = this.allVolumes().some((o) => o.sourceVolid === id && o.status === 'creating');
      if (cloning) throw invalidVolume(`Volume ${id} is being cloned`);
      cur.status = 'deleting';
      cur.worker = this.newWorker();
      this.saveVolume(cur);
      return cur;
    });
    if (!v) return;
    await this.removeImage(this.volumes, v);
  }

  /** Merge (or with `replace`, set) the volume's metadata. */
  async updateMetadata(id: string, metadata: Record<string, string>, replace = false): Promise<void> {
    for (const [k, val] of Object.entries(metadata)) {
      if (typeof val !== 'string') throw new CloudError(`Invalid input received: metadata value of ${k} must be a string`, 400);
    }
    this.tx(() => {
      const v = this.loadVolume(id);
      if (!v) throw new NotFoundError(`volume ${id} not found`);
      v.metadata = replace ? { ...metadata } : { ...v.metadata, ...metadata };
      this.saveVolume(v);
    });
  }

  /** Set the bootable flag. */
  async setBootable(id: string, bootable: boolean): Promise<void> {
    this.tx(() => {
      const v = this.loadVolume(id);
      if (!v) throw new NotFoundError(`volume ${id} not found`);
      v.bootable = bootable;
      this.saveVolume(v);
    });
  }

  /** Poll until the volume reaches one of `states`; error states throw CloudError with the fault. */
  async waitVolume(id: string, states: string[], timeoutMs?: number, opts: WaitOptions = {}): Promise<LocalVolumeRecord> {
    return this.publicVolume(await this.waitRecord(this.volumes, id, states, timeoutMs, opts));
  }

  // ---------------------------------------------------------------- snapshots

  /** A snapshot by ID (NotFoundError). */
  async getSnapshot(id: string): Promise<LocalSnapshotRecord> {
    const s = this.loadSnapshot(id);
    if (!s) throw new NotFoundError(`snapshot ${id} not found in local pool ${this.poolDir}`);
    return this.publicSnapshot(s);
  }

  /**
   * Snapshot a volume (a reflink or sparse copy of its image). An in-use volume
   * needs `force` (crash-consistent), as with Cinder. Returns at once with
   * status 'creating'.
   */
  async createSnapshot(
    volumeId: string,
    name: string,
    opts: { force: boolean; metadata?: Record<string, string>; description?: string },
  ): Promise<LocalSnapshotRecord> {
    const id = randomUUID();
    const worker = this.newWorker();
    let rec: StoredSnapshot;
    let source: string;
    try {
      [rec, source] = this.tx(() => {
        const v = this.loadVolume(volumeId);
        if (!v) throw new NotFoundError(`volume ${volumeId} not found`);
        const ok = v.status === 'available' || (v.status === 'in-use' && opts.force);
        if (!ok) {
          if (v.status === 'in-use') {
            throw invalidVolume(`Volume ${volumeId} status must be available, but current status is: in-use. (use force to snapshot an attached volume)`);
          }
          throw invalidVolume(`Volume ${volumeId} status must be available or in-use, but current status is: ${v.status}.`);
        }
        const s: StoredSnapshot = {
          id,
          volumeId,
          name,
          description: opts.description ?? null,
          status: 'creating',
          size: v.size,
          sizeBytes: v.sizeBytes,
          createdAt: now(),
          updatedAt: now(),
          metadata: { ...(opts.metadata ?? {}) },
          path: this.snapshotPath(id),
          worker,
        };
        this.saveSnapshot(s);
        return [s, v.path] as const;
      });
    } catch (err) {
      activeWork.delete(worker.token);
      throw err;
    }
    this.track(this.buildImage(this.snapshots, rec, worker, (tmp) => copyImage(source, tmp)));
    return this.publicSnapshot(rec);
  }

  /** Delete a snapshot; missing is success. Refused while it is being created or copied from. */
  async deleteSnapshot(id: string): Promise<void> {
    this.reap(this.snapshots, id);
    const s = this.tx(() => {
      const cur = this.loadSnapshot(id);
      if (!cur || cur.status === 'deleting') return undefined;
      if (!['available', 'error', 'error_deleting'].includes(cur.status)) {
        throw new CloudError(`Invalid snapshot: Snapshot status must be available or error and must not be part of a group (snapshot ${id} is ${cur.status}).`, 400);
      }
      if (this.allVolumes().some((v) => v.snapshotId === id && v.status === 'creating')) {
        throw new CloudError(`Invalid snapshot: a volume is being created from snapshot ${id}`, 400);
      }
      cur.status = 'deleting';
      cur.worker = this.newWorker();
      this.saveSnapshot(cur);
      return cur;
    });
    if (!s) return;
    await this.removeImage(this.snapshots, s);
  }

  /** Poll until the snapshot reaches one of `states`; error states throw CloudError. */
  async waitSnapshot(id: string, states: string[], timeoutMs?: number, opts: WaitOptions = {}): Promise<LocalSnapshotRecord> {
    return this.publicSnapshot(await this.waitRecord(this.snapshots, id, states, timeoutMs, opts));
  }

  // -------------------------------------------------------------- attachments

  /**
   * Attach a volume to a host: records the attachment, sets the volume in-use,
   * and returns connection_info {driver_volume_type:'local', data:{device_path}}.
   */
  async attach(volumeId: string, connector: ConnectorProperties): Promise<Attachment> {
    const attachmentId = randomUUID();
    const v = this.tx(() => {
      const cur = this.loadVolume(volumeId);
      if (!cur) throw new NotFoundError(`volume ${volumeId} not found`);
      const ok = cur.status === 'available' || (cur.status === 'in-use' && cur.multiattach);
      if (!ok) {
        throw invalidVolume(`Volume ${volumeId} status must be available or downloading to reserve, but the current status is ${cur.status}.`);
      }
      cur.attachments.push({
        attachmentId,
        serverId: null,
        hostName: connector?.host ?? this.host,
        device: null,
        connector: connector ?? null,
        attachedAt: now(),
      });
      cur.status = 'in-use';
      this.saveVolume(cur);
      return cur;
    });
    return {
      id: attachmentId,
      volumeId,
      connectionInfo: {
        driver_volume_type: 'local',
        data: {
          device_path: v.path,
          volume_id: volumeId,
          attachment_id: attachmentId,
          name: `volume-${volumeId}`,
          access_mode: 'rw',
          size_bytes: v.sizeBytes,
        },
      },
    };
  }

  /** Remove an attachment; the volume becomes available when it was the last. Idempotent. */
  async detach(volumeId: string, attachmentId: string): Promise<void> {
    this.tx(() => {
      const cur = this.loadVolume(volumeId);
      if (!cur) return;
      const before = cur.attachments.length;
      cur.attachments = cur.attachments.filter((a) => a.attachmentId !== attachmentId);
      if (cur.attachments.length === before) return;
      if (cur.attachments.length === 0 && cur.status === 'in-use') cur.status = 'available';
      this.saveVolume(cur);
    });
  }

  // ----------------------------------------------------------------- cleanup

  /** Volumes and snapshots tagged permafrost:temporary=true by this host (left by crashed runs). */
  async listLeftovers(tag: { host: string }): Promise<{ volumes: LocalVolumeRecord[]; snapshots: LocalSnapshotRecord[] }> {
    const ours = (md: Record<string, string>): boolean => md[TEMPORARY_KEY] === 'true' && md[HOST_KEY] === tag.host;
    return {
      volumes: this.allVolumes()
        .filter((v) => ours(v.metadata))
        .map((v) => this.publicVolume(v)),
      snapshots: this.allSnapshots()
        .filter((s) => ours(s.metadata))
        .map((s) => this.publicSnapshot(s)),
    };
  }

  /** Wait for copies started by this instance, then close the database. */
  async close(): Promise<void> {
    while (this.pending.size > 0) await Promise.allSettled([...this.pending]);
    if (this.db.open) this.db.close();
  }
}

/** Remove `<image>.<token>.tmp` files a copy killed with its process left beside an image. */
async function removePartialCopies(image: string): Promise<void> {
  const dir = path.dirname(image);
  const prefix = `${path.basename(image)}.`;
  for (const name of await readdir(dir).catch(() => [] as string[])) {
    if (name.startsWith(prefix) && name.endsWith('.tmp')) await rm(path.join(dir, name), { force: true });
  }
}

/** Default wait: 60 s plus 30 s per GiB of data to copy (generous for non-reflink copies). */
function defaultWaitMs(sizeBytes: number): number {
  return 60_000 + Math.ceil(sizeBytes / GiB) * 30_000;
}
