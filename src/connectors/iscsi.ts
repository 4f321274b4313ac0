/**
 * iSCSI connector: scripts/iscsi-attach|detach, kernel (open-iscsi) or userspace
 * (qemu-storage-daemon + libiscsi, FUSE export, loop device).
 */
import { DeviceError } from '../errors.js';
import { ScriptConnector, type ScriptConnectorOptions } from './script.js';

/** connection_info {driver_volume_type:'iscsi', data:{target_portal, target_iqn, target_lun, auth_*}}. */
export class IscsiConnector extends ScriptConnector {
  constructor(opts: ScriptConnectorOptions = {}) {
    super('iscsi', opts);
  }

  protected override validate(data: Record<string, unknown>): void {
    const portal = data.target_portal ?? (Array.isArray(data.target_portals) ? data.target_portals[0] : undefined);
    const iqn = data.target_iqn ?? (Array.isArray(data.target_iqns) ? data.target_iqns[0] : undefined);
    if (typeof portal !== 'string' || !portal) throw new DeviceError('iscsi connection_info has no target_portal');
    if (typeof iqn !== 'string' || !iqn) throw new DeviceError('iscsi connection_info has no target_iqn');
  }
}
