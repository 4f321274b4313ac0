// RBD connector, userspace paths, against the lab's Ceph (test/lab, ensureLab(['ceph'])): an image
// in pool `volumes`, a connection_info shaped like Cinder's (name, hosts, ports, auth_username
// cinder, no keyring: the node's keyring comes from PF_KEYRING), attached through
// qemu-storage-daemon (librbd FUSE export) and through rbd-fuse, each then a loop device.
// Needs root and the lab; skips with a printed reason otherwise.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { RbdConnector } from '../../src/connectors/rbd.js';
import type { AttachedDevice } from '../../src/connectors/connector.js';
import { detectFilesystem } from '../../src/util/fs-detect.js';
import { listMounts, mkfs, mountReadOnly, mountReadWrite, umount, umountAllUnder } from '../../src/util/mounts.js';
import { ensureLab, isSkip, type LabEnv } from '../setup/lab.js';

const PATH = `/usr/sbin:/sbin:${process.env.PATH ?? '/usr/bin:/bin'}`;
const env = { ...process.env, PATH };
const has = (cmd: string): boolean => {
  try {
    execFileSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore', env });
    return true;
  } catch {
    return false;
  }
};

async function skipReason(): Promise<{ reason?: string; lab?: LabEnv }> {
  if (typeof process.getuid !== 'function' || process.getuid() !== 0) return { reason: 'not running as root (FUSE and losetup need root)' };
  for (const cmd of ['rbd', 'rbd-fuse', 'qemu-storage-daemon', 'losetup']) {
    if (!has(cmd)) return { reason: `${cmd} not installed (ceph-common, rbd-fuse, qemu-system-common + qemu-block-extra)` };
  }
  const lab = await ensureLab(['ceph']);
  if (isSkip(lab)) return { reason: `no lab: ${lab.skip}` };
  if (!lab.vars.CEPH_CONF || !lab.vars.CEPH_CINDER_KEYRING) return { reason: 'lab env.sh has no CEPH_CONF / CEPH_CINDER_KEYRING' };
  return { lab };
}
const { reason, lab } = await skipReason();
if (reason) console.warn(`test/real/connector-rbd: skipped: ${reason}`);

function pidAlive(pid: number): boolean {
  try {
    return !/^\d+ \(.*\) [ZX] /.test(readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return false;
  }
}

describe.skipIf(reason !== undefined)('rbd connector (userspace) against the lab Ceph', () => {
  let dir: string;
  let stateDir: string;
  const image = `pf-conn-rbd-${randomBytes(4).toString('hex')}`;
  const attached: { c: RbdConnector; d: AttachedDevice }[] = [];
  const times: string[] = [];
  const conf = (): string => lab!.vars.CEPH_CONF!;
  const rbd = (...args: string[]): string => execFileSync('rbd', ['-c', conf(), ...args], { encoding: 'utf8', env });

  // As Cinder's attachments API returns it: flat, beside driver_volume_type.
  const info = () =>
    ({
      driver_volume_type: 'rbd',
      name: `volumes/${image}`,
      hosts: ['127.0.0.1'],
      ports: ['6789'],
      cluster_name: 'ceph',
      auth_enabled: true,
      auth_username: 'cinder',
      secret_type: 'ceph',
      volume_id: 'vol-rbd',
      discard: true,
    }) as never;

  const connector = (extra: Record<string, string>) =>
    new RbdConnector({ stateDir, mode: 'userspace', timeoutMs: 90_000, env: { PF_KEYRING: lab!.vars.CEPH_CINDER_KEYRING!, ...extra } });

  const assertGone = async (d: AttachedDevice): Promise<void> => {
    if (d.state.PID) expect(pidAlive(Number(d.state.PID))).toBe(false);
    const loop = d.state.LOOP!.replace('/dev/', '');
    const bf = `/sys/block/${loop}/loop/backing_file`;
    expect(existsSync(bf) && readFileSync(bf, 'utf8').startsWith(d.state.STATE_DIR!)).toBe(false);
    expect((await listMounts()).filter((m) => m.mountPoint.startsWith(stateDir))).toEqual([]);
    expect(existsSync(d.state.STATE_DIR!)).toBe(false);
  };

  beforeAll(async () => {
    dir = await mkdtemp('/var/tmp/pf-connector-rbd-');
    stateDir = join(dir, 'run');
    rbd('create', '--size', '128M', `volumes/${image}`);
  });

  afterAll(async () => {
    if (dir) await umountAllUnder(dir).catch(() => undefined);
    for (const { c, d } of attached.reverse()) await c.detach(d).catch(() => undefined);
    try {
      rbd('--no-progress', 'rm', `volumes/${image}`);
    } catch {
      // best effort
    }
    if (dir) await rm(dir, { recursive: true, force: true });
    if (times.length) console.log(`rbd userspace connector: ${times.join('; ')}`);
  });

  for (const tool of ['qsd', 'rbd-fuse'] as const) {
    it(`attaches through ${tool}: write a filesystem, read it back read-only, nothing left`, async () => {
      const c = connector({ PF_RBD_USERSPACE: tool });
      let t0 = performance.now();
      const d = await c.attach(info(), { readOnly: false });
      const tAttach = performance.now() - t0;
      attached.push({ c, d });
      expect(d.path).toMatch(/^\/dev\/loop\d+$/);
      expect(d.state).toMatchObject({ MODE: 'userspace', TOOL: tool, NAME: `volumes/${image}` });
      expect(execFileSync('blockdev', ['--getsize64', d.path], { encoding: 'utf8', env }).trim()).toBe(String(128 * 1024 * 1024));
      const label = `pf${tool.replace('-', '')}`.slice(0, 12);
      await mkfs(d.path, { type: 'ext4', label });
      const rw = join(dir, `rw-${tool}`);
      await mountReadWrite(d.path, rw);
      await writeFile(join(rw, 'hello.txt'), `via ${tool}\n`);
      await umount(rw);
      t0 = performance.now();
      await c.detach(d);
      const tDetach = performance.now() - t0;
      await assertGone(d);
      times.push(`${tool} attach ${tAttach.toFixed(0)} ms, detach ${tDetach.toFixed(0)} ms`);

      // The data is in the image: export it and look.
      const exported = join(dir, `export-${tool}.img`);
      rbd('--no-progress', 'export', `volumes/${image}`, exported);
      expect(await detectFilesystem(exported)).toMatchObject({ type: 'ext4', label });
      await rm(exported);

      // Read-only attach, mount without journal replay, read back.
      const ro = await c.attach(info(), { readOnly: true });
      attached.push({ c, d: ro });
      expect(readFileSync(`/sys/block/${ro.path.replace('/dev/', '')}/ro`, 'utf8').trim()).toBe('1');
      const where = join(dir, `ro-${tool}`);
      await mountReadOnly(ro.path, where);
      expect(await readFile(join(where, 'hello.txt'), 'utf8')).toBe(`via ${tool}\n`);
      await umount(where);
      await c.detach(ro);
      await assertGone(ro);
      await c.detach(ro); // idempotent
    });
  }

  it('takes keyring content (not a path) without leaking the key', async () => {
    const keyring = readFileSync(lab!.vars.CEPH_CINDER_KEYRING!, 'utf8');
    const key = /key\s*=\s*(\S+)/.exec(keyring)![1]!;
    const c = connector({ PF_KEYRING: keyring, PF_RBD_USERSPACE: 'qsd' });
    const d = await c.attach(info(), { readOnly: true });
    attached.push({ c, d });
    expect(readFileSync(`/proc/${d.state.PID}/cmdline`, 'utf8')).not.toContain(key);
    expect(JSON.stringify(d.state)).not.toContain(key);
    expect(readdirSync(d.state.STATE_DIR!).filter((f) => f === 'secret')).toEqual([]);
    await c.detach(d);
    await assertGone(d);
  });

  it('fails a missing image with DeviceError and leaves nothing behind', async () => {
    const c = connector({ PF_RBD_USERSPACE: 'qsd' });
    await expect(c.attach({ driver_volume_type: 'rbd', data: { name: 'volumes/pf-no-such-image', hosts: ['127.0.0.1'], ports: ['6789'], auth_username: 'cinder' } }, { readOnly: true })).rejects.toThrow(
      /rbd attach failed/,
    );
    expect(existsSync(stateDir) ? readdirSync(stateDir) : []).toEqual([]);
  });
});
