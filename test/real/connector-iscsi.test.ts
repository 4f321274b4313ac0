// iSCSI connector, userspace path, against a real target: the suite starts its own tgtd on
// 127.0.0.1 (non-default portal and control ports, so it never meets the lab's tgtd) with
// file-backed LUNs, one of them behind CHAP. scripts/iscsi-attach exports the LUN with
// qemu-storage-daemon (libiscsi) as a FUSE file and attaches it as a loop device.
// Needs root, tgt, qemu-system-common + qemu-block-extra, fuse3; skips with a printed reason otherwise.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { mkdtemp, readFile, rm, truncate, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { IscsiConnector } from '../../src/connectors/iscsi.js';
import type { AttachedDevice } from '../../src/connectors/connector.js';
import { DeviceError } from '../../src/errors.js';
import { detectFilesystem } from '../../src/util/fs-detect.js';
import { listMounts, mkfs, mountReadOnly, mountReadWrite, umount, umountAllUnder } from '../../src/util/mounts.js';
import { freePort, pidAlive, startTgtd, stopTgtd } from '../helpers/tgtd.js';

const PATH = `/usr/sbin:/sbin:${process.env.PATH ?? '/usr/bin:/bin'}`;
const env = { ...process.env, PATH };
const IQN = 'iqn.2024-01.test.permafrost:lun1';
const IQN_CHAP = 'iqn.2024-01.test.permafrost:chap';
const CHAP_USER = 'pfchap';
const CHAP_PASSWORD = 'Chap-Pass-0123'; // tgtd: 12 to 16 characters

const has = (cmd: string): boolean => {
  try {
    execFileSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore', env });
    return true;
  } catch {
    return false;
  }
};

function skipReason(): string | undefined {
  if (typeof process.getuid !== 'function' || process.getuid() !== 0) return 'not running as root (tgtd, FUSE and losetup need root)';
  if (!has('tgtd') || !has('tgtadm')) return 'tgtd/tgtadm not installed (Debian: tgt)';
  if (!has('qemu-storage-daemon')) return 'qemu-storage-daemon not installed (Debian: qemu-system-common)';
  const libdirs = ['/usr/lib/x86_64-linux-gnu/qemu', '/usr/lib/aarch64-linux-gnu/qemu', '/usr/lib/qemu', '/usr/lib64/qemu'];
  if (!libdirs.some((d) => existsSync(join(d, 'block-iscsi.so')))) return 'qemu block-iscsi module missing (Debian: qemu-block-extra)';
  if (!existsSync('/dev/fuse')) return '/dev/fuse missing';
  if (!has('fusermount3') && !has('fusermount')) return 'fusermount missing (Debian: fuse3)';
  try {
    execFileSync('losetup', ['--find'], { stdio: 'ignore', env });
  } catch {
    return 'no free loop device';
  }
  return undefined;
}
const reason = skipReason();
if (reason) console.warn(`test/real/connector-iscsi: skipped: ${reason}`);

/** Live (non-zombie) qemu-storage-daemon processes whose command line mentions `needle`. */
function qsdProcesses(needle: string): number[] {
  const out: number[] = [];
  for (const p of readdirSync('/proc')) {
    if (!/^\d+$/.test(p)) continue;
    try {
      const cmd = readFileSync(`/proc/${p}/cmdline`, 'utf8').replace(/\0/g, ' ');
      if (cmd.includes('qemu-storage-daemon') && cmd.includes(needle) && pidAlive(Number(p))) out.push(Number(p));
    } catch {
      // gone
    }
  }
  return out;
}

function loopsOf(file: string): string {
  return execFileSync('losetup', ['-j', file], { encoding: 'utf8', env }).trim();
}

describe.skipIf(reason !== undefined)('iscsi connector (userspace) against a real tgtd target', () => {
  let dir: string;
  let port: number;
  let ctl: number;
  let tgtdPid: number | undefined;
  let stateDir: string;
  const attached: { c: IscsiConnector; d: AttachedDevice }[] = [];
  const times: Record<string, number[]> = { attach: [], detach: [] };

  const tgtadm = (...args: string[]): string =>
    execFileSync('tgtadm', ['-C', String(ctl), '--lld', 'iscsi', ...args], { encoding: 'utf8', env });

  const connector = (extra: Record<string, string> = {}) =>
    new IscsiConnector({ stateDir, mode: 'userspace', timeoutMs: 60_000, env: extra });

  const info = (iqn: string, auth?: { user: string; password: string }) => ({
    driver_volume_type: 'iscsi',
    data: {
      target_portal: `127.0.0.1:${port}`,
      target_iqn: iqn,
      target_lun: 1,
      target_discovered: false,
      volume_id: 'vol-iscsi',
      ...(auth ? { auth_method: 'CHAP', auth_username: auth.user, auth_password: auth.password } : {}),
    },
  });

  const attach = async (c: IscsiConnector, i: ReturnType<typeof info>, readOnly: boolean): Promise<AttachedDevice> => {
    const t0 = performance.now();
    const d = await c.attach(i, { readOnly });
    times.attach!.push(performance.now() - t0);
    attached.push({ c, d });
    return d;
  };
  const detach = async (c: IscsiConnector, d: AttachedDevice): Promise<void> => {
    const t0 = performance.now();
    await c.detach(d);
    times.detach!.push(performance.now() - t0);
  };

  /** Nothing of an attachment is left: daemon, loop device, FUSE mount, state directory. */
  const assertGone = async (d: AttachedDevice): Promise<void> => {
    const fuseFile = d.state.FUSE_FILE!;
    const pid = Number(d.state.PID);
    expect(pidAlive(pid)).toBe(false);
    expect(qsdProcesses(fuseFile)).toEqual([]);
    expect(loopsOf(fuseFile)).toBe('');
    expect(existsSync(`/sys/block/${d.state.LOOP!.replace('/dev/', '')}/loop/backing_file`) && readFileSync(`/sys/block/${d.state.LOOP!.replace('/dev/', '')}/loop/backing_file`, 'utf8').includes(fuseFile)).toBe(false);
    expect((await listMounts()).filter((m) => m.mountPoint === fuseFile || m.mountPoint.startsWith(stateDir))).toEqual([]);
    expect(existsSync(d.state.STATE_DIR!)).toBe(false);
  };

  beforeAll(async () => {
    dir = await mkdtemp('/var/tmp/pf-connector-iscsi-');
    stateDir = join(dir, 'run');
    port = await freePort(3261);
    ctl = port; // control socket /var/run/tgtd/socket.<ctl>; the lab's tgtd uses 0
    for (const name of ['lun1.img', 'chap.img']) {
      await writeFile(join(dir, name), '');
      await truncate(join(dir, name), 128 * 1024 * 1024);
    }
    tgtdPid = await startTgtd(port, ctl);
    tgtadm('--op', 'new', '--mode', 'target', '--tid', '1', '-T', IQN);
    tgtadm('--op', 'new', '--mode', 'logicalunit', '--tid', '1', '--lun', '1', '-b', join(dir, 'lun1.img'));
    tgtadm('--op', 'bind', '--mode', 'target', '--tid', '1', '-I', 'ALL');
    tgtadm('--op', 'new', '--mode', 'target', '--tid', '2', '-T', IQN_CHAP);
    tgtadm('--op', 'new', '--mode', 'logicalunit', '--tid', '2', '--lun', '1', '-b', join(dir, 'chap.img'));
    tgtadm('--op', 'bind', '--mode', 'target', '--tid', '2', '-I', 'ALL');
    tgtadm('--op', 'new', '--mode', 'account', '--user', CHAP_USER, '--password', CHAP_PASSWORD);
    tgtadm('--op', 'bind', '--mode', 'account', '--tid', '2', '--user', CHAP_USER);
  });

  afterAll(async () => {
    if (dir) await umountAllUnder(dir).catch(() => undefined);
    for (const { c, d } of attached.reverse()) await c.detach(d).catch(() => undefined);
    if (tgtdPid) await stopTgtd(tgtdPid, ctl, ['1', '2']);
    if (dir) await rm(dir, { recursive: true, force: true });
    const avg = (a: number[]): string => (a.length ? (a.reduce((x, y) => x + y, 0) / a.length).toFixed(0) : '-');
    console.log(`iscsi userspace connector: ${times.attach!.length} attaches, avg ${avg(times.attach!)} ms; ${times.detach!.length} detaches, avg ${avg(times.detach!)} ms`);
  });

  it('attaches read-write, mkfs/write through the loop device, detaches leaving nothing behind', async () => {
    const c = connector();
    const d = await attach(c, info(IQN), false);
    expect(d.path).toMatch(/^\/dev\/loop\d+$/);
    expect(d.state).toMatchObject({ MODE: 'userspace', PORTAL: `127.0.0.1:${port}`, IQN, LUN: '1', LOOP: d.path });
    expect(pidAlive(Number(d.state.PID))).toBe(true);
    expect(loopsOf(d.state.FUSE_FILE!)).toContain(d.path);
    expect(readFileSync(`/sys/block/${d.path.replace('/dev/', '')}/size`, 'utf8').trim()).toBe(String((128 * 1024 * 1024) / 512));

    await mkfs(d.path, { type: 'ext4', label: 'iscsilun' });
    const rw = join(dir, 'mnt-rw');
    await mountReadWrite(d.path, rw);
    const payload = Buffer.alloc(3 * 1024 * 1024, 7);
    await writeFile(join(rw, 'data.bin'), payload);
    await writeFile(join(rw, 'hello.txt'), 'over iSCSI\n');
    await umount(rw);
    await detach(c, d);
    await assertGone(d);
    // The data landed on the target's backing file.
    const fs = await detectFilesystem(join(dir, 'lun1.img'));
    expect(fs).toMatchObject({ type: 'ext4', label: 'iscsilun' });

    // Read-only: the loop device is read-only; mount without journal replay and read it back.
    const ro = await attach(c, info(IQN), true);
    expect(readFileSync(`/sys/block/${ro.path.replace('/dev/', '')}/ro`, 'utf8').trim()).toBe('1');
    // Read-only attachments read the FUSE export with O_DIRECT; the bytes are the LUN's.
    expect(readFileSync(`/sys/block/${ro.path.replace('/dev/', '')}/loop/dio`, 'utf8').trim()).toBe('1');
    const head = (file: string): Buffer => execFileSync('head', ['-c', String(8 * 1024 * 1024), file], { env, maxBuffer: 16 * 1024 * 1024 });
    expect(head(ro.path).equals(head(join(dir, 'lun1.img')))).toBe(true);
    const where = join(dir, 'mnt-ro');
    expect((await mountReadOnly(ro.path, where)).options).toBe('ro,noload');
    expect(await readFile(join(where, 'hello.txt'), 'utf8')).toBe('over iSCSI\n');
    expect((await readFile(join(where, 'data.bin'))).equals(payload)).toBe(true);
    await umount(where);
    await detach(c, ro);
    await assertGone(ro);

    // Detach again: idempotent.
    await c.detach(ro);
  });

  it('logs in with CHAP without putting the password on a command line', async () => {
    const c = connector();
    const d = await attach(c, info(IQN_CHAP, { user: CHAP_USER, password: CHAP_PASSWORD }), true);
    const pid = Number(d.state.PID);
    const cmdline = readFileSync(`/proc/${pid}/cmdline`, 'utf8');
    expect(cmdline).toContain(`user=${CHAP_USER}`);
    expect(cmdline).not.toContain(CHAP_PASSWORD);
    // The secret file is removed once the daemon has read it; nothing in the state has it.
    expect(existsSync(join(d.state.STATE_DIR!, 'secret'))).toBe(false);
    expect(JSON.stringify(d.state)).not.toContain(CHAP_PASSWORD);
    expect(execFileSync('blockdev', ['--getsize64', d.path], { encoding: 'utf8', env }).trim()).toBe(String(128 * 1024 * 1024));
    await detach(c, d);
    await assertGone(d);
  });

  it('fails a wrong CHAP password with a redacted DeviceError and leaves nothing behind', async () => {
    const c = connector();
    const wrong = 'Wrong-Pass-9876';
    const err = await c.attach(info(IQN_CHAP, { user: CHAP_USER, password: wrong }), { readOnly: true }).then(
      () => undefined,
      (e: unknown) => e as Error,
    );
    expect(err).toBeInstanceOf(DeviceError);
    expect(err!.message).toMatch(/Authentication failure|Failed to log in/i);
    expect(err!.message).not.toContain(wrong);
    expect(qsdProcesses(stateDir)).toEqual([]);
    expect((await listMounts()).filter((m) => m.mountPoint.startsWith(stateDir))).toEqual([]);
    expect(existsSync(stateDir) ? readdirSync(stateDir) : []).toEqual([]);
  });

  it('fails an unknown target or a closed portal cleanly', async () => {
    const c = connector();
    await expect(c.attach(info('iqn.2024-01.test.permafrost:nope'), { readOnly: true })).rejects.toThrow(DeviceError);
    const closed = await freePort(port + 100);
    await expect(
      c.attach({ driver_volume_type: 'iscsi', data: { target_portal: `127.0.0.1:${closed}`, target_iqn: IQN, target_lun: 1 } }, { readOnly: true }),
    ).rejects.toThrow(/qemu-storage-daemon failed/);
    expect(qsdProcesses(stateDir)).toEqual([]);
    expect(existsSync(stateDir) ? readdirSync(stateDir) : []).toEqual([]);
  });

  it('tries the next portal of a multipath connection_info', async () => {
    const c = connector();
    const closed = await freePort(port + 200);
    const d = await attach(
      c,
      {
        driver_volume_type: 'iscsi',
        data: {
          target_portal: `127.0.0.1:${closed}`,
          target_iqn: IQN,
          target_lun: 1,
          target_portals: [`127.0.0.1:${closed}`, `127.0.0.1:${port}`],
          target_iqns: [IQN, IQN],
          target_luns: [1, 1],
        },
      } as never,
      true,
    );
    expect(d.state.PORTAL).toBe(`127.0.0.1:${port}`);
    await detach(c, d);
    await assertGone(d);
  });

  it('auto mode picks userspace when the iscsi_tcp module is unavailable', async (ctx) => {
    if (existsSync('/sys/module/iscsi_tcp')) {
      console.warn('connector-iscsi: auto-mode check skipped: iscsi_tcp is loaded here (kernel path would be used)');
      ctx.skip();
    }
    const c = new IscsiConnector({ stateDir, mode: 'auto' });
    const d = await attach(c, info(IQN), true);
    expect(d.state.MODE).toBe('userspace');
    await detach(c, d);
    await assertGone(d);
  });
});
