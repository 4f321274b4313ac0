/**
 * Local connector: attaches a local volume (a raw image file in the pool, or a
 * block device) as a loop device through scripts/local-attach|detach.
 */
import { DeviceError } from '../errors.js';
import { ScriptConnector, type ScriptConnectorOptions } from './script.js';

/** connection_info {driver_volume_type:'local', data:{device_path}} → /dev/loopN. */
export class LocalConnector extends ScriptConnector {
  constructor(opts: ScriptConnectorOptions = {}) {
    super('local', opts);
  }

  protected override validate(data: Record<string, unknown>): void {
    if (typeof data.device_path !== 'string' || !data.device_path) {
      throw new DeviceError('local connection_info has no device_path');
    }
  }
}
