/**
 * Attaching volumes to this node: the attachments API (microversion 3.44+:
 * create with a connector → connection_info, os-complete, delete) and the
 * legacy volume actions for clouds without it (os-reserve,
 * os-initialize_connection, os-attach / os-detach, os-terminate_connection,
 * os-unreserve).
 */
import type { ConnectionInfo, ConnectorProperties } from '../provider.js';
import { CloudError } from '../../errors.js';
import { log, registerSecret } from '../../util/log.js';
import type { CinderClient } from './client.js';
import type { CinderAttachment, RawConnectionInfo } from './types.js';

/** Microversion of the attachments API with os-complete. */
export const ATTACHMENTS_MICROVERSION = '3.44';

/** Keys of connection_info data that hold secrets (CHAP passwords, keyrings). */
const SECRET_KEY = /password|secret|keyring|token|(^|_)key$/i;

/**
 * connection_info as {driver_volume_type, data}, whether Cinder nested it or
 * returned it flat (the attachments API puts the data keys beside
 * driver_volume_type, plus attachment_id). Registers secrets found in it.
 */
export function normalizeConnectionInfo(raw: RawConnectionInfo | null | undefined, what = 'connection_info'): ConnectionInfo {
  if (!raw || typeof raw !== 'object') throw new CloudError(`${what}: Cinder returned no connection_info`);
  const type = raw.driver_volume_type;
  if (typeof type !== 'string' || !type) throw new CloudError(`${what}: connection_info without driver_volume_type`);
  let data: Record<string, unknown>;
  if (raw.data && typeof raw.data === 'object' && !Array.isArray(raw.data)) {
    data = { ...raw.data };
  } else {
    data = {};
    for (const [k, v] of Object.entries(raw)) if (k !== 'driver_volume_type' && k !== 'data') data[k] = v;
  }
  for (const [k, v] of Object.entries(data)) {
    if (typeof v === 'string' && SECRET_KEY.test(k) && !/_uuid$|_type$|_method$|_name$/.test(k)) registerSecret(v);
  }
  return { driver_volume_type: type, data };
}

/** GET /attachments/detail?volume_id= (3.31+ for the filter). */
export async function listAttachments(c: CinderClient, volumeId: string): Promise<CinderAttachment[]> {
  await c.init();
  c.requireMicroversion('3.31', 'listing attachments of a volume');
  return c.listAll<CinderAttachment>('/attachments/detail', 'attachments', { volume_id: volumeId }, `list attachments of volume ${volumeId}`);
}

/** GET /attachments/{id}. */
export async function getAttachment(c: CinderClient, id: string): Promise<CinderAttachment> {
  const b = await c.call<{ attachment: CinderAttachment }>('GET', `/attachments/${encodeURIComponent(id)}`, { what: `show attachment ${id}` });
  return b.attachment;
}

/**
 * POST /attachments {attachment:{volume_uuid, connector}} (note: volume_uuid,
 * not volume_id). When the answer is lost, the attachment that appeared on
 * the volume meanwhile is adopted instead of creating a second one.
 */
export async function createAttachment(
  c: CinderClient,
  volumeId: string,
  connector: ConnectorProperties,
  opts: { mode?: 'rw' | 'ro'; instanceUuid?: string } = {},
): Promise<CinderAttachment> {
  await c.init();
  c.requireMicroversion(ATTACHMENTS_MICROVERSION, 'the attachments API');
  const body: Record<string, unknown> = { volume_uuid: volumeId, connector };
  if (opts.instanceUuid) body.instance_uuid = opts.instanceUuid;
  if (opts.mode && c.atLeast('3.54')) body.mode = opts.mode;
  const before = new Set((await listAttachments(c, volumeId)).map((a) => a.id));
  const what = `attach volume ${volumeId}`;
  const find = async () => {
    const fresh = (await listAttachments(c, volumeId)).filter((a) => !before.has(a.id));
    if (fresh.length !== 1) return undefined;
    const a = await getAttachment(c, fresh[0]!.id);
    if (a.connection_info) return a; // the create went through, only its answer was lost
    // Cinder failed to connect (e.g. HTTP 500 "Unable to create attachment for volume") and could not
    // roll back its reservation: remove it, so that the volume is free for the next attempt.
    log.warn(`${what}: a failed attempt left attachment ${a.id} (${a.status}) without connection_info; deleting it`);
    await deleteAttachment(c, a.id);
    return undefined;
  };
  return c.createOnce(what, () => c.raw('POST', '/attachments', { body: { attachment: body }, what, retry: 'safe' }), find, (res) => (res.json as { attachment: CinderAttachment }).attachment);
}

/** POST /attachments/{id}/action {"os-complete": null}: the volume becomes in-use. */
export async function completeAttachment(c: CinderClient, id: string): Promise<void> {
  await c.call('POST', `/attachments/${encodeURIComponent(id)}/action`, { body: { 'os-complete': null }, what: `complete attachment ${id}`, retry: 'idempotent' });
}

/** DELETE /attachments/{id}: detaches (and unreserves); a missing attachment is success. */
export async function deleteAttachment(c: CinderClient, id: string): Promise<void> {
  await c.call('DELETE', `/attachments/${encodeURIComponent(id)}`, { what: `delete attachment ${id}`, retry: 'idempotent', ok: [404] });
}

// ---- legacy actions (before 3.44) ---------------------------------------------

/** os-reserve: the volume goes to `attaching`. */
export async function reserveVolume(c: CinderClient, volumeId: string): Promise<void> {
  await c.volumeAction(volumeId, 'os-reserve', null, 'safe');
}

/** os-unreserve: back to `available` after a failed legacy attach. */
export async function unreserveVolume(c: CinderClient, volumeId: string): Promise<void> {
  await c.volumeAction(volumeId, 'os-unreserve', null);
}

/** os-initialize_connection {connector} → connection_info. */
export async function initializeConnection(c: CinderClient, volumeId: string, connector: ConnectorProperties): Promise<ConnectionInfo> {
  const b = await c.volumeAction<{ connection_info?: RawConnectionInfo }>(volumeId, 'os-initialize_connection', { connector });
  return normalizeConnectionInfo(b?.connection_info, `initialize connection of volume ${volumeId}`);
}

/** os-terminate_connection {connector}. */
export async function terminateConnection(c: CinderClient, volumeId: string, connector: ConnectorProperties): Promise<void> {
  await c.volumeAction(volumeId, 'os-terminate_connection', { connector });
}

/** os-attach to a host (no server): the volume becomes in-use. */
export async function attachLegacy(c: CinderClient, volumeId: string, hostName: string, mountpoint: string, mode: 'rw' | 'ro' = 'rw'): Promise<void> {
  await c.volumeAction(volumeId, 'os-attach', { host_name: hostName, mountpoint, mode }, 'safe');
}

/** os-detach {attachment_id}. */
export async function detachLegacy(c: CinderClient, volumeId: string, attachmentId?: string): Promise<void> {
  await c.volumeAction(volumeId, 'os-detach', attachmentId ? { attachment_id: attachmentId } : {});
}
