// iscsi connector, kernel path, against a fake sysfs tree: there is no iscsi_tcp here, so the real
// scripts/iscsi-attach|detach run in mode=kernel with a stub `iscsiadm` first on PATH that logs its
// calls and, on --login, makes the session's SCSI disk appear under PF_SYSFS_ROOT/PF_DEV_ROOT as
// the kernel would. Checks os-brick's sequence: node --op new, CHAP via --op update, --login,
// node.startup manual, wait for the disk; detach: delete the SCSI device, --logout, --op delete.
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { existsSync, readdirSync } from 'node:fs';
import { chmod, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { IscsiConnector } from '../../src/connectors/iscsi.js';
import { DeviceError } from '../../src/errors.js';

const IQN = 'iqn.2010-10.org.openstack:volume-7f3c';
const PORTAL = '192.0.2.10:3260';
const PASSWORD = 'kernel-chap-secret-42';

let top: string;
let sys: string;
let dev: string;
let bin: string;
let stateDir: string;
let callLog: string;

// The stub: logs "iscsiadm ARGS", and on --login builds session3 / target3:0:0 / 3:0:0:<LUN> / sdg.
const STUB = `#!/bin/bash
echo "iscsiadm $*" >> "$FAKE_LOG"
args=" $* "
if [[ $args == *" --login "* ]]; then
  [ -n "\${FAKE_LOGIN_RC:-}" ] && exit "$FAKE_LOGIN_RC"
  S="$PF_SYSFS_ROOT/class/iscsi_session/session3"
  H="$PF_SYSFS_ROOT/devices/platform/host3/session3/target3:0:0/3:0:0:\${FAKE_LUN:-1}"
  mkdir -p "$S" "$H/block/sdg" "$PF_SYSFS_ROOT/block/sdg"
  echo "$FAKE_IQN" > "$S/targetname"
  [ -n "\${FAKE_NO_DISK:-}" ] && { rm -rf "$H"; exit 0; }
  ln -sfn "$PF_SYSFS_ROOT/devices/platform/host3/session3" "$S/device"
  : > "$H/delete"
  ln -sfn "$H" "$PF_SYSFS_ROOT/block/sdg/device"
  (sleep 0.3; : > "$PF_DEV_ROOT/sdg") &
fi
if [[ $args == *" --logout "* ]] && [ -n "\${FAKE_NO_SESSION:-}" ]; then exit 21; fi
exit 0
`;

function connector(extra: Record<string, string> = {}): IscsiConnector {
  return new IscsiConnector({
    stateDir,
    mode: 'kernel',
    verifyDevice: 'exists',
    env: {
      PF_SYSFS_ROOT: sys,
      PF_DEV_ROOT: dev,
      PF_SCAN_TIMEOUT: '3',
      FAKE_LOG: callLog,
      FAKE_IQN: IQN,
      PATH: `${bin}:${process.env.PATH ?? '/usr/bin:/bin'}`,
      ...extra,
    },
  });
}

const info = (auth = false) => ({
  driver_volume_type: 'iscsi',
  data: {
    target_portal: PORTAL,
    target_iqn: IQN,
    target_lun: 1,
    target_discovered: false,
    ...(auth ? { auth_method: 'CHAP', auth_username: 'chapuser', auth_password: PASSWORD } : {}),
  },
});

async function calls(): Promise<string[]> {
  return existsSync(callLog) ? (await readFile(callLog, 'utf8')).trim().split('\n') : [];
}

beforeEach(async () => {
  top = await mkdtemp(join(tmpdir(), 'pf-iscsi-kernel-'));
  sys = join(top, 'sys');
  dev = join(top, 'dev');
  bin = join(top, 'bin');
  stateDir = join(top, 'run');
  callLog = join(top, 'iscsiadm.log');
  for (const d of [sys, dev, bin]) await mkdir(d, { recursive: true });
  await writeFile(join(bin, 'iscsiadm'), STUB);
  await chmod(join(bin, 'iscsiadm'), 0o755);
});

afterEach(async () => {
  await rm(top, { recursive: true, force: true });
});

describe('iscsi connector kernel path against a fake sysfs tree', () => {
  it("follows os-brick's login sequence with CHAP and finds the disk without udev", async () => {
    const c = connector();
    const d = await c.attach(info(true), { readOnly: true });
    expect(d.path).toBe(join(dev, 'sdg'));
    expect(d.state).toMatchObject({ MODE: 'kernel', PORTAL, IQN, LUN: '1', SCSI_DEVICE: 'sdg', SCSI_ADDRESS: '3:0:0:1' });
    const node = `iscsiadm -m node -T ${IQN} -p ${PORTAL}`;
    expect(await calls()).toEqual([
      `${node} --interface default --op new`,
      `${node} --op update -n node.session.auth.authmethod -v CHAP`,
      `${node} --op update -n node.session.auth.username -v chapuser`,
      `${node} --op update -n node.session.auth.password -v ${PASSWORD}`,
      `${node} --login`,
      `${node} --op update -n node.startup -v manual`,
    ]);
    expect(JSON.stringify(d.state)).not.toContain(PASSWORD);

    await writeFile(callLog, '');
    await c.detach(d);
    expect(await readFile(join(sys, 'devices/platform/host3/session3/target3:0:0/3:0:0:1/delete'), 'utf8')).toBe('1\n');
    expect((await calls()).filter(Boolean)).toEqual([`${node} --logout`, `${node} --op delete`]);
  });

  it('accepts "already logged in" (exit 15) and stays logged in while another LUN of the target is in use', async () => {
    // Another LUN of the same target, already attached here.
    const other = join(sys, 'devices/platform/host3/session3/target3:0:0/3:0:0:2/block/sdh');
    await mkdir(other, { recursive: true });
    const c = connector();
    const d = await c.attach(info(), { readOnly: false });
    expect(d.state.SCSI_DEVICE).toBe('sdg');
    await writeFile(callLog, '');
    await c.detach(d);
    expect((await calls()).filter(Boolean)).toEqual([]);

    const again = connector({ FAKE_LOGIN_RC: '15' });
    const d2 = await again.attach(info(), { readOnly: true });
    expect(d2.state.SCSI_DEVICE).toBe('sdg');
  });

  it('fails a refused login with the exit code, redacted, and cleans up', async () => {
    const c = connector({ FAKE_LOGIN_RC: '24' });
    const err = await c.attach(info(true), { readOnly: true }).then(
      () => undefined,
      (e: unknown) => e as Error,
    );
    expect(err).toBeInstanceOf(DeviceError);
    expect(err!.message).toMatch(/--login to .* failed \(exit 24\)/);
    expect(err!.message).not.toContain(PASSWORD);
    expect(readdirSync(stateDir)).toEqual([]);
  });

  it('gives up when the LUN never appears, and detach tolerates "no session" (exit 21)', async () => {
    const c = connector({ FAKE_NO_DISK: '1', PF_SCAN_TIMEOUT: '1', FAKE_NO_SESSION: '1' });
    await expect(c.attach(info(), { readOnly: true })).rejects.toThrow(/LUN 1 of .* did not show up within 1 s/);
    // The failed attach logged out again (cleanup through iscsi-detach).
    expect((await calls()).some((l) => l.endsWith('--logout'))).toBe(true);
    expect(readdirSync(stateDir)).toEqual([]);
  });
});
