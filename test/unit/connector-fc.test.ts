// fc connector against a fake sysfs tree: there is no Fibre Channel hardware here, so the real
// scripts/fc-attach|detach run against a sysfs and /dev tree built in a temp directory
// (PF_SYSFS_ROOT, PF_DEV_ROOT), with a stub `multipath` first on PATH. The "kernel" is the test:
// it makes the LUN appear a moment after the scan request, as a real HBA would.
import { afterAll, afterEach, beforeEach, describe, expect, it } from 'vitest';
import { existsSync, readdirSync } from 'node:fs';
import { chmod, mkdir, mkdtemp, readFile, rm, symlink, unlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { FcConnector } from '../../src/connectors/fc.js';
import { fcPorts } from '../../src/connectors/properties.js';
import { DeviceError } from '../../src/errors.js';

const TARGET_A = '500a0981891b8dc5';
const TARGET_B = '500a0982991b8dc5';

let top: string;
let sys: string;
let dev: string;
let bin: string;
let stateDir: string;
const timers: NodeJS.Timeout[] = [];

async function put(file: string, content: string): Promise<void> {
  await mkdir(dirname(file), { recursive: true });
  await writeFile(file, content);
}

async function link(target: string, path: string): Promise<void> {
  await mkdir(dirname(path), { recursive: true });
  await symlink(target, path);
}

/** An FC HBA: class/fc_host/hostN and class/scsi_host/hostN/scan. */
async function hba(host: number, wwpn: string, state = 'Online'): Promise<void> {
  await put(join(sys, `class/fc_host/host${host}/port_name`), `0x${wwpn}\n`);
  await put(join(sys, `class/fc_host/host${host}/node_name`), `0x${wwpn.replace(/^10/, '20')}\n`);
  await put(join(sys, `class/fc_host/host${host}/port_state`), `${state}\n`);
  await put(join(sys, `class/scsi_host/host${host}/scan`), '');
}

/** A remote target port seen by an HBA: class/fc_transport/targetH:C:T. */
async function targetPort(hct: string, wwpn: string): Promise<void> {
  await put(join(sys, `class/fc_transport/target${hct}/port_name`), `0x${wwpn}\n`);
}

/** What the kernel does once the LUN is found: SCSI device, block device, udev by-path link. */
async function lunAppears(sd: string, hctl: string, wwpn: string, opts: { byPath?: boolean } = {}): Promise<void> {
  await put(join(sys, `bus/scsi/devices/${hctl}/delete`), '');
  await mkdir(join(sys, `bus/scsi/devices/${hctl}/block/${sd}`), { recursive: true });
  await mkdir(join(sys, `block/${sd}`), { recursive: true });
  await symlink(`../../bus/scsi/devices/${hctl}`, join(sys, `block/${sd}/device`));
  await put(join(dev, sd), '');
  const lun = hctl.split(':')[3];
  if (opts.byPath !== false) await link(`../../${sd}`, join(dev, `disk/by-path/pci-0000:05:00.2-fc-0x${wwpn}-lun-${lun}`));
}

function later(ms: number, fn: () => Promise<void>): void {
  timers.push(setTimeout(() => void fn(), ms));
}

function connector(extra: Record<string, string> = {}): FcConnector {
  return new FcConnector({
    stateDir,
    verifyDevice: 'exists',
    timeoutMs: 20_000,
    env: {
      PF_SYSFS_ROOT: sys,
      PF_DEV_ROOT: dev,
      PF_SCAN_TIMEOUT: '5',
      PF_PATH_SETTLE: '0.3',
      PF_USE_MULTIPATH: '0',
      FAKE_LOG: join(top, 'multipath.log'),
      PATH: `${bin}:${process.env.PATH ?? '/usr/bin:/bin'}`,
      ...extra,
    },
  });
}

const info = (wwn: string | string[], lun: number) => ({
  driver_volume_type: 'fibre_channel',
  data: { target_wwn: wwn, target_lun: lun, target_discovered: false, volume_id: 'vol-1' },
});

beforeEach(async () => {
  top = await mkdtemp(join(tmpdir(), 'pf-fc-'));
  sys = join(top, 'sys');
  dev = join(top, 'dev');
  bin = join(top, 'bin');
  stateDir = join(top, 'run');
  await mkdir(bin, { recursive: true });
  // Stub multipath: `-l DEV` prints a map over the paths, `-f NAME` logs the flush.
  await put(
    join(bin, 'multipath'),
    `#!/bin/bash
echo "multipath $*" >> "$FAKE_LOG"
case "$1" in
  -l) echo "mpatha (3600a098038303634722b4d59614c7a41) dm-3 NETAPP,LUN C-Mode"
      echo "size=1.0G features='3 queue_if_no_path pg_init_retries 50' hwhandler='1 alua' wp=rw" ;;
  -f) rm -f "$PF_DEV_ROOT/mapper/$2" ;;
esac
exit 0
`,
  );
  await chmod(join(bin, 'multipath'), 0o755);
});

afterEach(async () => {
  for (const t of timers.splice(0)) clearTimeout(t);
  await rm(top, { recursive: true, force: true });
});

afterAll(async () => {
  for (const t of timers.splice(0)) clearTimeout(t);
});

describe('fc connector against a fake sysfs tree', () => {
  it('rescans the HBA that sees the target, waits for the LUN, attaches and deletes it on detach', async () => {
    await hba(3, '10000090fa0b7e01');
    await hba(4, '10000090fa0b7e02', 'Linkdown');
    await targetPort('3:0:1', TARGET_A);
    later(400, () => lunAppears('sdc', '3:0:1:2', TARGET_A));
    const c = connector();
    const t0 = Date.now();
    const d = await c.attach(info(TARGET_A, 2), { readOnly: true });
    expect(Date.now() - t0).toBeGreaterThanOrEqual(300);
    expect(d.path).toBe(join(dev, 'sdc'));
    expect(d.state).toMatchObject({ SCSI_DEVICES: 'sdc', SCSI_ADDRESSES: '3:0:1:2', MULTIPATH: '', WWNS: TARGET_A, LUN: '2' });
    // Channel 0, target 1, LUN 2 on host3; the offline host4 was left alone.
    expect(await readFile(join(sys, 'class/scsi_host/host3/scan'), 'utf8')).toBe('0 1 2\n');
    expect(await readFile(join(sys, 'class/scsi_host/host4/scan'), 'utf8')).toBe('');

    await c.detach(d);
    expect(await readFile(join(sys, 'bus/scsi/devices/3:0:1:2/delete'), 'utf8')).toBe('1\n');
    expect(existsSync(d.state.STATE_DIR!)).toBe(false);
  });

  it('detach is idempotent and never deletes a SCSI name that now belongs to another device', async () => {
    await hba(3, '10000090fa0b7e01');
    await targetPort('3:0:1', TARGET_A);
    await lunAppears('sdc', '3:0:1:2', TARGET_A);
    const c = connector();
    const d = await c.attach(info(`0x${TARGET_A.toUpperCase()}`, 2), { readOnly: false });
    expect(d.path).toBe(join(dev, 'sdc'));
    // The device went away and its name was reused for another LUN.
    await unlink(join(sys, 'block/sdc/device'));
    await put(join(sys, 'bus/scsi/devices/3:0:1:9/delete'), '');
    await symlink('../../bus/scsi/devices/3:0:1:9', join(sys, 'block/sdc/device'));
    await c.detach(d);
    expect(await readFile(join(sys, 'bus/scsi/devices/3:0:1:2/delete'), 'utf8')).toBe('');
    expect(await readFile(join(sys, 'bus/scsi/devices/3:0:1:9/delete'), 'utf8')).toBe('');
    // Gone altogether: still fine.
    await rm(join(sys, 'block/sdc'), { recursive: true });
    await c.detach(d);
  });

  it('takes the multipath map over two paths and flushes it on detach', async () => {
    await hba(3, '10000090fa0b7e01');
    await hba(4, '10000090fa0b7e02');
    await targetPort('3:0:0', TARGET_A);
    await targetPort('4:0:0', TARGET_B);
    later(200, () => lunAppears('sdd', '3:0:0:1', TARGET_A));
    later(250, () => lunAppears('sde', '4:0:0:1', TARGET_B));
    later(300, () => put(join(dev, 'mapper/mpatha'), ''));
    const c = connector({ PF_USE_MULTIPATH: 'auto', PF_PATH_SETTLE: '0.5' });
    const d = await c.attach(info([TARGET_A, TARGET_B], 1), { readOnly: true });
    expect(d.path).toBe(join(dev, 'mapper/mpatha'));
    expect(d.state).toMatchObject({ SCSI_DEVICES: 'sdd,sde', SCSI_ADDRESSES: '3:0:0:1,4:0:0:1', MULTIPATH: 'mpatha' });
    expect(await readFile(join(sys, 'class/scsi_host/host3/scan'), 'utf8')).toContain('0 0 1');
    expect(await readFile(join(sys, 'class/scsi_host/host4/scan'), 'utf8')).toContain('0 0 1');

    await c.detach(d);
    const mlog = await readFile(join(top, 'multipath.log'), 'utf8');
    expect(mlog).toContain(`multipath -l ${join(dev, 'sdd')}`);
    expect(mlog).toContain('multipath -f mpatha');
    expect(existsSync(join(dev, 'mapper/mpatha'))).toBe(false);
    expect(await readFile(join(sys, 'bus/scsi/devices/3:0:0:1/delete'), 'utf8')).toBe('1\n');
    expect(await readFile(join(sys, 'bus/scsi/devices/4:0:0:1/delete'), 'utf8')).toBe('1\n');
  });

  it('finds the LUN through sysfs when udev made no by-path link', async () => {
    await hba(5, '10000090fa0b7e05');
    await targetPort('5:0:3', TARGET_A);
    await lunAppears('sdf', '5:0:3:4', TARGET_A, { byPath: false });
    const d = await connector().attach(info(TARGET_A, 4), { readOnly: true });
    expect(d.path).toBe(join(dev, 'sdf'));
    expect(d.state.SCSI_ADDRESSES).toBe('5:0:3:4');
  });

  it('scans with wildcards when the target port is unknown and times out when the LUN never shows', async () => {
    await hba(3, '10000090fa0b7e01');
    const c = connector({ PF_SCAN_TIMEOUT: '1' });
    const err = await c.attach(info(TARGET_A, 7), { readOnly: true }).then(
      () => undefined,
      (e: unknown) => e as Error,
    );
    expect(err).toBeInstanceOf(DeviceError);
    expect(err!.message).toMatch(/LUN 7 behind 500a0981891b8dc5 did not show up within 1 s/);
    expect(await readFile(join(sys, 'class/scsi_host/host3/scan'), 'utf8')).toContain('- - 7');
    // The failed attach cleaned its state directory.
    expect(existsSync(stateDir) ? readdirSync(stateDir) : []).toEqual([]);
  });

  it('fails clearly without an HBA, and on a malformed WWPN', async () => {
    const c = connector();
    await expect(c.attach(info(TARGET_A, 1), { readOnly: true })).rejects.toThrow(/no online Fibre Channel HBA/);
    await hba(3, '10000090fa0b7e01');
    await expect(c.attach(info('not-a-wwpn', 1), { readOnly: true })).rejects.toThrow(/bad target WWPN/);
  });

  it('reads the HBA ports for the connector properties', async () => {
    await hba(3, '10000090fa0b7e01');
    await hba(4, '10000090fa0b7e02');
    expect(fcPorts(sys)).toEqual({
      wwpns: ['10000090fa0b7e01', '10000090fa0b7e02'],
      wwnns: ['20000090fa0b7e01', '20000090fa0b7e02'],
    });
    expect(fcPorts(join(top, 'nothing'))).toEqual({ wwpns: [], wwnns: [] });
  });
});
