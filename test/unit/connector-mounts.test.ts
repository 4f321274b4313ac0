// Parsing and command building behind the device plane's mount helpers (src/util/mounts.ts,
// src/util/fs-detect.ts): /proc/self/mountinfo with escapes, blkid export output, read-only
// mount options per filesystem, mkfs command lines. No root, no devices.
import { describe, expect, it } from 'vitest';
import { isMountable, parseBlkidExport } from '../../src/util/fs-detect.js';
import { listMounts, mkfsCommand, parseMountInfo, readOnlyMountOptions } from '../../src/util/mounts.js';
import { UsageError } from '../../src/errors.js';

describe('mount helpers', () => {
  it('parses mountinfo, including escaped spaces and optional fields', () => {
    const text = [
      '22 1 253:0 / / rw,relatime shared:1 - ext4 /dev/vda rw,discard',
      '98 22 7:3 / /var/lib/permafrost/mnt/job\\0401/vol rw,relatime shared:50 master:2 - xfs /dev/loop3 ro,norecovery,nouuid',
      '99 98 0:45 / /var/lib/permafrost/run/iscsi-x/export rw,nosuid,nodev,relatime - fuse /dev/fuse rw,user_id=0,group_id=0',
      '',
    ].join('\n');
    const m = parseMountInfo(text);
    expect(m).toHaveLength(3);
    expect(m[1]).toEqual({
      id: 98,
      parentId: 22,
      majorMinor: '7:3',
      root: '/',
      mountPoint: '/var/lib/permafrost/mnt/job 1/vol',
      options: 'rw,relatime',
      fsType: 'xfs',
      source: '/dev/loop3',
      superOptions: 'ro,norecovery,nouuid',
    });
    expect(m[2]!.fsType).toBe('fuse');
  });

  it('lists the mounts of this process, and none under an unused root', async () => {
    expect((await listMounts()).some((e) => e.mountPoint === '/')).toBe(true);
    expect(await listMounts('/nonexistent/permafrost-root')).toEqual([]);
  });

  it('never replays a journal when mounting read-only', () => {
    expect(readOnlyMountOptions('ext4')).toEqual(['ro,noload']);
    expect(readOnlyMountOptions('xfs')).toEqual(['ro,norecovery,nouuid']);
    expect(readOnlyMountOptions('btrfs')[0]).toBe('ro,rescue=nologreplay');
    expect(readOnlyMountOptions('ext2')).toEqual(['ro']);
    expect(readOnlyMountOptions('vfat')).toEqual(['ro']);
    expect(isMountable('ext4')).toBe(true);
    expect(isMountable('swap')).toBe(false);
    expect(isMountable(undefined)).toBe(false);
  });

  it('builds mkfs command lines with label and UUID', () => {
    const uuid = '3f1e2a44-6a0b-4c8e-9d55-0a1b2c3d4e5f';
    expect(mkfsCommand('/dev/loop1', { type: 'ext4', label: 'data', uuid })).toEqual(['mkfs.ext4', ['-F', '-q', '-L', 'data', '-U', uuid, '/dev/loop1']]);
    expect(mkfsCommand('/dev/loop1', { type: 'xfs', label: 'data', uuid })).toEqual(['mkfs.xfs', ['-f', '-q', '-L', 'data', '-m', `uuid=${uuid}`, '/dev/loop1']]);
    expect(mkfsCommand('/dev/loop1', { type: 'btrfs', uuid })).toEqual(['mkfs.btrfs', ['-f', '-q', '-U', uuid, '/dev/loop1']]);
    expect(mkfsCommand('/dev/loop1', { type: 'vfat', label: 'EFI', uuid: 'ABCD-1234' })).toEqual(['mkfs.vfat', ['-n', 'EFI', '-i', 'ABCD1234', '/dev/loop1']]);
    expect(() => mkfsCommand('/dev/loop1', { type: 'zfs' })).toThrow(UsageError);
  });

  it('parses blkid export output', () => {
    expect(parseBlkidExport('DEVNAME=/dev/loop0\nUUID=abc\nLABEL=a=b\nTYPE=ext4\n')).toEqual({ DEVNAME: '/dev/loop0', UUID: 'abc', LABEL: 'a=b', TYPE: 'ext4' });
  });
});
