import { describe, expect, it } from 'vitest';
import { AuthError, ConfigError, UnreachableError } from '../../src/errors.js';
import { redact } from '../../src/util/log.js';
import { KeystoneSession, authRequestBody, findEndpoint, identityV3Url } from '../../src/volume/cinder/keystone.js';
import { FakeCloud } from '../../src/volume/cinder/testing/fake-cloud.js';
import type { OpenStackAuthConfig } from '../../src/volume/openstack-config.js';
import { useFakeCloud } from '../helpers/fake-cloud.js';

const fast = { attempts: 3, baseDelayMs: 5, maxDelayMs: 20 };

function cfg(over: Partial<OpenStackAuthConfig> = {}): OpenStackAuthConfig {
  return {
    authUrl: cloud.authUrl,
    authType: 'v3password',
    username: 'admin',
    password: 'adminpw',
    userDomainName: 'Default',
    projectName: 'p-admin',
    projectDomainName: 'Default',
    interface: 'public',
    insecure: false,
    sources: ['test'],
    ...over,
  };
}

const cloud = useFakeCloud();

describe('keystone helpers', () => {
  it('normalizes auth_url to the v3 base', () => {
    expect(identityV3Url('http://k:5000')).toBe('http://k:5000/v3');
    expect(identityV3Url('http://k:5000/v3/')).toBe('http://k:5000/v3');
    expect(identityV3Url('https://k/identity')).toBe('https://k/identity/v3');
    expect(identityV3Url('http://k:5000/v2.0')).toBe('http://k:5000/v3');
  });

  it('builds password and application credential bodies', () => {
    const byName = authRequestBody(cfg()) as any;
    expect(byName.auth.identity.password.user).toEqual({ name: 'admin', domain: { name: 'Default' }, password: 'adminpw' });
    expect(byName.auth.scope.project).toEqual({ name: 'p-admin', domain: { name: 'Default' } });
    const byId = authRequestBody(cfg({ userId: 'u1', projectId: 'p1', projectDomainId: 'd' })) as any;
    expect(byId.auth.identity.password.user).toEqual({ id: 'u1', password: 'adminpw' });
    expect(byId.auth.scope).toEqual({ project: { id: 'p1' } });
    const ac = authRequestBody(cfg({ authType: 'v3applicationcredential', applicationCredentialId: 'ac1', applicationCredentialSecret: 's3cr3t' })) as any;
    expect(ac.auth).toEqual({ identity: { methods: ['application_credential'], application_credential: { id: 'ac1', secret: 's3cr3t' } } });
    const acName = authRequestBody(
      cfg({ authType: 'v3applicationcredential', applicationCredentialName: 'n', applicationCredentialSecret: 's3cr3t', username: 'bob', userDomainId: 'default' }),
    ) as any;
    expect(acName.auth.identity.application_credential).toEqual({ name: 'n', secret: 's3cr3t', user: { name: 'bob', domain: { id: 'default' } } });
  });

  it('looks up block-storage, then volumev3, then volume, by interface and region', () => {
    const catalog = [
      { type: 'volume', endpoints: [{ interface: 'public', region_id: 'R1', url: 'http://v1' }] },
      { type: 'volumev3', endpoints: [{ interface: 'internal', region_id: 'R1', url: 'http://v3-int' }, { interface: 'public', region_id: 'R2', url: 'http://v3-r2' }] },
    ];
    expect(findEndpoint(catalog, ['block-storage', 'volumev3', 'volume'], 'internal', 'R1')).toBe('http://v3-int');
    expect(findEndpoint(catalog, ['block-storage', 'volumev3', 'volume'], 'public', 'R2')).toBe('http://v3-r2');
    expect(findEndpoint(catalog, ['block-storage', 'volumev3', 'volume'], 'public', 'R1')).toBe('http://v1');
    expect(findEndpoint(catalog, ['block-storage', 'volumev3'], 'admin', 'R1')).toBeUndefined();
  });
});

describe('KeystoneSession', () => {
  it('authenticates once for many concurrent requests', async () => {
    cloud.authDelayMs = 100;
    const s = new KeystoneSession(cfg(), { retry: fast });
    const url = `http://127.0.0.1:${cloud.port}/volume/v3/`;
    const answers = await Promise.all(Array.from({ length: 10 }, () => s.request({ method: 'GET', url })));
    expect(answers.every((a) => a.status === 200)).toBe(true);
    expect(cloud.authCount).toBe(1);
    expect(s.authCount).toBe(1);
  });

  it('renews before expiry, once for concurrent callers', async () => {
    let now = Date.now();
    const s = new KeystoneSession(cfg(), { retry: fast, now: () => now });
    const t1 = await s.getToken();
    now += 50 * 60_000; // 10 min left: no renewal yet
    expect((await s.getToken()).token).toBe(t1.token);
    expect(cloud.authCount).toBe(1);
    now += 6 * 60_000; // 4 min left: inside the 5 min window
    cloud.authDelayMs = 50;
    const toks = await Promise.all(Array.from({ length: 5 }, () => s.getToken()));
    expect(new Set(toks.map((t) => t.token)).size).toBe(1);
    expect(toks[0]!.token).not.toBe(t1.token);
    expect(cloud.authCount).toBe(2);
  });

  it('renews short-lived tokens at half their lifetime, not on every call', async () => {
    cloud.tokenLifetimeS = 120;
    let now = Date.now();
    const s = new KeystoneSession(cfg(), { retry: fast, now: () => now });
    await s.getToken();
    now += 30_000;
    await s.getToken();
    expect(cloud.authCount).toBe(1);
    now += 40_000;
    await s.getToken();
    expect(cloud.authCount).toBe(2);
  });

  it('renews once on a 401 and retries the request; concurrent 401s share the renewal', async () => {
    const s = new KeystoneSession(cfg(), { retry: fast });
    const url = `http://127.0.0.1:${cloud.port}/volume/v3/`;
    await s.request({ method: 'GET', url });
    cloud.revokeAll();
    cloud.authDelayMs = 50;
    const answers = await Promise.all(Array.from({ length: 6 }, () => s.request({ method: 'GET', url })));
    expect(answers.map((a) => a.status)).toEqual(Array(6).fill(200));
    expect(cloud.authCount).toBe(2);
  });

  it('wrong password: AuthError (exit 12) without the password', async () => {
    const s = new KeystoneSession(cfg({ password: 'Sup3rS3cretPw' }), { retry: fast });
    const err = await s.getToken().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(AuthError);
    expect((err as AuthError).exitCode).toBe(12);
    expect((err as Error).message).not.toContain('Sup3rS3cretPw');
    expect((err as Error).message).toContain('admin');
    expect(redact('password=Sup3rS3cretPw')).not.toContain('Sup3rS3cretPw');
  });

  it('unreachable Keystone: UnreachableError', async () => {
    const dead = new FakeCloud();
    await dead.start();
    const url = dead.authUrl;
    await dead.stop();
    const s = new KeystoneSession(cfg({ authUrl: url }), { retry: fast });
    await expect(s.getToken()).rejects.toBeInstanceOf(UnreachableError);
    await expect(s.getToken()).rejects.toThrow(/cannot reach Keystone/);
  });

  it('retries a 503 from Keystone', async () => {
    cloud.faults.push({ method: 'POST', path: /auth\/tokens/, status: 503, count: 2 });
    const s = new KeystoneSession(cfg(), { retry: fast });
    await s.getToken();
    expect(cloud.authCount).toBe(1);
  });

  it('missing endpoint names the service types, interface and region', async () => {
    const s = new KeystoneSession(cfg({ interface: 'admin', regionName: 'RegionX' }), { retry: fast });
    const err = await s.endpoint(['block-storage', 'volumev3', 'volume']).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ConfigError);
    expect((err as Error).message).toMatch(/block-storage\/volumev3\/volume.*interface admin.*region RegionX/);
    expect((err as Error).message).toContain('volumev3[public@RegionOne,internal@RegionOne]');
  });

  it('tokens are registered as secrets', async () => {
    const s = new KeystoneSession(cfg(), { retry: fast });
    const t = await s.getToken();
    expect(redact(`token ${t.token}`)).toBe('token ***');
  });
});
