/**
 * Connector: the device plane. Turns a connection_info into a block device path
 * on this node and back, by running the protocol's helper script pair in
 * scripts/ (scripts/<protocol>-attach, scripts/<protocol>-detach) with execa.
 *
 * Script contract (as kopia hooks): inputs are environment variables
 * (PF_* built from connection_info, PF_READ_ONLY, PF_STATE_DIR, PF_ATTACH_MODE),
 * outputs are KEY=VALUE lines on stdout (DEVICE=/dev/loopN plus whatever detach
 * needs), diagnostics on stderr. Detach receives attach's outputs back as env and
 * is idempotent: detaching something already gone exits 0.
 */
import type { ConnectionInfo } from '../volume/provider.js';

export interface AttachedDevice {
  /** Block device path, e.g. /dev/loop3. */
  path: string;
  protocol: string;
  /** Everything attach printed as KEY=VALUE; handed back to detach. Saved in the catalog for cleanup. */
  state: Record<string, string>;
}

export interface Connector {
  readonly protocol: string;
  /** Attach; throws DeviceError with the script's stderr on failure or timeout. */
  attach(info: ConnectionInfo, opts: { readOnly: boolean; signal?: AbortSignal }): Promise<AttachedDevice>;
  /** Detach; idempotent. */
  detach(device: AttachedDevice): Promise<void>;
}
