import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ConfigError } from '../../src/errors.js';
import { redact } from '../../src/util/log.js';
import { listCloudNames, resolveOpenStackConfig } from '../../src/volume/openstack-config.js';

let dir: string;
let home: string;
let cwd: string;

const clouds = `
clouds:
  lab:
    auth:
      auth_url: http://keystone:5000/v3
      username: alice
      project_name: proj
      user_domain_name: Users
      project_domain_name: Projects
    region_name: RegionOne
    interface: internal
    identity_api_version: 3
  appcred:
    auth_type: v3applicationcredential
    auth:
      auth_url: https://keystone.example/
      application_credential_id: ac-123
    cacert: /etc/ssl/ca.pem
    regions: [Two, Three]
  legacy:
    auth:
      auth_url: http://k/v3
      username: bob
      password: pw-bob-1234
      project_id: p-1
      domain_name: Corp
    verify: false
`;
const secure = `
clouds:
  lab:
    auth:
      password: AlicePw-9876
  appcred:
    auth:
      application_credential_secret: AcSecret-5555
`;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'pf-oscfg-'));
  home = join(dir, 'home');
  cwd = join(dir, 'cwd');
  await mkdir(join(home, '.config', 'openstack'), { recursive: true });
  await mkdir(cwd, { recursive: true });
  await writeFile(join(home, '.config', 'openstack', 'clouds.yaml'), clouds);
  await writeFile(join(home, '.config', 'openstack', 'secure.yaml'), secure);
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

const base = () => ({ home, cwd, searchDirs: [cwd, join(home, '.config', 'openstack')] });

describe('resolveOpenStackConfig', () => {
  it('reads a clouds.yaml entry merged with secure.yaml (OS_CLOUD)', async () => {
    const c = await resolveOpenStackConfig({ ...base(), env: { OS_CLOUD: 'lab' } });
    expect(c).toMatchObject({
      authUrl: 'http://keystone:5000/v3',
      authType: 'v3password',
      username: 'alice',
      password: 'AlicePw-9876',
      projectName: 'proj',
      userDomainName: 'Users',
      projectDomainName: 'Projects',
      regionName: 'RegionOne',
      interface: 'internal',
      cloud: 'lab',
      insecure: false,
    });
    expect(c.sources[0]).toMatch(/clouds\.yaml.*#lab/);
    expect(redact('x AlicePw-9876 y')).toBe('x *** y');
  });

  it('application credential from clouds.yaml: type, secret, cacert, first region', async () => {
    const c = await resolveOpenStackConfig({ ...base(), cloud: 'appcred', env: {} });
    expect(c).toMatchObject({
      authType: 'v3applicationcredential',
      applicationCredentialId: 'ac-123',
      applicationCredentialSecret: 'AcSecret-5555',
      cacert: '/etc/ssl/ca.pem',
      regionName: 'Two',
    });
  });

  it('domain_name fills both domains; verify: false means insecure', async () => {
    const c = await resolveOpenStackConfig({ ...base(), cloud: 'legacy', env: {} });
    expect(c).toMatchObject({ userDomainName: 'Corp', projectDomainName: 'Corp', projectId: 'p-1', insecure: true });
  });

  it('unknown cloud: ConfigError listing the known names', async () => {
    const err = await resolveOpenStackConfig({ ...base(), cloud: 'nope', env: {} }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ConfigError);
    expect((err as Error).message).toMatch(/cloud "nope" not found.*known clouds: lab, appcred, legacy/);
    expect(await listCloudNames({ ...base(), env: {} })).toEqual(['lab', 'appcred', 'legacy']);
  });

  it('./clouds.yaml wins over ~/.config/openstack', async () => {
    await writeFile(join(cwd, 'clouds.yaml'), 'clouds:\n  local:\n    auth: {auth_url: "http://here/v3", username: u, password: pwpwpw, project_name: p}\n');
    try {
      const c = await resolveOpenStackConfig({ ...base(), env: { OS_CLOUD: 'local' } });
      expect(c.authUrl).toBe('http://here/v3');
      await expect(resolveOpenStackConfig({ ...base(), env: { OS_CLOUD: 'lab' } })).rejects.toThrow(/known clouds: local/);
    } finally {
      await rm(join(cwd, 'clouds.yaml'));
    }
  });

  it('OS_* variables alone, with defaults', async () => {
    const c = await resolveOpenStackConfig({
      ...base(),
      env: { OS_AUTH_URL: 'http://k:5000', OS_USERNAME: 'admin', OS_PASSWORD: 'labadmin', OS_PROJECT_NAME: 'admin', OS_INSECURE: 'true', OS_INTERFACE: 'publicURL' },
    });
    expect(c).toMatchObject({ authUrl: 'http://k:5000', userDomainName: 'Default', projectDomainName: 'Default', insecure: true, interface: 'public', sources: ['env'] });
  });

  it('precedence: explicit > env > clouds.yaml', async () => {
    const c = await resolveOpenStackConfig({
      ...base(),
      env: { OS_CLOUD: 'lab', OS_REGION_NAME: 'EnvRegion', OS_USERNAME: 'envuser', OS_INTERFACE: 'admin' },
      explicit: { region_name: 'IniRegion', os_interface: 'public' },
    });
    expect(c).toMatchObject({ regionName: 'IniRegion', username: 'envuser', interface: 'public', password: 'AlicePw-9876' });
    expect(c.sources).toEqual([expect.stringMatching(/clouds\.yaml/), 'env', 'explicit']);
  });

  it('explicit cloud key (agent.ini [cinder] cloud = ...) selects the entry; --os-cloud overrides it', async () => {
    const c = await resolveOpenStackConfig({ ...base(), env: { OS_CLOUD: 'appcred' }, explicit: { cloud: 'lab' } });
    expect(c.cloud).toBe('lab');
    const d = await resolveOpenStackConfig({ ...base(), cloud: 'legacy', env: {}, explicit: { cloud: 'lab' } });
    expect(d.cloud).toBe('legacy');
  });

  it('application credential from the environment is inferred without OS_AUTH_TYPE', async () => {
    const c = await resolveOpenStackConfig({
      ...base(),
      env: { OS_AUTH_URL: 'http://k/v3', OS_APPLICATION_CREDENTIAL_ID: 'id1', OS_APPLICATION_CREDENTIAL_SECRET: 'sekrit-777' },
    });
    expect(c.authType).toBe('v3applicationcredential');
    expect(redact('sekrit-777')).toBe('***');
  });

  it('missing settings: ConfigError naming them', async () => {
    await expect(resolveOpenStackConfig({ ...base(), env: {} })).rejects.toThrow(/missing auth_url.*username.*password.*project/);
    await expect(resolveOpenStackConfig({ ...base(), env: { OS_AUTH_URL: 'http://k', OS_AUTH_TYPE: 'v3applicationcredential' } })).rejects.toThrow(
      /application_credential_secret/,
    );
    await expect(resolveOpenStackConfig({ ...base(), env: { OS_AUTH_URL: 'http://k', OS_AUTH_TYPE: 'token' } })).rejects.toThrow(/unsupported auth_type/);
    await expect(
      resolveOpenStackConfig({ ...base(), env: { OS_AUTH_URL: 'nope', OS_USERNAME: 'a', OS_PASSWORD: 'bbbb', OS_PROJECT_ID: 'p' } }),
    ).rejects.toThrow(/invalid auth_url/);
  });

  it('malformed YAML: ConfigError with the path', async () => {
    await writeFile(join(cwd, 'clouds.yaml'), 'clouds: [unclosed');
    try {
      await expect(resolveOpenStackConfig({ ...base(), env: { OS_CLOUD: 'x' } })).rejects.toThrow(/clouds\.yaml: malformed YAML/);
    } finally {
      await rm(join(cwd, 'clouds.yaml'));
    }
  });
});
