/**
 * CinderVolumeProvider against the real lab (Keystone v3 + Cinder with the RBD driver), as the admin
 * and as a tenant (demo, role member). Everything created is removed in afterAll, in reverse order
 * (clones before their snapshots, snapshots before their volumes), and the suite checks that nothing
 * carrying its run tag is left in any project.
 *
 * Lab: PERMAFROST_LAB_ENV=<env.sh> uses an already running lab as is; otherwise the project's test
 * lab (test/setup/lab.ts, ensureLab(['cinder'])). Without root or a lab the suite skips with a reason.
 */
import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connectorProperties } from '../../src/connectors/properties.js';
import { AuthError, CloudError, NotFoundError } from '../../src/errors.js';
import { createAttachment, deleteAttachment } from '../../src/volume/cinder/attachments.js';
import { KeystoneSession } from '../../src/volume/cinder/keystone.js';
import { CinderVolumeProvider } from '../../src/volume/cinder/provider.js';
import { HOST_KEY as HOST_TAG, TEMPORARY_KEY as TEMP_TAG } from '../../src/volume/temporary.js';
import {
  availabilityZoneExists,
  createGroup,
  createGroupType,
  deleteGroup,
  deleteGroupType,
  getGroup,
  listGroupVolumes,
  listGroups,
  listMessages,
  listVolumeTypes,
} from '../../src/volume/cinder/resources.js';
import type { ConnectorProperties } from '../../src/volume/provider.js';
import type { Creds } from '../helpers/cinder.js';
import { ensureLab, isSkip, parseEnvSh } from '../setup/lab.js';

const RUN = `pf-t-${randomBytes(3).toString('hex')}`;
const HOST = `${RUN}-node`;

let skip: string | undefined;
let admin: CinderVolumeProvider;
let demo: CinderVolumeProvider;
let adminCreds: Creds;
let demoCreds: Creds;
let connector: ConnectorProperties;
/** Cleanup stack, unwound in reverse in afterAll. */
const cleanup: { what: string; fn: () => Promise<unknown> }[] = [];
const timings: Record<string, number> = {};

async function labVars(): Promise<Record<string, string> | string> {
  const file = process.env.PERMAFROST_LAB_ENV;
  if (file) {
    if (!existsSync(file)) return `PERMAFROST_LAB_ENV=${file} does not exist`;
    return parseEnvSh(readFileSync(file, 'utf8'));
  }
  const lab = await ensureLab(['cinder']);
  if (isSkip(lab)) return lab.skip;
  return lab.vars;
}

function makeProvider(c: Creds): Promise<CinderVolumeProvider> {
  return CinderVolumeProvider.create({
    env: { OS_AUTH_URL: c.authUrl, OS_USERNAME: c.username, OS_PASSWORD: c.password, OS_PROJECT_NAME: c.projectName, OS_REGION_NAME: 'RegionOne' },
    searchDirs: [],
  });
}

async function timed<T>(label: string, fn: () => Promise<T>): Promise<T> {
  const t0 = performance.now();
  try {
    return await fn();
  } finally {
    timings[label] = Math.round(performance.now() - t0);
  }
}

beforeAll(async () => {
  const vars = await labVars();
  if (typeof vars === 'string') {
    skip = vars;
    console.warn(`[cinder-provider] skipped: ${vars}`);
    return;
  }
  if (!vars.OS_AUTH_URL) {
    skip = 'the lab environment has no OS_AUTH_URL (cinder part not up)';
    console.warn(`[cinder-provider] skipped: ${skip}`);
    return;
  }
  adminCreds = { authUrl: vars.OS_AUTH_URL, username: vars.OS_USERNAME!, password: vars.OS_PASSWORD!, projectName: vars.OS_PROJECT_NAME! };
  demoCreds = {
    authUrl: vars.OS_AUTH_URL,
    username: vars.LAB_DEMO_USERNAME ?? 'demo',
    password: vars.LAB_DEMO_PASSWORD ?? 'labdemo',
    projectName: vars.LAB_DEMO_PROJECT_NAME ?? 'demo',
  };
  admin = await makeProvider(adminCreds);
  demo = await makeProvider(demoCreds);
  connector = await connectorProperties({ ip: '127.0.0.1', host: HOST });
});

afterAll(async () => {
  if (skip) return;
  const errors: string[] = [];
  while (cleanup.length) {
    const step = cleanup.pop()!;
    try {
      await step.fn();
    } catch (err) {
      errors.push(`${step.what}: ${(err as Error).message}`);
    }
  }
  // Nothing of this run may remain, in any project.
  const left = (await admin.listVolumes({ allTenants: true })).filter((v) => v.name.startsWith(RUN));
  const leftSnaps = (await admin.client.listSnapshots({ allTenants: true })).filter((s) => (s.name ?? '').startsWith(RUN));
  const leftGroups = (await listGroups(admin.client, { allTenants: true })).filter((g) => (g.name ?? '').startsWith(RUN));
  console.warn(`[cinder-provider] latencies (ms): ${JSON.stringify(timings)}`);
  expect(errors).toEqual([]);
  expect(left.map((v) => `${v.name} ${v.status}`)).toEqual([]);
  expect(leftSnaps.map((s) => `${s.name} ${s.status}`)).toEqual([]);
  expect(leftGroups.map((g) => `${g.name} ${g.status}`)).toEqual([]);
}, 600_000);

function pushVolume(p: CinderVolumeProvider, id: string): void {
  cleanup.push({ what: `delete volume ${id}`, fn: () => p.deleteVolume(id, { wait: true }) });
}
function pushSnapshot(p: CinderVolumeProvider, id: string): void {
  cleanup.push({ what: `delete snapshot ${id}`, fn: () => p.deleteSnapshot(id, { wait: true }) });
}

describe('Keystone against the lab', () => {
  it('authenticates, finds volumev3 in the catalog, negotiates the microversion', async (ctx) => {
    if (skip) return ctx.skip();
    const info = await timed('auth+discovery admin', () => admin.info());
    timings['auth admin'] = admin.session.lastAuthMs;
    expect(info.endpoint).toMatch(new RegExp(`/v3/${info.projectId}$`));
    expect(info.maxMicroversion).toMatch(/^3\.\d+$/);
    expect(Number(info.microversion.split('.')[1])).toBeGreaterThanOrEqual(44);
    expect(info.admin).toBe(true);
    const d = await demo.info();
    timings['auth demo'] = demo.session.lastAuthMs;
    expect(d.admin).toBe(false);
    expect(d.roles).toContain('member');
    expect(d.projectName).toBe(demoCreds.projectName);
    // The token is cached: more calls, no more authentications.
    await admin.listVolumes();
    await admin.getVolume(info.projectId!).catch(() => undefined);
    expect(admin.session.authCount).toBe(1);
  });

  it('wrong password: AuthError (exit 12) without the password in the message', async (ctx) => {
    if (skip) return ctx.skip();
    const wrong = `Wr0ng-${randomBytes(4).toString('hex')}`;
    const p = await makeProvider({ ...demoCreds, password: wrong });
    const err = await p.listVolumes().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(AuthError);
    expect((err as AuthError).exitCode).toBe(12);
    expect((err as Error).message).toContain(demoCreds.username);
    expect((err as Error).message).not.toContain(wrong);
    expect(JSON.stringify({ ...(err as object), message: (err as Error).message })).not.toContain(wrong);
  });

  it('application credential: created by the tenant, authenticates (project scope from the credential), works with Cinder', async (ctx) => {
    if (skip) return ctx.skip();
    const s = demo.session;
    const tok = await s.getToken();
    const base = `${s.identityUrl}/users/${tok.userId}/application_credentials`;
    const res = await s.request({ method: 'POST', url: base, body: { application_credential: { name: `${RUN}-ac`, description: 'permafrost test' } } });
    expect(res.status).toBe(201);
    const ac = (res.json as { application_credential: { id: string; secret: string } }).application_credential;
    cleanup.push({
      what: 'delete application credential',
      fn: async () => {
        const r = await s.request({ method: 'DELETE', url: `${base}/${ac.id}` });
        if (r.status !== 204 && r.status !== 404) throw new Error(`HTTP ${r.status}`);
      },
    });
    const p = await CinderVolumeProvider.create({
      env: { OS_AUTH_URL: demoCreds.authUrl, OS_AUTH_TYPE: 'v3applicationcredential', OS_APPLICATION_CREDENTIAL_ID: ac.id, OS_APPLICATION_CREDENTIAL_SECRET: ac.secret },
      searchDirs: [],
    });
    const info = await timed('auth app credential', () => p.info());
    expect(info.projectName).toBe(demoCreds.projectName);
    expect(info.admin).toBe(false);
    expect(Array.isArray(await p.listVolumes())).toBe(true);
    const bad = await CinderVolumeProvider.create({
      env: { OS_AUTH_URL: demoCreds.authUrl, OS_APPLICATION_CREDENTIAL_ID: ac.id, OS_APPLICATION_CREDENTIAL_SECRET: 'not-the-secret-42' },
      searchDirs: [],
    });
    const err = await bad.listVolumes().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(AuthError);
    expect((err as Error).message).toContain(`application credential ${ac.id}`);
    expect((err as Error).message).not.toContain('not-the-secret-42');
  });

  it('a missing interface/region is a ConfigError naming them', async (ctx) => {
    if (skip) return ctx.skip();
    const s = new KeystoneSession({ ...(admin.session.config), regionName: 'NoSuchRegion' });
    await expect(s.endpoint(['block-storage', 'volumev3', 'volume'])).rejects.toThrow(/interface public in region NoSuchRegion.*volumev3\[/);
  });
});

describe.each([
  ['admin', () => admin],
  ['demo', () => demo],
])('volume cycle as %s', (label, get) => {
  it('create, attach (attachments API, RBD connection_info), forced snapshot of the in-use volume, clone, detach', async (ctx) => {
    if (skip) return ctx.skip();
    const p = get();
    const tags = { [TEMP_TAG]: 'true', [HOST_TAG]: HOST };
    const src = await timed(`create 1GiB ${label}`, async () => {
      const v = await p.createVolume({ name: `${RUN}-${label}-src`, size: 1, description: 'permafrost test', metadata: { owner: 'test' } });
      pushVolume(p, v.id);
      return p.waitVolume(v.id, ['available']);
    });
    expect(src).toMatchObject({ size: 1, status: 'available', bootable: false, metadata: { owner: 'test' }, availabilityZone: 'nova' });

    await p.updateMetadata(src.id, { policy: 'daily' });
    await p.setBootable(src.id, true);
    expect(await p.getVolume(src.id)).toMatchObject({ bootable: true, metadata: { owner: 'test', policy: 'daily' } });
    await p.updateMetadata(src.id, { only: 'this' }, true);
    expect((await p.getVolume(`${RUN}-${label}-src`)).metadata).toEqual({ only: 'this' });

    const att = await timed(`attach ${label}`, () => p.attach(src.id, connector));
    cleanup.push({ what: `detach ${att.id}`, fn: () => p.detach(src.id, att.id) });
    expect(att.connectionInfo.driver_volume_type).toBe('rbd');
    expect(att.connectionInfo.data).toMatchObject({ name: `volumes/volume-${src.id}`, auth_username: 'cinder', attachment_id: att.id });
    expect(Array.isArray(att.connectionInfo.data.hosts)).toBe(true);
    const inUse = await p.getVolume(src.id);
    expect(inUse.status).toBe('in-use');
    expect(inUse.attachments.map((a) => a.attachmentId)).toContain(att.id);

    await expect(p.createSnapshot(src.id, `${RUN}-${label}-cold`, { force: false })).rejects.toThrow(/in-use/);
    const snap = await timed(`snapshot in-use ${label}`, async () => {
      const s = await p.createSnapshot(src.id, `${RUN}-${label}-snap`, { force: true, metadata: tags, description: 'hot' });
      pushSnapshot(p, s.id);
      return p.waitSnapshot(s.id, ['available']);
    });
    expect(snap).toMatchObject({ volumeId: src.id, size: 1, metadata: tags });

    const clone = await timed(`volume from snapshot ${label}`, async () => {
      const c = await p.createVolume({ name: `${RUN}-${label}-tmp`, size: 1, snapshotId: snap.id, metadata: tags });
      pushVolume(p, c.id);
      return p.waitVolume(c.id, ['available']);
    });
    expect(clone.metadata).toMatchObject(tags);

    const left = await p.listLeftovers({ host: HOST });
    expect(left.volumes.map((v) => v.id)).toContain(clone.id);
    expect(left.snapshots.map((s) => s.id)).toContain(snap.id);
    expect(left.volumes.map((v) => v.id)).not.toContain(src.id);

    await timed(`detach ${label}`, () => p.detach(src.id, att.id));
    expect((await p.waitVolume(src.id, ['available'])).attachments).toEqual([]);
    await p.detach(src.id, att.id); // idempotent
  });
});

describe('tenancy and errors', () => {
  it('--all-tenants: admin sees every project; demo gets a clear AuthError (Cinder itself would ignore the flag)', async (ctx) => {
    if (skip) return ctx.skip();
    const v = await demo.createVolume({ name: `${RUN}-tenant`, size: 1 });
    pushVolume(demo, v.id);
    const all = await admin.listVolumes({ allTenants: true, name: `${RUN}-tenant` });
    expect(all.map((x) => x.id)).toEqual([v.id]);
    expect(all[0]!.projectId).toBe((await demo.info()).projectId);
    expect(await admin.listVolumes({ name: `${RUN}-tenant` })).toEqual([]);

    const err = await demo.listVolumes({ allTenants: true }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(AuthError);
    expect((err as Error).message).toMatch(/--all-tenants needs the admin role/);
    // What Cinder does with all_tenants=1 from a member: silently answers with the own project only.
    const raw = await demo.client.listVolumes({ allTenants: true });
    const adminProject = (await admin.info()).projectId;
    expect(raw.every((x) => x['os-vol-tenant-attr:tenant_id'] === undefined || x['os-vol-tenant-attr:tenant_id'] !== adminProject)).toBe(true);
    await demo.waitVolume(v.id, ['available']);
  });

  it('volume not found: NotFoundError (exit 13), by ID and by name', async (ctx) => {
    if (skip) return ctx.skip();
    await expect(admin.getVolume('00000000-1111-2222-3333-444444444444')).rejects.toBeInstanceOf(NotFoundError);
    await expect(demo.getVolume(`${RUN}-nothing`)).rejects.toMatchObject({ exitCode: 13 });
    await admin.deleteVolume('00000000-1111-2222-3333-444444444444');
  });

  it('quota exceeded: CloudError with the quota message', async (ctx) => {
    if (skip) return ctx.skip();
    const err = await demo.createVolume({ name: `${RUN}-huge`, size: 100_000 }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(CloudError);
    expect((err as CloudError).status).toBe(413);
    expect((err as Error).message).toMatch(/quota/i);
  });

  it('a volume the scheduler cannot place: error state with the user message', async (ctx) => {
    if (skip) return ctx.skip();
    const type = await admin.client.call<{ volume_type: { id: string } }>('POST', '/types', {
      body: { volume_type: { name: `${RUN}-nowhere`, extra_specs: { volume_backend_name: 'no-such-backend' } } },
      what: 'create volume type',
    });
    cleanup.push({ what: 'delete volume type', fn: () => admin.client.call('DELETE', `/types/${type.volume_type.id}`, { what: 'delete type', ok: [404] }) });
    const v = await admin.createVolume({ name: `${RUN}-unplaceable`, size: 1, volumeType: `${RUN}-nowhere` });
    pushVolume(admin, v.id);
    const err = await admin.waitVolume(v.id, ['available']).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(CloudError);
    expect((err as Error).message).toMatch(/went to status error/);
    const msgs = await listMessages(admin.client, v.id);
    if (msgs.length) expect((err as Error).message).toContain(msgs[0]!.user_message);
    console.warn(`[cinder-provider] error-state message: ${(err as Error).message}`);
  });

  it('types and availability zones', async (ctx) => {
    if (skip) return ctx.skip();
    expect((await listVolumeTypes(demo.client)).map((t) => t.name)).toContain('__DEFAULT__');
    expect(await availabilityZoneExists(demo.client, 'nova')).toBe(true);
    expect(await availabilityZoneExists(demo.client, 'no-such-zone')).toBe(false);
  });
});

describe('deleting what is still in use', () => {
  it('a snapshot with a dependent clone: the delete fails with the server message, not a timeout', async (ctx) => {
    if (skip) return ctx.skip();
    const v = await admin.createVolume({ name: `${RUN}-parent`, size: 1 });
    pushVolume(admin, v.id);
    await admin.waitVolume(v.id, ['available']);
    const s = await admin.createSnapshot(v.id, `${RUN}-busy`, { force: false });
    pushSnapshot(admin, s.id);
    await admin.waitSnapshot(s.id, ['available']);
    const c = await admin.createVolume({ name: `${RUN}-child`, size: 1, snapshotId: s.id });
    pushVolume(admin, c.id);
    await admin.waitVolume(c.id, ['available']);
    const err = await admin.deleteSnapshot(s.id, { wait: true }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(CloudError);
    expect((err as Error).message).toMatch(/was not deleted: it is available again/);
    console.warn(`[cinder-provider] busy snapshot: ${(err as Error).message}`);
    await expect(admin.deleteVolume(v.id)).rejects.toThrow(/have snapshots/);
  });
});

describe('groups', () => {
  it('create a group, a volume in it, list the group and its volumes', async (ctx) => {
    if (skip) return ctx.skip();
    const gt = await createGroupType(admin.client, `${RUN}-gt`);
    cleanup.push({ what: 'delete group type', fn: () => deleteGroupType(admin.client, gt.id) });
    const g = await createGroup(admin.client, { name: `${RUN}-group`, groupType: gt.id, volumeTypes: ['__DEFAULT__'] });
    cleanup.push({
      what: `delete group ${g.id}`,
      fn: async () => {
        await deleteGroup(admin.client, g.id, true);
        for (let i = 0; i < 120; i++) {
          const gone = await getGroup(admin.client, g.id).then(() => false, (e: unknown) => e instanceof NotFoundError);
          if (gone) return;
          await new Promise((r) => setTimeout(r, 500));
        }
        throw new Error('group still there after 60 s');
      },
    });
    for (let i = 0; i < 60 && (await getGroup(admin.client, g.id)).status !== 'available'; i++) await new Promise((r) => setTimeout(r, 500));
    const v = await admin.client.createVolume({ size: 1, name: `${RUN}-in-group`, group_id: g.id, volume_type: '__DEFAULT__' });
    await admin.waitVolume(v.id, ['available']);
    const shown = await getGroup(admin.client, g.id);
    expect(shown.status).toBe('available');
    if (shown.volumes) expect(shown.volumes).toContain(v.id);
    expect((await listGroupVolumes(admin.client, g.id)).map((x) => x.id)).toEqual([v.id]);
    expect((await admin.listVolumes({ groupId: g.id })).map((x) => x.groupId)).toEqual([g.id]);
    expect((await listGroups(admin.client, { name: `${RUN}-group` })).map((x) => x.id)).toEqual([g.id]);
  });
});

describe('legacy attach actions (clouds without the attachments API)', () => {
  it('os-reserve, os-initialize_connection, os-attach; detach with os-terminate_connection and os-detach', async (ctx) => {
    if (skip) return ctx.skip();
    const legacy = await makeProvider(demoCreds);
    const p = new CinderVolumeProvider(legacy.session, { legacyAttach: true });
    const v = await p.createVolume({ name: `${RUN}-legacy`, size: 1, metadata: { k: 'v' } });
    pushVolume(p, v.id);
    await p.waitVolume(v.id, ['available']);
    const a = await timed('legacy attach demo', () => p.attach(v.id, connector));
    cleanup.push({ what: `legacy detach ${a.id}`, fn: () => p.detach(v.id, a.id) });
    expect(a.connectionInfo).toMatchObject({ driver_volume_type: 'rbd', data: { name: `volumes/volume-${v.id}` } });
    const inUse = await p.getVolume(v.id);
    expect(inUse.status).toBe('in-use');
    // host_name is shown to admins only: the attachment is found as the one os-attach added.
    expect(inUse.attachments).toEqual([{ attachmentId: a.id, hostName: null, serverId: null, device: '/dev/permafrost' }]);
    // Cinder shows admin metadata (readonly, attached_mode) in `metadata`; the record leaves it out.
    expect(inUse.metadata).toEqual({ k: 'v' });
    await timed('legacy detach demo', () => p.detach(v.id, a.id));
    expect((await p.waitVolume(v.id, ['available'])).attachments).toEqual([]);
    await p.detach(v.id, a.id);
  });
});

describe('attachments API directly', () => {
  it('an attachment without os-complete leaves the volume reserved; deleting it frees the volume', async (ctx) => {
    if (skip) return ctx.skip();
    const v = await demo.createVolume({ name: `${RUN}-reserve`, size: 1 });
    pushVolume(demo, v.id);
    await demo.waitVolume(v.id, ['available']);
    const a = await createAttachment(demo.client, v.id, connector);
    cleanup.push({ what: 'delete attachment', fn: () => deleteAttachment(demo.client, a.id) });
    expect(a.connection_info?.driver_volume_type).toBe('rbd');
    expect((await demo.getVolume(v.id)).status).toMatch(/reserved|attaching/);
    await deleteAttachment(demo.client, a.id);
    await demo.waitVolume(v.id, ['available'], 30_000);
  });
});
