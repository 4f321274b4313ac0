/**
 * Block Storage resources around volumes: volume types, availability zones,
 * generic volume groups and group types, and user messages (the "why" of an
 * error state).
 */
import { NotFoundError, UsageError } from '../../errors.js';
import { parseOsTime } from './http.js';
import type { CinderClient } from './client.js';
import type { CinderAvailabilityZone, CinderGroup, CinderGroupType, CinderMessage, CinderVolume, CinderVolumeType } from './types.js';

/** GET /types (public types, plus private ones visible to the caller). */
export async function listVolumeTypes(c: CinderClient): Promise<CinderVolumeType[]> {
  const b = await c.call<{ volume_types: CinderVolumeType[] }>('GET', '/types', { what: 'list volume types' });
  return b.volume_types ?? [];
}

/** A volume type by ID or name; NotFoundError listing the known names. */
export async function findVolumeType(c: CinderClient, idOrName: string): Promise<CinderVolumeType> {
  const types = await listVolumeTypes(c);
  const t = types.find((x) => x.id === idOrName) ?? types.find((x) => x.name === idOrName);
  if (!t) throw new NotFoundError(`volume type ${idOrName} not found; known types: ${types.map((x) => x.name).join(', ') || '(none)'}`);
  return t;
}

/** GET /os-availability-zone. */
export async function listAvailabilityZones(c: CinderClient): Promise<CinderAvailabilityZone[]> {
  const b = await c.call<{ availabilityZoneInfo: CinderAvailabilityZone[] }>('GET', '/os-availability-zone', { what: 'list availability zones' });
  return b.availabilityZoneInfo ?? [];
}

/** True when the zone exists and is available (to decide at restore whether a saved zone can be reused). */
export async function availabilityZoneExists(c: CinderClient, zone: string): Promise<boolean> {
  return (await listAvailabilityZones(c)).some((z) => z.zoneName === zone && z.zoneState?.available !== false);
}

/** GET /groups/{id} (3.13+; with its volume IDs from 3.25). */
export async function getGroup(c: CinderClient, id: string): Promise<CinderGroup> {
  await c.init();
  c.requireMicroversion('3.13', 'volume groups');
  const b = await c.call<{ group: CinderGroup }>('GET', `/groups/${encodeURIComponent(id)}`, {
    what: `show group ${id}`,
    query: c.atLeast('3.25') ? { list_volume: 'true' } : undefined,
  });
  return b.group;
}

/** GET /groups/detail, every page. */
export async function listGroups(c: CinderClient, opts: { allTenants?: boolean; name?: string } = {}): Promise<CinderGroup[]> {
  await c.init();
  c.requireMicroversion('3.13', 'volume groups');
  const q: Record<string, string | undefined> = { all_tenants: opts.allTenants ? '1' : undefined, name: opts.name };
  const all = await c.listAll<CinderGroup>('/groups/detail', 'groups', q, 'list groups');
  return opts.name === undefined ? all : all.filter((g) => g.name === opts.name);
}

/** A group by ID or unique name. */
export async function findGroup(c: CinderClient, idOrName: string, allTenants = false): Promise<CinderGroup> {
  try {
    return await getGroup(c, idOrName);
  } catch (err) {
    if (!(err instanceof NotFoundError)) throw err;
  }
  const byName = await listGroups(c, { name: idOrName, allTenants });
  if (byName.length === 1) return getGroup(c, byName[0]!.id);
  if (byName.length > 1) throw new UsageError(`group name ${idOrName} is ambiguous: ${byName.map((g) => g.id).join(', ')}`);
  throw new NotFoundError(`group ${idOrName} not found`);
}

/** Volumes of a group (volume list filtered by group_id, 3.10+). */
export async function listGroupVolumes(c: CinderClient, groupId: string, allTenants = false): Promise<CinderVolume[]> {
  await c.init();
  c.requireMicroversion('3.10', 'listing the volumes of a group');
  const vols = await c.listVolumes({ allTenants, filters: { group_id: groupId } });
  return vols.filter((v) => v.group_id === undefined || v.group_id === groupId);
}

/** POST /groups (3.13+). */
export async function createGroup(
  c: CinderClient,
  g: { name: string; groupType: string; volumeTypes: string[]; description?: string; availabilityZone?: string },
): Promise<CinderGroup> {
  await c.init();
  c.requireMicroversion('3.13', 'volume groups');
  const body: Record<string, unknown> = { name: g.name, group_type: g.groupType, volume_types: g.volumeTypes };
  if (g.description) body.description = g.description;
  if (g.availabilityZone) body.availability_zone = g.availabilityZone;
  const what = `create group ${g.name}`;
  const find = async () => {
    const found = await listGroups(c, { name: g.name });
    return found.length === 1 ? found[0] : undefined;
  };
  return c.createOnce(what, () => c.raw('POST', '/groups', { body: { group: body }, what, retry: 'safe' }), find, (res) => (res.json as { group: CinderGroup }).group);
}

/** Delete a group (POST /groups/{id}/action {"delete": ...}); a missing group is success. */
export async function deleteGroup(c: CinderClient, id: string, deleteVolumes = false): Promise<void> {
  await c.call('POST', `/groups/${encodeURIComponent(id)}/action`, {
    body: { delete: { 'delete-volumes': deleteVolumes } },
    what: `delete group ${id}`,
    retry: 'idempotent',
    ok: [404],
  });
}

/** GET /group_types (3.11+). */
export async function listGroupTypes(c: CinderClient): Promise<CinderGroupType[]> {
  await c.init();
  c.requireMicroversion('3.11', 'group types');
  const b = await c.call<{ group_types: CinderGroupType[] }>('GET', '/group_types', { what: 'list group types' });
  return b.group_types ?? [];
}

/** POST /group_types (admin). */
export async function createGroupType(c: CinderClient, name: string): Promise<CinderGroupType> {
  await c.init();
  c.requireMicroversion('3.11', 'group types');
  const b = await c.call<{ group_type: CinderGroupType }>('POST', '/group_types', { body: { group_type: { name, is_public: true } }, what: `create group type ${name}` });
  return b.group_type;
}

/** DELETE /group_types/{id} (admin); a missing type is success. */
export async function deleteGroupType(c: CinderClient, id: string): Promise<void> {
  await c.call('DELETE', `/group_types/${encodeURIComponent(id)}`, { what: `delete group type ${id}`, retry: 'idempotent', ok: [404] });
}

/** User messages about a resource, newest first (3.3+; empty when the server has no messages API). */
export async function listMessages(c: CinderClient, resourceId: string): Promise<CinderMessage[]> {
  await c.init();
  if (!c.atLeast('3.3')) return [];
  const b = await c.call<{ messages: CinderMessage[] }>('GET', '/messages', { query: { resource_uuid: resourceId }, what: `list messages of ${resourceId}` });
  return (b.messages ?? [])
    .filter((m) => !m.resource_uuid || m.resource_uuid === resourceId)
    .sort((a, b2) => (parseOsTime(b2.created_at) ?? 0) - (parseOsTime(a.created_at) ?? 0));
}
