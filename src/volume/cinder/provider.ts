/**
 * CinderVolumeProvider: the volume plane over Keystone v3 and Block Storage
 * v3. Waits scale with volume size and stop on error states with the
 * server's user message; attach uses the attachments API (3.44+) or the
 * legacy volume actions on older clouds.
 */
import { connectorProperties } from '../../connectors/properties.js';
import { AuthError, CloudError, NotFoundError, UsageError, pause, throwIfAborted } from '../../errors.js';
import { log } from '../../util/log.js';
import { type ResolveOptions, resolveOpenStackConfig } from '../openstack-config.js';
import type {
  Attachment,
  ConnectorProperties,
  CreateVolumeOptions,
  SnapshotRecord,
  VolumeFilter,
  VolumeProvider,
  VolumeRecord,
  WaitOptions,
} from '../provider.js';
import { HOST_KEY, TEMPORARY_KEY } from '../temporary.js';
import {
  ATTACHMENTS_MICROVERSION,
  attachLegacy,
  completeAttachment,
  createAttachment,
  deleteAttachment,
  detachLegacy,
  initializeConnection,
  normalizeConnectionInfo,
  reserveVolume,
  terminateConnection,
  unreserveVolume,
} from './attachments.js';
import { CinderClient, type CinderClientOptions } from './client.js';
import { KeystoneSession, type KeystoneSessionOptions } from './keystone.js';
import { listMessages } from './resources.js';
import { emptyVolume, toSnapshotRecord, toVolumeRecord } from './records.js';
import type { CinderVolume, CinderVolumeCreate } from './types.js';

export { ADMIN_METADATA_KEYS, toSnapshotRecord, toVolumeRecord } from './records.js';

/** Volume states that end a wait with an error. */
export const VOLUME_ERROR_STATES = ['error', 'error_deleting', 'error_restoring', 'error_extending', 'error_managing', 'error_backing-up'];
/** Snapshot states that end a wait with an error. */
export const SNAPSHOT_ERROR_STATES = ['error', 'error_deleting'];

const TRANSITIONAL = new Set(['creating', 'attaching', 'detaching', 'reserved', 'downloading', 'uploading', 'backing-up', 'restoring-backup', 'extending', 'retyping', 'maintenance']);

/** Options of a {@link CinderVolumeProvider}. */
export interface CinderProviderOptions extends CinderClientOptions {
  /** Fixed part of every wait (default 60 s). */
  waitBaseMs?: number;
  /** Added to a wait per GiB of the volume (default 10 s). */
  waitPerGiBMs?: number;
  /** First poll interval (default 500 ms); grows ×1.5 up to pollMaxMs. */
  pollInitialMs?: number;
  /** Longest poll interval (default 5 s). */
  pollMaxMs?: number;
  /** Roles that make the caller a cloud admin (default ['admin']). */
  adminRoles?: string[];
  /** Use the legacy attach actions even when the attachments API exists. */
  legacyAttach?: boolean;
  /** Mountpoint reported to Cinder by a legacy attach (default /dev/permafrost). */
  legacyMountpoint?: string;
}

const UUID_RE = /^[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}$/i;

/** The volume plane on an OpenStack cloud. */
export class CinderVolumeProvider implements VolumeProvider {
  readonly kind = 'cinder';
  readonly session: KeystoneSession;
  readonly client: CinderClient;
  private readonly opts: CinderProviderOptions;
  /** Connector used by each legacy attachment, for its detach. */
  private readonly legacyConnectors = new Map<string, ConnectorProperties>();
  /** Bootable flags to apply once a new volume is available. */
  private readonly pendingBootable = new Map<string, boolean>();

  constructor(session: KeystoneSession, opts: CinderProviderOptions = {}) {
    this.session = session;
    this.opts = opts;
    this.client = new CinderClient(session, opts);
  }

  /** Resolve credentials (clouds.yaml, OS_*, explicit) and build a provider. */
  static async create(resolve: ResolveOptions = {}, opts: CinderProviderOptions & KeystoneSessionOptions = {}): Promise<CinderVolumeProvider> {
    const cfg = await resolveOpenStackConfig(resolve);
    return new CinderVolumeProvider(new KeystoneSession(cfg, opts), opts);
  }

  /** Endpoint, microversions and identity, for diagnostics. */
  async info(): Promise<{ endpoint: string; microversion: string; maxMicroversion?: string; userName?: string; projectId?: string; projectName?: string; roles: string[]; admin: boolean }> {
    await this.client.init();
    const t = await this.session.getToken();
    return {
      endpoint: this.client.endpoint,
      microversion: this.client.microversion,
      maxMicroversion: this.client.maxMicroversion,
      userName: t.userName,
      projectId: t.projectId,
      projectName: t.projectName,
      roles: t.roles,
      admin: await this.isAdmin(),
    };
  }

  /** True when the token carries one of the admin roles. */
  async isAdmin(): Promise<boolean> {
    const admin = (this.opts.adminRoles ?? ['admin']).map((r) => r.toLowerCase());
    return (await this.session.roles()).some((r) => admin.includes(r.toLowerCase()));
  }

  private async requireAdmin(what: string): Promise<void> {
    if (await this.isAdmin()) return;
    const t = await this.session.getToken();
    // Cinder silently ignores all_tenants for non-admins and answers with the own project only.
    throw new AuthError(`${what} needs the admin role (user ${t.userName ?? t.userId ?? '?'} in project ${t.projectName ?? t.projectId ?? '?'} has: ${t.roles.join(', ') || 'no roles'})`);
  }

  async getVolume(idOrName: string): Promise<VolumeRecord> {
    if (UUID_RE.test(idOrName)) {
      try {
        return toVolumeRecord(await this.client.getVolume(idOrName));
      } catch (err) {
        if (!(err instanceof NotFoundError)) throw err;
      }
    }
    const byName = await this.client.listVolumes({ filters: { name: idOrName } });
    if (byName.length === 1) return toVolumeRecord(byName[0]!);
    if (byName.length > 1) throw new UsageError(`volume name "${idOrName}" is ambiguous (${byName.map((v) => v.id).join(', ')}); use the ID`);
    throw new NotFoundError(`volume ${idOrName} not found`);
  }

  async listVolumes(filter: VolumeFilter = {}): Promise<VolumeRecord[]> {
    if (filter.allTenants) await this.requireAdmin('--all-tenants');
    const filters: Record<string, string> = {};
    if (filter.name !== undefined) filters.name = filter.name;
    if (filter.groupId !== undefined) {
      await this.client.init();
      this.client.requireMicroversion('3.10', 'filtering volumes by group');
      filters.group_id = filter.groupId;
    }
    const vols = await this.client.listVolumes({ allTenants: filter.allTenants, filters, metadata: filter.metadata });
    return vols.filter((v) => filter.groupId === undefined || v.group_id === filter.groupId).map(toVolumeRecord);
  }

  async createVolume(o: CreateVolumeOptions): Promise<VolumeRecord> {
    const body: CinderVolumeCreate = { size: o.size, name: o.name };
    if (o.description !== undefined) body.description = o.description;
    if (o.volumeType) body.volume_type = o.volumeType;
    if (o.availabilityZone) body.availability_zone = o.availabilityZone;
    if (o.metadata && Object.keys(o.metadata).length) body.metadata = o.metadata;
    if (o.snapshotId) body.snapshot_id = o.snapshotId;
    if (o.sourceVolumeId) body.source_volid = o.sourceVolumeId;
    const v = await this.client.createVolume(body);
    // The volume manager sets `bootable` from the source when it finishes creating: apply ours afterwards.
    if (o.bootable !== undefined) this.pendingBootable.set(v.id, o.bootable);
    return toVolumeRecord(v);
  }

  /** Delete a volume; a missing one is success. Waits out a transitional state first; `wait` waits until it is gone. */
  async deleteVolume(id: string, opts: { wait?: boolean; cascade?: boolean; timeoutMs?: number } = {}): Promise<void> {
    try {
      await this.client.deleteVolume(id, { cascade: opts.cascade });
    } catch (err) {
      if (!(err instanceof CloudError) || err.status !== 400) throw err;
      let v: CinderVolume;
      try {
        v = await this.client.getVolume(id);
      } catch (e) {
        if (e instanceof NotFoundError) return;
        throw e;
      }
      if (v.status !== 'deleting') {
        if (!TRANSITIONAL.has(v.status)) throw err;
        log.debug(`volume ${id} is ${v.status}; waiting before deleting it`);
        await this.waitVolume(id, ['available', 'in-use', 'error', 'error_restoring', 'error_extending', 'error_managing', 'deleting'], opts.timeoutMs, {
          errorStates: [],
        });
        await this.client.deleteVolume(id, { cascade: opts.cascade });
      }
    }
    this.pendingBootable.delete(id);
    if (opts.wait) await this.waitVolume(id, ['deleted'], opts.timeoutMs, { afterDelete: true });
  }

  async updateMetadata(id: string, metadata: Record<string, string>, replace = false): Promise<void> {
    await this.client.setVolumeMetadata(id, metadata, replace);
  }

  async setBootable(id: string, bootable: boolean): Promise<void> {
    this.pendingBootable.delete(id);
    await this.client.setBootable(id, bootable);
  }

  /** Timeout of a wait on a volume of `sizeGiB`. */
  waitTimeout(sizeGiB: number): number {
    return (this.opts.waitBaseMs ?? 60_000) + (this.opts.waitPerGiBMs ?? 10_000) * Math.max(1, sizeGiB);
  }

  /** The newest user message about a resource, as " (reason: ...)", or ''. */
  private async fault(id: string): Promise<string> {
    try {
      const m = (await listMessages(this.client, id))[0];
      return m ? ` (${m.user_message})` : '';
    } catch (err) {
      log.debug(`messages of ${id}: ${(err as Error).message}`);
      return '';
    }
  }

  /**
   * Poll until the volume reaches one of `states` ('deleted' = gone). Error
   * states throw CloudError with the server's message; timeout scales with size.
   * `o.afterDelete`: a delete was just accepted, so any state but `deleting`
   * means it failed (RBD: image busy).
   */
  async waitVolume(id: string, states: string[], timeoutMs?: number, o: WaitOptions & { errorStates?: string[]; afterDelete?: boolean } = {}): Promise<VolumeRecord> {
    const errorStates = (o.errorStates ?? VOLUME_ERROR_STATES).filter((s) => !states.includes(s));
    const r = await this.poll(
      `volume ${id}`,
      async () => {
        try {
          return await this.client.getVolume(id);
        } catch (err) {
          if (err instanceof NotFoundError && states.includes('deleted')) return undefined;
          throw err;
        }
      },
      states,
      { errorStates, timeoutMs, afterDelete: o.afterDelete, signal: o.signal },
    );
    if (!r) return { ...emptyVolume(id), status: 'deleted' };
    const pending = this.pendingBootable.get(id);
    if (pending !== undefined && r.status === 'available') {
      this.pendingBootable.delete(id);
      await this.client.setBootable(id, pending);
      r.bootable = String(pending);
    }
    return toVolumeRecord(r);
  }

  private async poll<T extends { id: string; status: string; size: number }>(
    what: string,
    get: () => Promise<T | undefined>,
    states: string[],
    o: { errorStates: string[]; timeoutMs?: number; afterDelete?: boolean; signal?: AbortSignal },
  ): Promise<T | undefined> {
    const { errorStates, timeoutMs } = o;
    const started = Date.now();
    let delay = this.opts.pollInitialMs ?? 500;
    let deadline: number | undefined = timeoutMs !== undefined ? started + timeoutMs : undefined;
    for (;;) {
      throwIfAborted(o.signal);
      const r = await get();
      if (!r) return undefined;
      deadline ??= started + this.waitTimeout(r.size);
      if (states.includes(r.status)) return r;
      if (errorStates.includes(r.status)) {
        throw new CloudError(`${what} went to status ${r.status}${await this.fault(r.id)}`);
      }
      if (o.afterDelete && r.status !== 'deleting') {
        throw new CloudError(`${what} was not deleted: it is ${r.status} again${await this.fault(r.id)}`);
      }
      if (r.status === 'deleting' && !states.includes('deleted')) throw new CloudError(`${what} is being deleted (waiting for ${states.join('/')})`);
      const now = Date.now();
      if (now >= deadline) {
        throw new CloudError(`${what} still ${r.status} after ${((now - started) / 1000).toFixed(1)} s (waiting for ${states.join('/')})`);
      }
      await pause(Math.min(delay, deadline - now), o.signal);
      delay = Math.min(delay * 1.5, this.opts.pollMaxMs ?? 5000);
    }
  }

  async getSnapshot(id: string): Promise<SnapshotRecord> {
    return toSnapshotRecord(await this.client.getSnapshot(id));
  }

  async createSnapshot(volumeId: string, name: string, o: { force: boolean; metadata?: Record<string, string>; description?: string }): Promise<SnapshotRecord> {
    await this.client.init();
    if (!o.force && this.client.atLeast('3.66')) {
      // From 3.66 Cinder snapshots in-use volumes unasked: keep the old contract (cold means not attached).
      const v = await this.client.getVolume(volumeId);
      if (v.status === 'in-use') throw new CloudError(`volume ${volumeId} is in-use: a snapshot without force needs it available (use a hot backup to snapshot it in use)`, 400);
    }
    const s = await this.client.createSnapshot({ volumeId, name, description: o.description, metadata: o.metadata, force: o.force });
    return toSnapshotRecord(s);
  }

  /** Delete a snapshot; a missing one is success. `wait` waits until it is gone. */
  async deleteSnapshot(id: string, opts: { wait?: boolean; timeoutMs?: number } = {}): Promise<void> {
    try {
      await this.client.deleteSnapshot(id);
    } catch (err) {
      // 400 while the snapshot is still being created (a job interrupted right after asking for it): wait it out.
      if (!(err instanceof CloudError) || err.status !== 400) throw err;
      const s = await this.client.getSnapshot(id).catch((e: unknown) => (e instanceof NotFoundError ? undefined : Promise.reject(e)));
      if (!s) return;
      if (s.status !== 'deleting') {
        if (s.status !== 'creating') throw err;
        log.debug(`snapshot ${id} is creating; waiting before deleting it`);
        await this.waitSnapshot(id, ['available', 'error'], opts.timeoutMs);
        await this.client.deleteSnapshot(id);
      }
    }
    if (opts.wait) await this.waitSnapshot(id, ['deleted'], opts.timeoutMs, { afterDelete: true });
  }

  /** Poll until the snapshot reaches one of `states` ('deleted' = gone); see waitVolume. */
  async waitSnapshot(id: string, states: string[], timeoutMs?: number, o: WaitOptions & { afterDelete?: boolean } = {}): Promise<SnapshotRecord> {
    const r = await this.poll(
      `snapshot ${id}`,
      async () => {
        try {
          return await this.client.getSnapshot(id);
        } catch (err) {
          if (err instanceof NotFoundError && states.includes('deleted')) return undefined;
          throw err;
        }
      },
      states,
      { errorStates: SNAPSHOT_ERROR_STATES.filter((s) => !states.includes(s)), timeoutMs, afterDelete: o.afterDelete, signal: o.signal },
    );
    if (!r) return { id, volumeId: '', name: '', status: 'deleted', size: 0, createdAt: '', metadata: {} };
    return toSnapshotRecord(r);
  }

  /** True when attach/detach use the attachments API. */
  async usesAttachmentsApi(): Promise<boolean> {
    await this.client.init();
    return !this.opts.legacyAttach && this.client.atLeast(ATTACHMENTS_MICROVERSION);
  }

  async attach(volumeId: string, connector: ConnectorProperties): Promise<Attachment> {
    if (await this.usesAttachmentsApi()) {
      const a = await createAttachment(this.client, volumeId, connector);
      try {
        const connectionInfo = normalizeConnectionInfo(a.connection_info, `attachment ${a.id} of volume ${volumeId}`);
        await completeAttachment(this.client, a.id);
        return { id: a.id, volumeId, connectionInfo };
      } catch (err) {
        await deleteAttachment(this.client, a.id).catch((e) => log.warn(`cleanup of attachment ${a.id}: ${(e as Error).message}`));
        throw err;
      }
    }
    return this.attachLegacy(volumeId, connector);
  }

  private async attachLegacy(volumeId: string, connector: ConnectorProperties): Promise<Attachment> {
    const attId = (a: NonNullable<CinderVolume['attachments']>[number]) => a.attachment_id;
    await reserveVolume(this.client, volumeId);
    let connected = false;
    let fresh: string[] = [];
    try {
      const connectionInfo = await initializeConnection(this.client, volumeId, connector);
      connected = true;
      const before = new Set(((await this.client.getVolume(volumeId)).attachments ?? []).map(attId));
      await attachLegacy(this.client, volumeId, connector.host, this.opts.legacyMountpoint ?? '/dev/permafrost');
      // The new attachment: the one that appeared (host_name is shown to admins only).
      const after = (await this.client.getVolume(volumeId)).attachments ?? [];
      const added = after.filter((a) => !before.has(attId(a)));
      fresh = added.map(attId).filter((x): x is string => !!x);
      const att = added.length === 1 ? added[0] : added.filter((a) => a.host_name === connector.host).pop();
      const id = att ? attId(att) : undefined;
      if (!id) throw new CloudError(`volume ${volumeId}: cannot tell which attachment os-attach made for host ${connector.host} (${fresh.length} new)`);
      this.legacyConnectors.set(id, connector);
      return { id, volumeId, connectionInfo };
    } catch (err) {
      // Roll back as far as we got: detach what os-attach made, close the export, unreserve.
      for (const id of fresh) await detachLegacy(this.client, volumeId, id).catch((e) => log.warn(`rollback os-detach ${id}: ${(e as Error).message}`));
      if (connected) await terminateConnection(this.client, volumeId, connector).catch((e) => log.warn(`rollback os-terminate_connection: ${(e as Error).message}`));
      await unreserveVolume(this.client, volumeId).catch(() => undefined);
      throw err;
    }
  }

  async detach(volumeId: string, attachmentId: string): Promise<void> {
    if (await this.usesAttachmentsApi()) {
      await deleteAttachment(this.client, attachmentId);
      return;
    }
    let v: CinderVolume;
    try {
      v = await this.client.getVolume(volumeId);
    } catch (err) {
      if (err instanceof NotFoundError) return;
      throw err;
    }
    if (!(v.attachments ?? []).some((a) => a.attachment_id === attachmentId)) return;
    const connector = this.legacyConnectors.get(attachmentId) ?? connectorProperties();
    await terminateConnection(this.client, volumeId, connector);
    await detachLegacy(this.client, volumeId, attachmentId);
    this.legacyConnectors.delete(attachmentId);
  }

  async listLeftovers(tag: { host: string }): Promise<{ volumes: VolumeRecord[]; snapshots: SnapshotRecord[] }> {
    const metadata = { [TEMPORARY_KEY]: 'true', [HOST_KEY]: tag.host };
    const allTenants = await this.isAdmin();
    const [vols, snaps] = await Promise.all([this.client.listVolumes({ allTenants, metadata }), this.client.listSnapshots({ allTenants, metadata })]);
    return { volumes: vols.map(toVolumeRecord), snapshots: snaps.map(toSnapshotRecord) };
  }

  async close(): Promise<void> {
    this.legacyConnectors.clear();
    this.pendingBootable.clear();
  }
}
