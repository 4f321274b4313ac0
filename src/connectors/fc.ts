/**
 * Fibre Channel connector: scripts/fc-attach|detach (HBA rescan through sysfs,
 * by-path lookup, multipath when present; SCSI device delete on detach).
 */
import { DeviceError } from '../errors.js';
import { ScriptConnector, type ScriptConnectorOptions } from './script.js';

/** connection_info {driver_volume_type:'fibre_channel', data:{target_wwn, target_lun}}. */
export class FcConnector extends ScriptConnector {
  constructor(opts: ScriptConnectorOptions = {}) {
    super('fc', opts);
  }

  protected override validate(data: Record<string, unknown>): void {
    const wwn = data.target_wwn ?? data.target_wwns;
    const ok = (typeof wwn === 'string' && wwn) || (Array.isArray(wwn) && wwn.length > 0);
    if (!ok) throw new DeviceError('fibre_channel connection_info has no target_wwn');
    if (data.target_lun === undefined || data.target_lun === null) throw new DeviceError('fibre_channel connection_info has no target_lun');
  }
}
