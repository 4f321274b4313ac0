/**
 * RBD connector: scripts/rbd-attach|detach, kernel `rbd device map` or userspace
 * (qemu-storage-daemon + librbd FUSE export, or rbd-fuse; then a loop device).
 */
import { DeviceError } from '../errors.js';
import { ScriptConnector, type ScriptConnectorOptions } from './script.js';

/** connection_info {driver_volume_type:'rbd', data:{name:'pool/image', hosts, ports, auth_username, keyring?}}. */
export class RbdConnector extends ScriptConnector {
  constructor(opts: ScriptConnectorOptions = {}) {
    super('rbd', opts);
  }

  protected override validate(data: Record<string, unknown>): void {
    if (typeof data.name !== 'string' || !/^[^/]+\/[^/]+(\/[^/]+)?$/.test(data.name)) {
      throw new DeviceError(`rbd connection_info name must be pool/image, not ${JSON.stringify(data.name)}`);
    }
  }
}
