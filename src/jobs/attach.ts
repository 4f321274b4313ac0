/**
 * Attach a volume to this node for a job: attachments API → connection_info →
 * the protocol's helper script → a block device. Each step is recorded in the
 * catalog before it happens and pushed on the job's cleanup stack after.
 */
import type { Catalog } from '../catalog/catalog.js';
import type { AttachedDevice } from '../connectors/connector.js';
import { connectorFor } from '../connectors/index.js';
import type { ScriptConnectorOptions } from '../connectors/script.js';
import type { Progress } from '../util/progress.js';
import type { ConnectorProperties, VolumeProvider } from '../volume/provider.js';
import type { CleanupStack } from './cleanup-stack.js';

/** Options every volume job (backup, restore) takes: this node, how it attaches volumes, waits, abort and progress. */
export interface VolumeJobOptions {
  host: string;
  stateDir: string;
  /** Helper-script options (state dir, attach mode, timeout, extra env). */
  scripts: ScriptConnectorOptions;
  connector: ConnectorProperties;
  /** Seconds allowed for a volume/snapshot to become ready, plus 10 s per GiB. */
  waitTimeout?: number;
  signal: AbortSignal;
  progress: Progress;
}

export interface AttachOptions {
  jobId: string;
  host: string;
  readOnly: boolean;
  connector: ConnectorProperties;
  scripts: ScriptConnectorOptions;
  signal?: AbortSignal;
}

export async function attachForJob(provider: VolumeProvider, catalog: Catalog, cleanup: CleanupStack, volumeId: string, o: AttachOptions): Promise<AttachedDevice> {
  const arow = catalog.planResource(o.jobId, 'attachment', { provider: provider.kind, host: o.host, data: { volumeId } });
  const att = await provider.attach(volumeId, o.connector);
  catalog.resourceCreated(arow, att.id, { volumeId });
  cleanup.push(`detach volume ${volumeId} (attachment ${att.id})`, () => provider.detach(volumeId, att.id), arow);
  const connector = connectorFor(att.connectionInfo.driver_volume_type, o.scripts);
  const drow = catalog.planResource(o.jobId, 'device', { provider: connector.protocol, host: o.host });
  const dev = await connector.attach(att.connectionInfo, { readOnly: o.readOnly, signal: o.signal });
  catalog.resourceCreated(drow, dev.path, { protocol: dev.protocol, state: dev.state });
  cleanup.push(`detach device ${dev.path}`, () => connector.detach(dev), drow);
  return dev;
}
