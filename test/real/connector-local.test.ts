// Local connector on real loop devices: images attached with scripts/local-attach, probed with
// blkid, mounted read-only without journal replay (ext4 ro,noload; xfs ro,norecovery,nouuid;
// btrfs), read back, unmounted, detached. Needs root, losetup and mkfs.ext4/xfs; skips with a
// printed reason otherwise.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFileSync, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { mkdtemp, readFile, rm, truncate, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { LocalConnector } from '../../src/connectors/local.js';
import { detachOrphans } from '../../src/connectors/script.js';
import type { AttachedDevice } from '../../src/connectors/connector.js';
import { detectFilesystem, listPartitions } from '../../src/util/fs-detect.js';
import { listMounts, mkfs, mountReadOnly, mountReadWrite, umount, umountAllUnder } from '../../src/util/mounts.js';

const PATH = `/usr/sbin:/sbin:${process.env.PATH ?? '/usr/bin:/bin'}`;
const has = (cmd: string): boolean => {
  try {
    execFileSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore', env: { ...process.env, PATH } });
    return true;
  } catch {
    return false;
  }
};

function skipReason(): string | undefined {
  if (typeof process.getuid !== 'function' || process.getuid() !== 0) return 'not running as root (losetup and mount need root)';
  for (const cmd of ['losetup', 'blkid', 'lsblk', 'mkfs.ext4', 'partx']) {
    if (!has(cmd)) return `${cmd} not installed (util-linux, e2fsprogs)`;
  }
  try {
    execFileSync('losetup', ['--find'], { stdio: 'ignore' });
  } catch {
    return 'no free loop device (losetup --find failed)';
  }
  return undefined;
}
const reason = skipReason();
if (reason) console.warn(`test/real/connector-local: skipped: ${reason}`);

const sha = (file: string): string => createHash('sha256').update(readFileSync(file)).digest('hex');
const loopName = (dev: string): string => dev.replace('/dev/', '');
const backing = (dev: string): string => {
  try {
    return readFileSync(`/sys/block/${loopName(dev)}/loop/backing_file`, 'utf8').trim();
  } catch {
    return '';
  }
};

describe.skipIf(reason !== undefined)('local connector on loop devices', () => {
  let dir: string;
  let mnt: string;
  let c: LocalConnector;
  const attached: AttachedDevice[] = [];
  const times: Record<string, number[]> = { attach: [], detach: [] };

  const attach = async (file: string, readOnly: boolean): Promise<AttachedDevice> => {
    const t0 = performance.now();
    const d = await c.attach({ driver_volume_type: 'local', data: { device_path: file, volume_id: 'v1' } }, { readOnly });
    times.attach!.push(performance.now() - t0);
    attached.push(d);
    return d;
  };
  const detach = async (d: AttachedDevice): Promise<void> => {
    const t0 = performance.now();
    await c.detach(d);
    times.detach!.push(performance.now() - t0);
  };

  beforeAll(async () => {
    dir = await mkdtemp('/var/tmp/pf-connector-local-');
    mnt = join(dir, 'mnt');
    c = new LocalConnector({ stateDir: join(dir, 'run') });
  });

  afterAll(async () => {
    if (!dir) return;
    await umountAllUnder(dir).catch(() => undefined);
    for (const d of attached) await c.detach(d).catch(() => undefined);
    await rm(dir, { recursive: true, force: true });
    const avg = (a: number[]): string => (a.length ? (a.reduce((x, y) => x + y, 0) / a.length).toFixed(0) : '-');
    console.log(`local connector: ${times.attach!.length} attaches, avg ${avg(times.attach!)} ms; ${times.detach!.length} detaches, avg ${avg(times.detach!)} ms`);
  });

  for (const fsType of ['ext4', 'xfs', 'btrfs'] as const) {
    it(`writes ${fsType} read-write, then mounts it read-only without touching the image`, async (ctx) => {
      const tool = `mkfs.${fsType}`;
      if (!has(tool)) {
        console.warn(`connector-local: ${fsType} part skipped: ${tool} not installed (${fsType === 'xfs' ? 'xfsprogs' : 'btrfs-progs'})`);
        ctx.skip();
      }
      const img = join(dir, `${fsType}.img`);
      await writeFile(img, '');
      await truncate(img, 320 * 1024 * 1024);

      // Read-write: mkfs, mount, write a file.
      const rw = await attach(img, false);
      expect(rw.path).toMatch(/^\/dev\/loop\d+$/);
      expect(rw.state.BACKING).toBe(img);
      expect(readFileSync(`/sys/block/${loopName(rw.path)}/ro`, 'utf8').trim()).toBe('0');
      await mkfs(rw.path, { type: fsType, label: `pf${fsType}`, uuid: '3f1e2a44-6a0b-4c8e-9d55-0a1b2c3d4e5f' });
      await mountReadWrite(rw.path, join(mnt, `${fsType}-rw`));
      await writeFile(join(mnt, `${fsType}-rw`, 'hello.txt'), `hello from ${fsType}\n`);
      await umount(join(mnt, `${fsType}-rw`));
      await detach(rw);
      expect(backing(rw.path)).not.toBe(img);

      // Read-only: blkid, mount without journal/log replay, read, umount, detach.
      const before = sha(img);
      const ro = await attach(img, true);
      expect(readFileSync(`/sys/block/${loopName(ro.path)}/ro`, 'utf8').trim()).toBe('1');
      const fs = await detectFilesystem(ro.path);
      expect(fs).toMatchObject({ type: fsType, label: `pf${fsType}`, uuid: '3f1e2a44-6a0b-4c8e-9d55-0a1b2c3d4e5f' });
      const where = join(mnt, `${fsType}-ro`);
      const m = await mountReadOnly(ro.path, where);
      expect(m.fsType).toBe(fsType);
      if (fsType === 'ext4') expect(m.options).toBe('ro,noload');
      if (fsType === 'xfs') expect(m.options).toBe('ro,norecovery,nouuid');
      const ours = await listMounts(dir);
      expect(ours.map((e) => e.mountPoint)).toEqual([where]);
      expect(ours[0]!.options.split(',')).toContain('ro');
      expect(await readFile(join(where, 'hello.txt'), 'utf8')).toBe(`hello from ${fsType}\n`);
      await umount(where);
      expect(await listMounts(dir)).toEqual([]);
      await detach(ro);
      expect(backing(ro.path)).not.toBe(img);
      expect(sha(img)).toBe(before);

      // Detach again: nothing left, still success.
      await c.detach(ro);
    });
  }

  it('exposes both partitions of a partitioned image as loopNp1 and loopNp2', async (ctx) => {
    if (!has('sfdisk') || !has('mkfs.xfs')) {
      console.warn('connector-local: partition part skipped: sfdisk (fdisk) or mkfs.xfs (xfsprogs) not installed');
      ctx.skip();
    }
    const img = join(dir, 'parted.img');
    await writeFile(img, '');
    await truncate(img, 400 * 1024 * 1024);
    execFileSync('sfdisk', ['-q', img], { input: 'label: gpt\nsize=40M, type=linux\ntype=linux\n', env: { ...process.env, PATH } });
    const d = await attach(img, false);
    const parts = await listPartitions(d.path);
    expect(parts.map((p) => p.path)).toEqual([`${d.path}p1`, `${d.path}p2`]);
    expect(parts.map((p) => p.number)).toEqual([1, 2]);
    expect(parts[0]!.size).toBe(40 * 1024 * 1024);
    expect((await detectFilesystem(d.path))?.ptType).toBe('gpt');
    await mkfs(`${d.path}p1`, { type: 'ext4', label: 'one' });
    await mkfs(`${d.path}p2`, { type: 'xfs', label: 'two' });
    const again = await listPartitions(d.path);
    expect(again.map((p) => [p.fsType, p.label])).toEqual([
      ['ext4', 'one'],
      ['xfs', 'two'],
    ]);
    await mountReadOnly(`${d.path}p2`, join(mnt, 'p2'));
    await umount(join(mnt, 'p2'));
    await detach(d);
    expect(existsSync(`/sys/block/${loopName(d.path)}/${loopName(d.path)}p1`)).toBe(false);
    expect(backing(d.path)).not.toBe(img);
  });

  it('detaches what a crashed agent left attached (orphan state dirs)', async () => {
    const img = join(dir, 'orphan.img');
    await writeFile(img, '');
    await truncate(img, 16 * 1024 * 1024);
    const runDir = join(dir, 'orphan-run');
    const crashed = new LocalConnector({ stateDir: runDir });
    const d = await crashed.attach({ driver_volume_type: 'local', data: { device_path: img } }, { readOnly: true });
    expect(backing(d.path)).toBe(img);
    // The owner "crashed": a pid that has exited.
    const ownerFile = join(d.state.STATE_DIR!, 'owner.json');
    const owner = JSON.parse(await readFile(ownerFile, 'utf8')) as { pid: number };
    owner.pid = spawnSync('true').pid!;
    await writeFile(ownerFile, JSON.stringify(owner));
    const r = await detachOrphans({ stateDir: runDir });
    expect(r).toEqual({ detached: [d.state.STATE_DIR], failed: [] });
    expect(backing(d.path)).not.toBe(img);
    expect(existsSync(d.state.STATE_DIR!)).toBe(false);
  });

  it('refuses a missing image and leaves nothing behind', async () => {
    await expect(attach(join(dir, 'missing.img'), true)).rejects.toThrow(/does not exist/);
    expect(execFileSync('losetup', ['-j', join(dir, 'missing.img')], { encoding: 'utf8' }).trim()).toBe('');
  });

  it('fails a detach of a loop device that is still mounted, and succeeds once unmounted', async () => {
    const img = join(dir, 'busy.img');
    await writeFile(img, '');
    await truncate(img, 64 * 1024 * 1024);
    execFileSync('mkfs.ext4', ['-q', img], { env: { ...process.env, PATH } });
    const d = await attach(img, true);
    await mountReadOnly(d.path, join(mnt, 'busy'));
    // The kernel keeps a mounted loop device (autoclear); detach reports it instead of lying.
    const impatient = new LocalConnector({ stateDir: join(dir, 'run'), env: { PF_DETACH_WAIT: '1' } });
    await expect(impatient.detach(d)).rejects.toThrow(/still in use/);
    await umount(join(mnt, 'busy'));
    // Autoclear released it on unmount; detach is still fine.
    await detach(d);
    expect(backing(d.path)).not.toBe(img);
  }, 60_000);
});
