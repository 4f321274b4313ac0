// ScriptConnector: environment built from connection_info, KEY=VALUE parsing, timeouts that kill
// the whole process group, secrets redacted from errors, unknown protocols. Uses throw-away
// helper scripts in a temp directory; needs no root.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { chmod, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  connectorFor,
  FcConnector,
  IscsiConnector,
  LocalConnector,
  RbdConnector,
  supportedVolumeTypes,
} from '../../src/connectors/index.js';
import {
  connectionData,
  connectionEnv,
  detachOrphans,
  findOrphanAttachments,
  isSecretKey,
  parseKeyValues,
  redactWith,
  ScriptConnector,
  toEnvName,
} from '../../src/connectors/script.js';
import { DeviceError, InterruptedError } from '../../src/errors.js';

const PASSWORD = 'Sup3r-S3cret-Chap!';

let dir: string;
let scripts: string;
let state: string;
let devFile: string;

async function script(name: string, body: string): Promise<void> {
  const p = join(scripts, name);
  await writeFile(p, `#!/usr/bin/env bash\nset -euo pipefail\n${body}\n`);
  await chmod(p, 0o755);
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return !/^\d+ \(.*\) Z /.test(stat);
  } catch {
    return false;
  }
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'pf-connector-script-'));
  scripts = join(dir, 'scripts');
  state = join(dir, 'run');
  devFile = join(dir, 'fake-device');
  await writeFile(devFile, '');
  await mkdir(scripts);
  // Echoes its inputs back as outputs.
  await script(
    'echo-attach',
    `echo "DEVICE=$FAKE_DEVICE"
echo "GOT_PORTAL=$PF_TARGET_PORTAL"
echo "GOT_IQN=$PF_TARGET_IQN"
echo "GOT_LUN=$PF_TARGET_LUN"
echo "GOT_HOSTS=$PF_HOSTS"
echo "GOT_RO=$PF_READ_ONLY"
echo "GOT_MODE=$PF_ATTACH_MODE"
echo "GOT_STATE_DIR=$PF_STATE_DIR"
echo "GOT_QOS=\${PF_QOS_SPECS:-}"
echo "GOT_AWS=\${AWS_SECRET_ACCESS_KEY:-none}"
echo "this line is ignored"
echo "lower=ignored too"
echo "diagnostic on stderr" >&2
echo "X=1" > "$PF_STATE_DIR/attach.env"`,
  );
  await script(
    'echo-detach',
    `{ echo "DEVICE=\${PF_DEVICE:-}"; echo "STATE_DIR=$PF_STATE_DIR"; echo "GOT_LUN=\${PF_GOT_LUN:-}"; } >> "$FAKE_LOG"`,
  );
  await script('nodev-attach', `echo "SOMETHING=1"`);
  await script('nodev-detach', `echo "detach $PF_STATE_DIR" >> "$FAKE_LOG"`);
  await script(
    'chap-attach',
    `echo "iscsiadm: login failed for user $PF_AUTH_USERNAME with password $PF_AUTH_PASSWORD" >&2
echo "node.session.auth.password = $PF_AUTH_PASSWORD" >&2
exit 24`,
  );
  await script('chap-detach', `exit 0`);
  // Starts a child that would outlive a plain kill of the script.
  await script(
    'hang-attach',
    `sleep 300 &
echo $! > "$FAKE_PIDFILE"
echo "started" >&2
wait`,
  );
  await script('hang-detach', `exit 0`);
  await script('baddetach-attach', `echo "DEVICE=$FAKE_DEVICE"`);
  await script('baddetach-detach', `echo "cannot remove, password=$PF_SECRET_THING" >&2; exit 3`);
});

afterAll(async () => {
  delete process.env.AWS_SECRET_ACCESS_KEY;
  await rm(dir, { recursive: true, force: true });
});

describe('connection_info to environment', () => {
  it('turns keys into PF_<UPPER_SNAKE>', () => {
    expect(toEnvName('target_portal')).toBe('TARGET_PORTAL');
    expect(toEnvName('targetPortal')).toBe('TARGET_PORTAL');
    expect(toEnvName('auth-username')).toBe('AUTH_USERNAME');
    expect(toEnvName('device_path')).toBe('DEVICE_PATH');
  });

  it('flattens nested and flat connection_info, arrays as lists, objects as JSON', () => {
    const nested = connectionEnv({
      driver_volume_type: 'iscsi',
      data: {
        target_portal: '10.0.0.1:3260',
        target_iqn: 'iqn.2010-10.org.openstack:volume-1',
        target_lun: 1,
        target_discovered: false,
        target_portals: ['10.0.0.1:3260', '10.0.0.2:3260'],
        auth_password: PASSWORD,
        qos_specs: { read_iops_sec: 100 },
        encrypted: null,
      },
    });
    expect(nested.env).toMatchObject({
      PF_TARGET_PORTAL: '10.0.0.1:3260',
      PF_TARGET_IQN: 'iqn.2010-10.org.openstack:volume-1',
      PF_TARGET_LUN: '1',
      PF_TARGET_DISCOVERED: 'false',
      PF_TARGET_PORTALS: '10.0.0.1:3260,10.0.0.2:3260',
      PF_AUTH_PASSWORD: PASSWORD,
      PF_QOS_SPECS: '{"read_iops_sec":100}',
    });
    expect(nested.env.PF_ENCRYPTED).toBeUndefined();
    expect(nested.secrets).toEqual([PASSWORD]);
    // Cinder's attachments API returns it flat, beside driver_volume_type.
    const flat = connectionData({ driver_volume_type: 'rbd', name: 'volumes/volume-1', hosts: ['127.0.0.1'], ports: ['6789'], attachment_id: 'a1' });
    expect(flat).toEqual({ name: 'volumes/volume-1', hosts: ['127.0.0.1'], ports: ['6789'], attachment_id: 'a1' });
    expect(connectionEnv({ driver_volume_type: 'rbd', name: 'volumes/v', hosts: ['a', 'b'] } as never).env).toMatchObject({ PF_NAME: 'volumes/v', PF_HOSTS: 'a,b' });
  });

  it('knows which keys are secrets', () => {
    for (const k of ['auth_password', 'discovery_auth_password', 'secret', 'keyring', 'auth_key', 'token', 'key']) expect(isSecretKey(k), k).toBe(true);
    for (const k of ['target_portal', 'target_iqn', 'auth_username', 'name', 'hosts', 'device_path', 'target_lun']) expect(isSecretKey(k), k).toBe(false);
  });

  it('parses KEY=VALUE lines and ignores the rest', () => {
    expect(parseKeyValues('DEVICE=/dev/loop3\nPID=42\nnoise\nlower=x\nEMPTY=\nURL=a=b=c\r\n')).toEqual({
      DEVICE: '/dev/loop3',
      PID: '42',
      EMPTY: '',
      URL: 'a=b=c',
    });
    expect(redactWith(`user x password ${PASSWORD} end`, [PASSWORD])).toBe('user x password *** end');
  });
});

describe('ScriptConnector', () => {
  it('passes PF_* inputs, parses outputs, hands them back to detach and removes the state dir', async () => {
    process.env.AWS_SECRET_ACCESS_KEY = 'agent-s3-secret';
    const log = join(dir, 'echo.log');
    const c = new ScriptConnector('echo', {
      scriptsDir: scripts,
      stateDir: state,
      mode: 'userspace',
      verifyDevice: 'exists',
      env: { FAKE_DEVICE: devFile, FAKE_LOG: log },
    });
    const dev = await c.attach(
      {
        driver_volume_type: 'iscsi',
        data: { target_portal: '127.0.0.1:3261', target_iqn: 'iqn.x:y', target_lun: 7, hosts: ['h1', 'h2'], attachment_id: 'att-1', qos_specs: null },
      },
      { readOnly: true },
    );
    expect(dev.path).toBe(devFile);
    expect(dev.protocol).toBe('echo');
    expect(dev.state).toMatchObject({
      DEVICE: devFile,
      GOT_PORTAL: '127.0.0.1:3261',
      GOT_IQN: 'iqn.x:y',
      GOT_LUN: '7',
      GOT_HOSTS: 'h1,h2',
      GOT_RO: '1',
      GOT_MODE: 'userspace',
      GOT_QOS: '',
      GOT_AWS: 'none', // the agent's own credentials never reach helper scripts
      READ_ONLY: '1',
    });
    expect(dev.state.lower).toBeUndefined();
    const sd = dev.state.STATE_DIR!;
    expect(sd.startsWith(state + '/echo-att-1-')).toBe(true);
    expect(dev.state.GOT_STATE_DIR).toBe(sd);
    expect(existsSync(sd)).toBe(true);
    await c.detach(dev);
    const text = await readFile(log, 'utf8');
    expect(text).toContain(`DEVICE=${devFile}`);
    expect(text).toContain(`STATE_DIR=${sd}`);
    expect(text).toContain('GOT_LUN=7');
    expect(existsSync(sd)).toBe(false);
  });

  it("attaches read-only when the cloud exports the volume with access_mode 'ro'", async () => {
    const c = new ScriptConnector('echo', { scriptsDir: scripts, stateDir: state, verifyDevice: 'exists', env: { FAKE_DEVICE: devFile, FAKE_LOG: join(dir, 'ro.log') } });
    const info = { driver_volume_type: 'iscsi', data: { target_portal: 'p', target_iqn: 'i', target_lun: 0, hosts: [], access_mode: 'ro' } };
    const d = await c.attach(info, { readOnly: false });
    expect(d.state).toMatchObject({ GOT_RO: '1', READ_ONLY: '1' });
    await c.detach(d);
  });

  it('fails with DeviceError when the script prints no DEVICE, and runs detach to clean up', async () => {
    const log = join(dir, 'nodev.log');
    const c = new ScriptConnector('nodev', { scriptsDir: scripts, stateDir: state, env: { FAKE_LOG: log } });
    await expect(c.attach({ driver_volume_type: 'nodev', data: {} }, { readOnly: true })).rejects.toThrow(/printed no DEVICE=/);
    expect(await readFile(log, 'utf8')).toMatch(/^detach \//);
  });

  it('refuses a DEVICE that is not a block device by default', async () => {
    const c = new ScriptConnector('echo', { scriptsDir: scripts, stateDir: state, env: { FAKE_DEVICE: devFile, FAKE_LOG: join(dir, 'x.log') } });
    const info = { driver_volume_type: 'echo', data: { target_portal: 'p', target_iqn: 'i', target_lun: 0, hosts: [] } };
    await expect(c.attach(info, { readOnly: false })).rejects.toThrow(/not a block device/);
  });

  it('redacts the password from errors (stderr included)', async () => {
    const c = new ScriptConnector('chap', { scriptsDir: scripts, stateDir: state });
    const err = await c
      .attach({ driver_volume_type: 'iscsi', data: { auth_method: 'CHAP', auth_username: 'bob', auth_password: PASSWORD } }, { readOnly: true })
      .then(
        () => undefined,
        (e: unknown) => e,
      );
    expect(err).toBeInstanceOf(DeviceError);
    const msg = (err as Error).message;
    expect(msg).toContain('exit 24');
    expect(msg).toContain('login failed for user bob');
    expect(msg).not.toContain(PASSWORD);
    expect(msg).toContain('***');
    expect(JSON.stringify(err)).not.toContain(PASSWORD);
  });

  it('redacts secrets given in the connector env from detach errors', async () => {
    const c = new ScriptConnector('baddetach', {
      scriptsDir: scripts,
      stateDir: state,
      verifyDevice: 'none',
      env: { FAKE_DEVICE: '/dev/nothing', PF_SECRET_THING: 'Another-Secret-Value' },
    });
    const dev = await c.attach({ driver_volume_type: 'x', data: {} }, { readOnly: true });
    const err = await c.detach(dev).then(
      () => undefined,
      (e: unknown) => e as Error,
    );
    expect(err).toBeInstanceOf(DeviceError);
    expect(err!.message).toContain('exit 3');
    expect(err!.message).not.toContain('Another-Secret-Value');
  });

  it('kills the whole process group on timeout', async () => {
    const pidfile = join(dir, 'hang.pid');
    const c = new ScriptConnector('hang', { scriptsDir: scripts, stateDir: state, timeoutMs: 700, killGraceMs: 500, env: { FAKE_PIDFILE: pidfile } });
    const t0 = Date.now();
    await expect(c.attach({ driver_volume_type: 'hang', data: {} }, { readOnly: true })).rejects.toThrow(/timed out after 1 s: started/);
    expect(Date.now() - t0).toBeLessThan(5000);
    const child = Number((await readFile(pidfile, 'utf8')).trim());
    expect(child).toBeGreaterThan(0);
    // The background `sleep 300` was in the script's process group: it is gone too.
    for (let i = 0; i < 20 && pidAlive(child); i++) await new Promise((r) => setTimeout(r, 100));
    expect(pidAlive(child)).toBe(false);
  });

  it('stops on an abort signal with InterruptedError', async () => {
    const pidfile = join(dir, 'hang2.pid');
    const c = new ScriptConnector('hang', { scriptsDir: scripts, stateDir: state, killGraceMs: 500, env: { FAKE_PIDFILE: pidfile } });
    const ac = new AbortController();
    setTimeout(() => ac.abort(), 300);
    await expect(c.attach({ driver_volume_type: 'hang', data: {} }, { readOnly: true, signal: ac.signal })).rejects.toBeInstanceOf(InterruptedError);
    const child = Number((await readFile(pidfile, 'utf8')).trim());
    for (let i = 0; i < 20 && pidAlive(child); i++) await new Promise((r) => setTimeout(r, 100));
    expect(pidAlive(child)).toBe(false);
  });

  it('reports a missing script as DeviceError', async () => {
    const c = new ScriptConnector('absent', { scriptsDir: scripts, stateDir: state });
    await expect(c.attach({ driver_volume_type: 'absent', data: {} }, { readOnly: true })).rejects.toThrow(/absent-attach not found/);
    expect(existsSync(state) ? readdirSync(state).filter((d) => d.startsWith('absent-')) : []).toEqual([]);
  });
});

describe('orphan attachments', () => {
  it('finds state dirs whose owner process is gone and detaches them with what attach recorded', async () => {
    const root = join(dir, 'orphans');
    const log = join(dir, 'orphan.log');
    const c = new ScriptConnector('echo', { scriptsDir: scripts, stateDir: root, verifyDevice: 'none', env: { FAKE_DEVICE: '/dev/fake', FAKE_LOG: log } });
    const info = { driver_volume_type: 'echo', data: { target_portal: 'p', target_iqn: 'i', target_lun: 3, hosts: [] } };
    const live = await c.attach(info, { readOnly: true });
    const dead = await c.attach(info, { readOnly: true });
    // The second one belonged to a process that has exited since.
    const gone = spawnSync('true').pid!;
    const ownerFile = join(dead.state.STATE_DIR!, 'owner.json');
    const owner = JSON.parse(await readFile(ownerFile, 'utf8')) as { pid: number };
    owner.pid = gone;
    await writeFile(ownerFile, JSON.stringify(owner));
    const found = await findOrphanAttachments(root);
    expect(found.map((o) => o.dir)).toEqual([dead.state.STATE_DIR]);
    expect(found[0]!.owner.protocol).toBe('echo');
    expect(found[0]!.state).toEqual({ X: '1' });
    const r = await detachOrphans({ scriptsDir: scripts, stateDir: root, env: { FAKE_LOG: log } });
    expect(r).toEqual({ detached: [dead.state.STATE_DIR], failed: [] });
    expect(await readFile(log, 'utf8')).toContain(`STATE_DIR=${dead.state.STATE_DIR}`);
    expect(existsSync(dead.state.STATE_DIR!)).toBe(false);
    expect(existsSync(live.state.STATE_DIR!)).toBe(true);
    expect(await findOrphanAttachments(join(dir, 'no-such-root'))).toEqual([]);
    await c.detach(live);
  });
});

describe('connectorFor', () => {
  it('maps driver_volume_type to connectors', () => {
    expect(connectorFor('local')).toBeInstanceOf(LocalConnector);
    expect(connectorFor('iscsi')).toBeInstanceOf(IscsiConnector);
    expect(connectorFor('rbd')).toBeInstanceOf(RbdConnector);
    expect(connectorFor('fibre_channel')).toBeInstanceOf(FcConnector);
    expect(connectorFor('fibre_channel').protocol).toBe('fc');
    expect(connectorFor('ISCSI').protocol).toBe('iscsi');
    expect(supportedVolumeTypes).toContain('fibre_channel');
  });

  it('throws DeviceError for an unknown protocol', () => {
    expect(() => connectorFor('nvmeof')).toThrow(DeviceError);
    expect(() => connectorFor('nvmeof')).toThrow(/no connector for driver_volume_type 'nvmeof'/);
    expect(() => connectorFor('')).toThrow(DeviceError);
  });

  it('finds the package scripts and validates connection_info before running them', async () => {
    const local = connectorFor('local', { stateDir: state });
    expect(existsSync((local as LocalConnector).scriptPath('attach'))).toBe(true);
    await expect(local.attach({ driver_volume_type: 'local', data: {} }, { readOnly: true })).rejects.toThrow(/no device_path/);
    await expect(connectorFor('iscsi', { stateDir: state }).attach({ driver_volume_type: 'iscsi', data: { target_portal: 'x:1' } }, { readOnly: true })).rejects.toThrow(/no target_iqn/);
    await expect(connectorFor('rbd', { stateDir: state }).attach({ driver_volume_type: 'rbd', data: { name: 'noslash' } }, { readOnly: true })).rejects.toThrow(/pool\/image/);
    await expect(connectorFor('fibre_channel', { stateDir: state }).attach({ driver_volume_type: 'fibre_channel', data: { target_lun: 1 } }, { readOnly: true })).rejects.toThrow(/target_wwn/);
  });
});
