import { describe, expect, it } from 'vitest';
import { CloudError, NotFoundError } from '../../src/errors.js';
import { CinderClient, compareMicroversion, parseMicroversion, queryString } from '../../src/volume/cinder/client.js';
import { KeystoneSession } from '../../src/volume/cinder/keystone.js';
import { resolveOpenStackConfig } from '../../src/volume/openstack-config.js';
import { useFakeCloud } from '../helpers/fake-cloud.js';

const fast = { attempts: 4, baseDelayMs: 5, maxDelayMs: 20 };
const cloud = useFakeCloud();

async function client(opts: { user?: string; pageSize?: number; microversion?: string } = {}): Promise<CinderClient> {
  const user = cloud.users.find((u) => u.name === (opts.user ?? 'admin'))!;
  const cfg = await resolveOpenStackConfig({
    env: { OS_AUTH_URL: cloud.authUrl, OS_USERNAME: user.name, OS_PASSWORD: user.password, OS_PROJECT_NAME: user.project },
    searchDirs: [],
  });
  return new CinderClient(new KeystoneSession(cfg, { retry: fast }), { retry: fast, pageSize: opts.pageSize, microversion: opts.microversion });
}

describe('microversions', () => {
  it('parses and compares', () => {
    expect(parseMicroversion('3.44')).toEqual([3, 44]);
    expect(parseMicroversion('v3')).toBeUndefined();
    expect(compareMicroversion('3.9', '3.10')).toBeLessThan(0);
    expect(compareMicroversion('3.70', '3.66')).toBeGreaterThan(0);
    expect(queryString({ a: '1', b: undefined, c: 'x y' })).toBe('?a=1&c=x%20y');
  });

  it('uses min(server max, wanted) and sends it on every call', async () => {
    const c = await client();
    await c.getVolume(cloud.addVolume({}).id);
    expect(c.maxMicroversion).toBe('3.70');
    expect(c.microversion).toBe('3.70');
    const call = cloud.requests.find((r) => r.path.includes('/volumes/'))!;
    expect(call.headers['openstack-api-version']).toBe('volume 3.70');

    cloud.maxMicroversion = '3.60';
    const old = await client();
    await old.init();
    expect(old.microversion).toBe('3.60');
    const capped = await client({ microversion: '3.44' });
    await capped.init();
    expect(capped.microversion).toBe('3.44');
  });

  it('no microversions announced: no header, version 3.0', async () => {
    cloud.maxMicroversion = '';
    const c = await client();
    await c.getVolume(cloud.addVolume({}).id);
    expect(c.microversion).toBe('3.0');
    expect(cloud.requests.find((r) => r.path.includes('/volumes/'))!.headers['openstack-api-version']).toBeUndefined();
  });

  it('snapshot force is sent below 3.66 only', async () => {
    const v = cloud.addVolume({ status: 'in-use' });
    cloud.maxMicroversion = '3.60';
    await (await client()).createSnapshot({ volumeId: v.id, name: 's1', force: true });
    cloud.maxMicroversion = '3.70';
    await (await client()).createSnapshot({ volumeId: v.id, name: 's2', force: true });
    const posts = cloud.requests.filter((r) => r.method === 'POST' && r.path.endsWith('/snapshots')).map((r) => (r.body as any).snapshot);
    expect(posts[0]).toMatchObject({ volume_id: v.id, name: 's1', force: true });
    expect(posts[1]).not.toHaveProperty('force');
  });
});

describe('lists', () => {
  it('follows marker/limit pagination across pages', async () => {
    for (let i = 0; i < 7; i++) cloud.addVolume({ name: `v${i}` });
    const c = await client({ pageSize: 3 });
    const all = await c.listVolumes();
    expect(all.map((v) => v.name)).toEqual(['v0', 'v1', 'v2', 'v3', 'v4', 'v5', 'v6']);
    const lists = cloud.requests.filter((r) => r.path.endsWith('/volumes/detail'));
    expect(lists.map((r) => r.query.get('limit'))).toEqual(['3', '3', '3']);
    expect(lists[0]!.query.get('marker')).toBeNull();
    expect(lists[1]!.query.get('marker')).toBe(all[2]!.id);
  });

  it('sends all_tenants, name and metadata filters; re-checks metadata client-side', async () => {
    cloud.addVolume({ name: 'a', metadata: { k: 'v' } });
    cloud.addVolume({ name: 'b', metadata: { k: 'w' } });
    cloud.addVolume({ name: 'c', metadata: { k: 'v' }, project: 'p-demo' });
    const c = await client();
    cloud.honourMetadataFilter = false;
    try {
      const found = await c.listVolumes({ allTenants: true, metadata: { k: 'v' } });
      expect(found.map((v) => v.name).sort()).toEqual(['a', 'c']);
    } finally {
      cloud.honourMetadataFilter = true;
    }
    const q = cloud.requests.find((r) => r.path.endsWith('/volumes/detail'))!.query;
    expect(q.get('all_tenants')).toBe('1');
    expect(JSON.parse(q.get('metadata')!)).toEqual({ k: 'v' });
  });
});

describe('retries and errors', () => {
  it('retries a GET after 500 and 503', async () => {
    const v = cloud.addVolume({});
    const c = await client();
    await c.init();
    cloud.faults.push({ method: 'GET', path: /\/volumes\//, status: 500, count: 1 }, { method: 'GET', path: /\/volumes\//, status: 503, count: 1 });
    expect((await c.getVolume(v.id)).id).toBe(v.id);
    expect(cloud.requests.filter((r) => r.method === 'GET' && r.path.endsWith(v.id))).toHaveLength(3);
  });

  it('honours 429 Retry-After and retries even a POST', async () => {
    const c = await client();
    await c.init();
    cloud.faults.push({ method: 'POST', path: /\/volumes$/, status: 429, count: 1, headers: { 'Retry-After': '0' } });
    const v = await c.createVolume({ size: 1, name: 'rl' });
    expect(v.name).toBe('rl');
    expect(cloud.volumes.size).toBe(1);
  });

  it('a create whose answer was lost (503 after the fact) is adopted, not made twice', async () => {
    const c = await client();
    await c.init();
    cloud.faults.push({ method: 'POST', path: /\/volumes$/, status: 503, count: 1, afterEffect: true });
    const v = await c.createVolume({ size: 1, name: 'once', metadata: { 'permafrost:job': 'j1' } });
    expect(cloud.volumes.size).toBe(1);
    expect(v.id).toBe([...cloud.volumes.keys()][0]);
  });

  it('a create that failed with 500 before doing anything is retried', async () => {
    const c = await client();
    await c.init();
    cloud.faults.push({ method: 'POST', path: /\/volumes$/, status: 500, count: 1 });
    await c.createVolume({ size: 1, name: 'retry-me' });
    expect(cloud.volumes.size).toBe(1);
    expect(cloud.requests.filter((r) => r.method === 'POST' && r.path.endsWith('/volumes'))).toHaveLength(2);
  });

  it('quota exceeded: CloudError with the server message, no retry', async () => {
    cloud.quotaGiB = 10;
    const c = await client();
    const err = await c.createVolume({ size: 20, name: 'big' }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(CloudError);
    expect((err as CloudError).status).toBe(413);
    expect((err as Error).message).toMatch(/quota exceeded: VolumeSizeExceedsAvailableQuota: .*Requested 20G, quota is 10G/);
    expect(cloud.requests.filter((r) => r.method === 'POST' && r.path.endsWith('/volumes'))).toHaveLength(1);
  });

  it('404: NotFoundError; delete of a missing volume or snapshot is success', async () => {
    const c = await client();
    await expect(c.getVolume('00000000-0000-0000-0000-000000000000')).rejects.toBeInstanceOf(NotFoundError);
    await c.deleteVolume('00000000-0000-0000-0000-000000000000');
    await c.deleteSnapshot('00000000-0000-0000-0000-000000000000');
  });

  it('a 4xx on an action is a CloudError with the fault message', async () => {
    const v = cloud.addVolume({ status: 'in-use' });
    const c = await client();
    await expect(c.deleteVolume(v.id)).rejects.toThrow(/HTTP 400: Invalid volume: Volume status must be available or error, but current status is: in-use/);
  });

  it('gives up with the last error after the retry budget', async () => {
    const v = cloud.addVolume({});
    const c = await client();
    await c.init();
    cloud.faults.push({ method: 'GET', path: /\/volumes\//, status: 502, count: 10 });
    const err = await c.getVolume(v.id).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(CloudError);
    expect((err as CloudError).status).toBe(502);
    expect(cloud.requests.filter((r) => r.method === 'GET' && r.path.endsWith(v.id))).toHaveLength(4);
  });
});
