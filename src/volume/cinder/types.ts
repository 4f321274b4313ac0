/**
 * The Block Storage v3 resources as Cinder returns them (only the fields we use;
 * everything may be absent on older microversions).
 */

/** GET /volumes/{id} → volume. */
export interface CinderVolume {
  id: string;
  name?: string | null;
  description?: string | null;
  size: number;
  status: string;
  volume_type?: string | null;
  availability_zone?: string | null;
  /** "true"/"false" as a string in the API. */
  bootable?: string | boolean;
  metadata?: Record<string, string>;
  volume_image_metadata?: Record<string, string>;
  group_id?: string | null;
  'os-vol-tenant-attr:tenant_id'?: string;
  /** `id` here is the volume ID (Cinder's view); the attachment's is `attachment_id`. */
  attachments?: { id?: string; attachment_id?: string; server_id?: string | null; host_name?: string | null; device?: string | null; volume_id?: string }[];
  created_at?: string;
  multiattach?: boolean;
  encrypted?: boolean;
  snapshot_id?: string | null;
  source_volid?: string | null;
  migration_status?: string | null;
}

/** GET /snapshots/{id} → snapshot. */
export interface CinderSnapshot {
  id: string;
  volume_id: string;
  name?: string | null;
  description?: string | null;
  status: string;
  size: number;
  created_at: string;
  metadata?: Record<string, string>;
  'os-extended-snapshot-attributes:project_id'?: string;
}

/** connection_info as Cinder returns it: nested {driver_volume_type, data} or flat (attachments API). */
export type RawConnectionInfo = Record<string, unknown> & { driver_volume_type?: string; data?: Record<string, unknown> };

/** GET /attachments/{id} → attachment (3.27+). */
export interface CinderAttachment {
  id: string;
  status: string;
  volume_id?: string;
  instance?: string | null;
  attach_mode?: string;
  attached_at?: string | null;
  detached_at?: string | null;
  connection_info?: RawConnectionInfo | null;
}

/** GET /messages → messages (3.3+). */
export interface CinderMessage {
  id: string;
  user_message: string;
  event_id?: string;
  resource_uuid?: string;
  resource_type?: string;
  message_level?: string;
  created_at?: string;
  request_id?: string;
}

/** GET /groups/{id} → group (3.13+). */
export interface CinderGroup {
  id: string;
  name?: string | null;
  description?: string | null;
  status: string;
  group_type?: string;
  volume_types?: string[];
  availability_zone?: string | null;
  created_at?: string;
  volumes?: string[];
}

/** GET /types → volume_types. */
export interface CinderVolumeType {
  id: string;
  name: string;
  is_public?: boolean;
  description?: string | null;
  extra_specs?: Record<string, string>;
}

/** GET /group_types → group_types (3.11+). */
export interface CinderGroupType {
  id: string;
  name: string;
  is_public?: boolean;
  group_specs?: Record<string, string>;
}

/** GET /os-availability-zone → availabilityZoneInfo. */
export interface CinderAvailabilityZone {
  zoneName: string;
  zoneState: { available: boolean };
}

/** Body of POST /volumes (the `volume` object). */
export interface CinderVolumeCreate {
  size: number;
  name?: string;
  description?: string;
  volume_type?: string;
  availability_zone?: string;
  metadata?: Record<string, string>;
  snapshot_id?: string;
  source_volid?: string;
  group_id?: string;
  imageRef?: string;
}
