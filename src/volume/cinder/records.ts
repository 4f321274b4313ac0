/**
 * Mapping of Cinder's JSON to the provider records (VolumeRecord, SnapshotRecord).
 */
import type { SnapshotRecord, VolumeRecord } from '../provider.js';
import { parseOsTime } from './http.js';
import type { CinderSnapshot, CinderVolume } from './types.js';

/**
 * An OpenStack timestamp ("2024-05-01T10:00:00.123456", UTC without a zone) as ISO 8601 with Z.
 * Backups order and choose parents by these strings (and JavaScript reads a zone-less date-time
 * as local time), so they must all be in one unambiguous form.
 */
export function isoTime(s: string | null | undefined): string | undefined {
  const t = parseOsTime(s);
  return t === undefined ? (s ?? undefined) : new Date(t).toISOString();
}

/**
 * Admin metadata Cinder merges into every volume's `metadata` (set by attach: readonly,
 * attached_mode). Not the user's: left out of VolumeRecord.metadata so a restore does not
 * write them back as user metadata.
 */
export const ADMIN_METADATA_KEYS = ['readonly', 'attached_mode'];

/** VolumeRecord of a Cinder volume. */
export function toVolumeRecord(v: CinderVolume): VolumeRecord {
  const rec: VolumeRecord = {
    id: v.id,
    name: v.name ?? '',
    description: v.description ?? null,
    size: v.size,
    status: v.status,
    volumeType: v.volume_type ?? null,
    availabilityZone: v.availability_zone ?? null,
    bootable: v.bootable === true || String(v.bootable).toLowerCase() === 'true',
    metadata: Object.fromEntries(Object.entries(v.metadata ?? {}).filter(([k]) => !ADMIN_METADATA_KEYS.includes(k))),
    groupId: v.group_id ?? null,
    projectId: v['os-vol-tenant-attr:tenant_id'] ?? null,
    attachments: (v.attachments ?? []).map((a) => ({
      serverId: a.server_id ?? null,
      // In this list `id` is the volume ID; the attachment is `attachment_id`.
      attachmentId: a.attachment_id,
      hostName: a.host_name ?? null,
      device: a.device ?? null,
    })),
    createdAt: isoTime(v.created_at),
    multiattach: v.multiattach ?? false,
    encrypted: v.encrypted ?? false,
  };
  if (v.volume_image_metadata) rec.imageMetadata = { ...v.volume_image_metadata };
  return rec;
}

/** SnapshotRecord of a Cinder snapshot. */
export function toSnapshotRecord(s: CinderSnapshot): SnapshotRecord {
  return {
    id: s.id,
    volumeId: s.volume_id,
    name: s.name ?? '',
    status: s.status,
    size: s.size,
    createdAt: isoTime(s.created_at) ?? '',
    metadata: { ...(s.metadata ?? {}) },
  };
}

/** A placeholder record for a volume that no longer exists. */
export function emptyVolume(id: string): VolumeRecord {
  return { id, name: '', size: 0, status: '', bootable: false, metadata: {}, attachments: [] };
}
