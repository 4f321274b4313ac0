import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { connectorProperties, firstIPv4 } from '../../src/connectors/properties.js';
import { AuthError, CloudError, InterruptedError, NotFoundError, UsageError } from '../../src/errors.js';
import { redact } from '../../src/util/log.js';
import { normalizeConnectionInfo } from '../../src/volume/cinder/attachments.js';
import { CinderVolumeProvider } from '../../src/volume/cinder/provider.js';
import { HOST_KEY as HOST_TAG, TEMPORARY_KEY as TEMP_TAG } from '../../src/volume/temporary.js';
import { useFakeCloud } from '../helpers/fake-cloud.js';

const fast = { attempts: 3, baseDelayMs: 5, maxDelayMs: 20 };
const cloud = useFakeCloud();

function provider(user = 'admin', extra: Record<string, unknown> = {}): Promise<CinderVolumeProvider> {
  const u = cloud.users.find((x) => x.name === user)!;
  return CinderVolumeProvider.create(
    { env: { OS_AUTH_URL: cloud.authUrl, OS_USERNAME: u.name, OS_PASSWORD: u.password, OS_PROJECT_NAME: u.project }, searchDirs: [] },
    { retry: fast, pollInitialMs: 5, pollMaxMs: 20, ...extra },
  );
}

const connector = { ip: '127.0.0.1', host: 'node1', multipath: false, platform: 'x86_64', os_type: 'linux2' };

describe('CinderVolumeProvider', () => {
  it('creates, waits, maps the record and applies bootable once available', async () => {
    const p = await provider();
    const v = await p.createVolume({ name: 'n1', size: 2, metadata: { a: 'b' }, bootable: true, volumeType: '__DEFAULT__' });
    expect(v.status).toBe('creating');
    const r = await p.waitVolume(v.id, ['available']);
    expect(r).toMatchObject({ id: v.id, name: 'n1', size: 2, status: 'available', bootable: true, metadata: { a: 'b' }, projectId: 'p-admin' });
    const setBootable = cloud.requests.filter((x) => x.path.endsWith('/action') && (x.body as any)['os-set_bootable']);
    expect(setBootable).toHaveLength(1);
    expect(cloud.volumes.get(v.id)!.bootable).toBe('true');
  });

  it('error state: CloudError with the user message from the messages API', async () => {
    const p = await provider();
    const v = cloud.addVolume({ status: 'error', name: 'bad' });
    cloud.messages.push(
      { id: 'm1', resource_uuid: v.id, user_message: 'older message', created_at: '2024-01-01T00:00:00.000000' },
      { id: 'm2', resource_uuid: v.id, user_message: 'schedule allocate volume:Could not find any available weighted backend.', created_at: '2024-01-02T00:00:00.000000' },
    );
    const err = await p.waitVolume(v.id, ['available']).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(CloudError);
    expect((err as Error).message).toBe(`volume ${v.id} went to status error (schedule allocate volume:Could not find any available weighted backend.)`);
    expect(cloud.requests.some((r) => r.path.endsWith('/messages') && r.query.get('resource_uuid') === v.id)).toBe(true);
  });

  it('snapshot error state stops the wait', async () => {
    const p = await provider();
    const v = cloud.addVolume({});
    const s = await p.createSnapshot(v.id, 's', { force: false });
    cloud.snapshots.get(s.id)!.status = 'error';
    await expect(p.waitSnapshot(s.id, ['available'])).rejects.toThrow(/snapshot .* went to status error/);
  });

  it('times out with the last status; the timeout scales with size', async () => {
    cloud.creatingPolls = 1_000_000;
    const p = await provider('admin', { waitBaseMs: 50, waitPerGiBMs: 10 });
    expect(p.waitTimeout(100)).toBe(1050);
    const v = cloud.addVolume({ status: 'creating', size: 3 });
    const t0 = Date.now();
    await expect(p.waitVolume(v.id, ['available'])).rejects.toThrow(/still creating after [0-9.]+ s \(waiting for available\)/);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(70);
    expect(Date.now() - t0).toBeLessThan(2000);
  });

  it('SIGINT/SIGTERM (the job signal) ends a wait at once with InterruptedError', async () => {
    cloud.creatingPolls = 1_000_000;
    const p = await provider('admin', { pollInitialMs: 5_000, pollMaxMs: 5_000 });
    const v = cloud.addVolume({ status: 'creating', size: 1 });
    const ac = new AbortController();
    setTimeout(() => ac.abort(), 100);
    const t0 = Date.now();
    await expect(p.waitVolume(v.id, ['available'], 60_000, { signal: ac.signal })).rejects.toBeInstanceOf(InterruptedError);
    expect(Date.now() - t0).toBeLessThan(2_000);
    const s = await p.createSnapshot(v.id, 's', { force: true });
    await expect(p.waitSnapshot(s.id, ['available'], 60_000, { signal: ac.signal })).rejects.toBeInstanceOf(InterruptedError);
  });

  it("waitVolume(['deleted']) resolves when the volume is gone; deleteVolume is idempotent", async () => {
    const p = await provider();
    const v = cloud.addVolume({});
    await p.deleteVolume(v.id, { wait: true });
    expect(cloud.volumes.has(v.id)).toBe(false);
    await p.deleteVolume(v.id);
    await p.deleteSnapshot('00000000-0000-0000-0000-00000000dead');
  });

  it('deleteVolume waits out a transitional state', async () => {
    cloud.creatingPolls = 2;
    const p = await provider();
    const v = await p.createVolume({ name: 'young', size: 1 });
    await p.deleteVolume(v.id, { wait: true });
    expect(cloud.volumes.has(v.id)).toBe(false);
  });

  it('getVolume by ID or unique name', async () => {
    const p = await provider();
    const a = cloud.addVolume({ name: 'same' });
    cloud.addVolume({ name: 'same' });
    const u = cloud.addVolume({ name: 'unique' });
    expect((await p.getVolume(a.id)).id).toBe(a.id);
    expect((await p.getVolume('unique')).id).toBe(u.id);
    await expect(p.getVolume('same')).rejects.toBeInstanceOf(UsageError);
    await expect(p.getVolume('missing')).rejects.toBeInstanceOf(NotFoundError);
    await expect(p.getVolume('11111111-2222-3333-4444-555555555555')).rejects.toThrow(/not found/);
  });

  it('attach: attachments API with volume_uuid, flat connection_info normalized, os-complete; detach deletes it', async () => {
    const p = await provider();
    const v = cloud.addVolume({});
    const att = await p.attach(v.id, connector);
    const post = cloud.requests.find((r) => r.method === 'POST' && r.path.endsWith('/attachments'))!;
    expect((post.body as any).attachment).toEqual({ volume_uuid: v.id, connector });
    expect(att.connectionInfo.driver_volume_type).toBe('rbd');
    expect(att.connectionInfo.data).toMatchObject({ name: `volumes/volume-${v.id}`, hosts: ['127.0.0.1'], attachment_id: att.id });
    expect(att.connectionInfo.data).not.toHaveProperty('driver_volume_type');
    expect(cloud.volumes.get(v.id)!.status).toBe('in-use');
    expect(redact('chap chap-secret-123')).toBe('chap ***');
    await p.detach(v.id, att.id);
    expect(cloud.volumes.get(v.id)!.status).toBe('available');
    await p.detach(v.id, att.id);
  });

  it('attach whose answer was lost (502 after the fact) adopts the attachment instead of making a second', async () => {
    const p = await provider();
    const v = cloud.addVolume({});
    await p.client.init();
    cloud.faults.push({ method: 'POST', path: /\/attachments$/, status: 502, count: 1, afterEffect: true });
    const att = await p.attach(v.id, connector);
    expect(cloud.attachments.size).toBe(1);
    expect(att.id).toBe([...cloud.attachments.keys()][0]);
    expect(att.connectionInfo.data).toMatchObject({ name: `volumes/volume-${v.id}` });
    expect(cloud.volumes.get(v.id)!.status).toBe('in-use');
  });

  it('hot snapshot uses force below 3.66; a cold snapshot of an in-use volume is refused from 3.66', async () => {
    const p = await provider();
    const v = cloud.addVolume({ status: 'in-use' });
    await expect(p.createSnapshot(v.id, 'cold', { force: false })).rejects.toThrow(/in-use: a snapshot without force/);
    const s = await p.createSnapshot(v.id, 'hot', { force: true, metadata: { [TEMP_TAG]: 'true' } });
    expect((await p.waitSnapshot(s.id, ['available'])).metadata).toEqual({ [TEMP_TAG]: 'true' });
  });

  it('--all-tenants as a non-admin: AuthError naming the admin role', async () => {
    const p = await provider('demo');
    const err = await p.listVolumes({ allTenants: true }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(AuthError);
    expect((err as Error).message).toMatch(/--all-tenants needs the admin role \(user demo in project p-demo has: member\)/);
    expect(await (await provider('admin')).listVolumes({ allTenants: true })).toEqual([]);
  });

  it('listLeftovers returns only tagged resources of this host, even when the cloud ignores the filter', async () => {
    const p = await provider();
    const mine = cloud.addVolume({ metadata: { [TEMP_TAG]: 'true', [HOST_TAG]: 'node1' } });
    cloud.addVolume({ metadata: { [TEMP_TAG]: 'true', [HOST_TAG]: 'node2' } });
    cloud.addVolume({ metadata: {} });
    const other = cloud.addVolume({ metadata: { [TEMP_TAG]: 'true', [HOST_TAG]: 'node1' }, project: 'p-demo' });
    cloud.honourMetadataFilter = false;
    try {
      const l = await p.listLeftovers({ host: 'node1' });
      expect(l.volumes.map((v) => v.id).sort()).toEqual([mine.id, other.id].sort());
      expect(l.snapshots).toEqual([]);
    } finally {
      cloud.honourMetadataFilter = true;
    }
  });

  it('the token survives a Keystone key rotation (401 → one renewal)', async () => {
    const p = await provider();
    const v = cloud.addVolume({});
    await p.getVolume(v.id);
    const before = cloud.authCount;
    cloud.revokeAll();
    await Promise.all([p.getVolume(v.id), p.getVolume(v.id), p.listVolumes()]);
    expect(cloud.authCount - before).toBe(1);
  });
});

describe('connection_info and connector properties', () => {
  it('normalizes nested and flat connection_info', () => {
    expect(normalizeConnectionInfo({ driver_volume_type: 'iscsi', data: { target_iqn: 'iqn.x', target_lun: 1 } })).toEqual({
      driver_volume_type: 'iscsi',
      data: { target_iqn: 'iqn.x', target_lun: 1 },
    });
    expect(normalizeConnectionInfo({ driver_volume_type: 'rbd', name: 'volumes/v', attachment_id: 'a' })).toEqual({
      driver_volume_type: 'rbd',
      data: { name: 'volumes/v', attachment_id: 'a' },
    });
    expect(() => normalizeConnectionInfo(null)).toThrow(CloudError);
    expect(() => normalizeConnectionInfo({ data: {} })).toThrow(/driver_volume_type/);
  });

  it('reads initiator, FC names and NQN from the filesystem', async () => {
    const root = await mkdtemp(join(tmpdir(), 'pf-conn-'));
    try {
      await mkdir(join(root, 'etc/iscsi'), { recursive: true });
      await writeFile(join(root, 'etc/iscsi/initiatorname.iscsi'), '## comment\nInitiatorName=iqn.1993-08.org.debian:01:abc\n');
      for (const [h, p, n] of [
        ['host1', '0x21000024ff3a1b2c', '0x20000024ff3a1b2c'],
        ['host0', '0x21000024FF3A1B2D', '0x20000024ff3a1b2d'],
      ]) {
        await mkdir(join(root, 'sys/class/fc_host', h!), { recursive: true });
        await writeFile(join(root, 'sys/class/fc_host', h!, 'port_name'), `${p}\n`);
        await writeFile(join(root, 'sys/class/fc_host', h!, 'node_name'), `${n}\n`);
      }
      const props = await connectorProperties({ root, host: 'bk1', interfaces: { lo: [{ address: '127.0.0.1', family: 'IPv4', internal: true } as any], eth0: [{ address: '10.0.0.5', family: 'IPv4', internal: false } as any] } });
      expect(props).toMatchObject({
        ip: '10.0.0.5',
        host: 'bk1',
        initiator: 'iqn.1993-08.org.debian:01:abc',
        wwpns: ['21000024ff3a1b2d', '21000024ff3a1b2c'],
        wwnns: ['20000024ff3a1b2d', '20000024ff3a1b2c'],
        multipath: false,
        os_type: 'linux2',
        do_local_attach: false,
      });
      expect(typeof props.platform).toBe('string');
      const bare = await connectorProperties({ root: join(root, 'nothing'), ip: '127.0.0.1', interfaces: {} });
      expect(bare).not.toHaveProperty('initiator');
      expect(bare).not.toHaveProperty('wwpns');
      expect(bare.ip).toBe('127.0.0.1');
      expect(firstIPv4({})).toBeUndefined();
    } finally {
      await rm(root, { recursive: true, force: true });
    }
  });
});
