/**
 * Connector registry: picks the device-plane connector for a connection_info's
 * driver_volume_type.
 */
import { DeviceError } from '../errors.js';
import type { Connector } from './connector.js';
import { FcConnector } from './fc.js';
import { IscsiConnector } from './iscsi.js';
import { LocalConnector } from './local.js';
import { RbdConnector } from './rbd.js';
import type { ScriptConnectorOptions } from './script.js';

export type { AttachedDevice, Connector } from './connector.js';
export { FcConnector } from './fc.js';
export { IscsiConnector } from './iscsi.js';
export { LocalConnector } from './local.js';
export { RbdConnector } from './rbd.js';
export {
  ScriptConnector,
  connectionData,
  connectionEnv,
  detachOrphans,
  findOrphanAttachments,
  parseKeyValues,
  type AttachMode,
  type OrphanAttachment,
  type ScriptConnectorOptions,
} from './script.js';
export { connectorProperties } from './properties.js';

/** driver_volume_type values we can attach, and the connector class for each. */
const registry: Record<string, new (opts?: ScriptConnectorOptions) => Connector> = {
  local: LocalConnector,
  iscsi: IscsiConnector,
  rbd: RbdConnector,
  ceph: RbdConnector,
  fibre_channel: FcConnector,
  fc: FcConnector,
};

/** The driver_volume_type values connectorFor accepts. */
export const supportedVolumeTypes: readonly string[] = Object.keys(registry);

/** The connector for a driver_volume_type ('local', 'iscsi', 'rbd', 'fibre_channel'); DeviceError otherwise. */
export function connectorFor(driverVolumeType: string, opts: ScriptConnectorOptions = {}): Connector {
  const Ctor = registry[String(driverVolumeType ?? '').toLowerCase()];
  if (!Ctor) {
    throw new DeviceError(
      `no connector for driver_volume_type '${driverVolumeType}' (supported: local, iscsi, rbd, fibre_channel)`,
    );
  }
  return new Ctor(opts);
}
