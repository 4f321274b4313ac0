/**
 * VolumeProvider: the volume plane. The backup and restore jobs drive a cloud's
 * block storage only through this interface, so they never know whether it is
 * Cinder or the local pool of sparse images.
 *
 * Status values follow Cinder's: creating, available, in-use, attaching,
 * detaching, deleting, error, error_deleting, reserved, maintenance, ...
 * Every wait has a timeout that scales with size and stops on an error state
 * with the server's fault message (CloudError).
 */

/** The record of a volume as saved inside a backup: everything a restore needs. */
export interface VolumeRecord {
  id: string;
  name: string;
  description?: string | null;
  /** Size in GiB, as Cinder counts. */
  size: number;
  status: string;
  volumeType?: string | null;
  availabilityZone?: string | null;
  bootable: boolean;
  metadata: Record<string, string>;
  imageMetadata?: Record<string, string>;
  groupId?: string | null;
  projectId?: string | null;
  /** Server IDs this volume is attached to (informational). */
  attachments: { serverId?: string | null; attachmentId?: string; hostName?: string | null; device?: string | null }[];
  createdAt?: string;
  multiattach?: boolean;
  encrypted?: boolean;
}

export interface SnapshotRecord {
  id: string;
  volumeId: string;
  name: string;
  status: string;
  /** Size in GiB. */
  size: number;
  createdAt: string;
  metadata: Record<string, string>;
}

/** What this node tells the cloud about itself (os-brick's connector properties). */
export interface ConnectorProperties {
  ip: string;
  host: string;
  initiator?: string;
  wwpns?: string[];
  wwnns?: string[];
  multipath: boolean;
  platform: string;
  os_type: string;
  do_local_attach?: boolean;
  [key: string]: unknown;
}

/** Cinder's connection_info: driver_volume_type plus its data (flattened or under `data`). */
export interface ConnectionInfo {
  driver_volume_type: string;
  data: Record<string, unknown>;
}

export interface Attachment {
  id: string;
  volumeId: string;
  connectionInfo: ConnectionInfo;
}

export interface CreateVolumeOptions {
  name: string;
  size: number;
  description?: string;
  volumeType?: string | null;
  availabilityZone?: string | null;
  metadata?: Record<string, string>;
  snapshotId?: string;
  sourceVolumeId?: string;
  bootable?: boolean;
}

export interface VolumeFilter {
  /** Every project (admin only). */
  allTenants?: boolean;
  name?: string;
  groupId?: string;
  /** Only volumes whose metadata has these key=value pairs. */
  metadata?: Record<string, string>;
}

/** How a wait for a volume or snapshot state may end early. */
export interface WaitOptions {
  /** Aborted by SIGINT/SIGTERM: the wait throws InterruptedError at once. */
  signal?: AbortSignal;
}

export interface VolumeProvider {
  /** 'local' or 'cinder'. */
  readonly kind: string;
  getVolume(idOrName: string): Promise<VolumeRecord>; // NotFoundError when absent, ambiguous names are a UsageError
  listVolumes(filter?: VolumeFilter): Promise<VolumeRecord[]>;
  createVolume(opts: CreateVolumeOptions): Promise<VolumeRecord>; // returns at once (status creating)
  /** Idempotent: a missing volume is success. `wait`: return only once it is gone (a snapshot it was cloned from can be deleted then). */
  deleteVolume(id: string, opts?: { wait?: boolean; timeoutMs?: number }): Promise<void>;
  updateMetadata(id: string, metadata: Record<string, string>, replace?: boolean): Promise<void>;
  setBootable(id: string, bootable: boolean): Promise<void>;
  /** Wait until the volume reaches one of `states`; error states throw CloudError; `signal` ends the wait with InterruptedError. */
  waitVolume(id: string, states: string[], timeoutMs?: number, opts?: WaitOptions): Promise<VolumeRecord>;

  getSnapshot(id: string): Promise<SnapshotRecord>;
  createSnapshot(volumeId: string, name: string, opts: { force: boolean; metadata?: Record<string, string>; description?: string }): Promise<SnapshotRecord>;
  /** Idempotent. `wait`: return only once it is gone; a delete the cloud refused afterwards (dependent clone) throws. */
  deleteSnapshot(id: string, opts?: { wait?: boolean; timeoutMs?: number }): Promise<void>;
  waitSnapshot(id: string, states: string[], timeoutMs?: number, opts?: WaitOptions): Promise<SnapshotRecord>;

  /** Attach the volume to this node; returns the connection_info the connector script needs. */
  attach(volumeId: string, connector: ConnectorProperties): Promise<Attachment>;
  /** Remove an attachment; idempotent. */
  detach(volumeId: string, attachmentId: string): Promise<void>;

  /** Resources left by crashed runs: temporary volumes and snapshots tagged by this agent. */
  listLeftovers?(tag: { host: string }): Promise<{ volumes: VolumeRecord[]; snapshots: SnapshotRecord[] }>;
  close?(): Promise<void>;
}
