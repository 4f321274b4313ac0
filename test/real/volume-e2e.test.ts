// Volume backups end to end, through the CLI, with the local provider (the embedded default):
// `volume create` → fill through a loop device → `backup --volume` (file engine, hot and cold) →
// change → incremental → `restore --to-volume new|existing` → the restored volume compared with
// the source: every file (content, modes, owners, times, hardlinks, symlinks, xattrs, sparseness),
// the filesystem (type, label, UUID) and the volume record (size, metadata, bootable). Also the
// block engine (device bytes), a partitioned volume (block fallback, identical table), the
// refusals (--cold on an in-use volume, an in-use restore target) and --recreate-vol-on-error,
// --meta-override. After every test: no loop device, mount, temporary volume or snapshot,
// connector state, open catalog resource or helper process of ours is left.
//
// Needs root (loop devices, mkfs, mount) and e2fsprogs, xfsprogs, fdisk (sfdisk), attr (setfattr);
// skips with a printed reason otherwise. Run alone with:
//   PERMAFROST_TEST_LAB=off npx vitest run test/real/volume-e2e
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { join } from 'node:path';
import { LocalConnector } from '../../src/connectors/local.js';
import type { AttachedDevice } from '../../src/connectors/connector.js';
import {
  CLEAN,
  GiB,
  type VolumeLab as Lab,
  VolumeLab,
  attachImage,
  blkid,
  describeTree,
  detachLoop,
  diffTrees,
  fillTree,
  mutateTree,
  partitionTable,
  qsdProcesses,
  rootSkipReason,
  sh,
  sha256File,
  withMounted,
} from '../helpers/volumes.js';

const reason = rootSkipReason(['losetup', 'blkid', 'mkfs.ext4', 'mkfs.xfs', 'sfdisk', 'partx', 'setfattr', 'getfattr', 'fsfreeze']);
if (reason) console.warn(`test/real/volume-e2e: skipped: ${reason}`);

const node = { ip: '127.0.0.1', host: 'pf-e2e-node', multipath: false, platform: 'x86_64', os_type: 'linux2' };
const figures: string[] = [];
const secs = (ms: number) => `${(ms / 1000).toFixed(1)} s`;

describe.skipIf(reason !== undefined)('volume backups end to end (local provider, CLI)', () => {
  let lab: Lab;
  let mnt: string;
  const qsdBefore = new Set<string>();

  beforeAll(async () => {
    lab = await VolumeLab.create('e2e');
    mnt = join(lab.dir, 'mnt');
    for (const p of qsdProcesses()) qsdBefore.add(p);
  });

  afterAll(async () => {
    if (figures.length) console.log(`volume-e2e figures:\n  ${figures.join('\n  ')}`);
    await lab?.close();
  });

  afterEach(async () => {
    // Nothing of ours left, whatever the test did (then scrubbed, so that one failure does not cascade).
    const left = await lab.leftovers();
    const open = lab.catalogOpen();
    const qsd = qsdProcesses().filter((p) => !qsdBefore.has(p) && p.includes(lab.dir));
    const volumes = await lab.volumeNames();
    await lab.scrub();
    expect(left).toEqual(CLEAN);
    expect(open).toEqual({ resources: [], running: [] });
    expect(qsd).toEqual([]);
    expect(volumes).toEqual([]);
  });

  /** Describe a volume's tree through a read-only mount. */
  const treeOf = (img: string, partition?: number) => withMounted(img, mnt, (root) => describeTree(root), { readOnly: true, partition });

  /** Delete volumes (and their snapshots) at the end of a test, after checking they are all the pool holds. */
  const finish = async (names: string[]) => {
    expect(await lab.volumeNames()).toEqual([...names].sort());
    for (const n of names) await lab.ok(['volume', 'delete', n, '--with-snapshots']);
  };

  it.each(['ext4', 'xfs'])('%s: full and incremental file backups, restore to a new and to an existing volume — identical tree, filesystem and record', async (fs) => {
    const name = `app-${fs}`;
    const vol = await lab.createVolume(name, '1G', fs, ['--label', `data-${fs}`]);
    expect(vol).toMatchObject({ name, size: 1, sizeBytes: GiB, status: 'available' });
    await lab.provider().updateMetadata(vol.id, { app: 'db', tier: 'gold' });
    await lab.provider().setBootable(vol.id, true);
    const img = lab.image(vol.id);
    const fsBefore = blkid(img);
    expect(fsBefore).toMatchObject({ TYPE: fs, LABEL: `data-${fs}` });

    await withMounted(img, mnt, (root) => fillTree(root));
    const tree1 = await treeOf(img);
    expect(tree1.get('srv/data/sparse.img')!.allocated).toBeLessThan(4 * 1024 * 1024);

    const b1 = await lab.ok(['backup', '--volume', name]);
    expect(b1).toMatchObject({ engine: 'file', parent: null, partial: false, name: vol.id });
    expect(b1.stats.errors).toBe(0);
    figures.push(`${fs} file backup (full, ${Math.round(b1.stats.bytesTotal / 2 ** 20)} MiB of files on 1 GiB): ${secs(b1.durationMs)}`);

    await withMounted(img, mnt, (root) => mutateTree(root));
    const tree2 = await treeOf(img);
    expect(diffTrees(tree1, tree2).length).toBeGreaterThan(5);

    const b2 = await lab.ok(['backup', '--volume', name]);
    expect(b2).toMatchObject({ engine: 'file', parent: b1.id, partial: false });
    expect(b2.stats.filesUnchanged).toBeGreaterThan(30);
    expect(b2.stats.filesRead).toBeLessThan(10);
    expect(b2.stats.bytesRead).toBeLessThan(1024 * 1024);
    figures.push(`${fs} file backup (incremental): ${secs(b2.durationMs)}, ${b2.stats.filesRead} files read, ${b2.stats.filesUnchanged} unchanged`);

    // Restore the incremental into a new volume built from the saved record.
    const t0 = performance.now();
    const r = await lab.ok(['restore', b2.id, '--to-volume', 'new', '--name', `${name}-restored`]);
    figures.push(`${fs} file restore to a new volume: ${secs(performance.now() - t0)} (CLI included)`);
    expect(r).toMatchObject({ backupId: b2.id, created: true, engine: 'file' });
    // The record as it is after the restore: detached, with the saved metadata and flags.
    expect(r.volume).toMatchObject({ name: `${name}-restored`, status: 'available', attachments: [] });
    const rv = await lab.volume(r.volume.id);
    expect(rv).toMatchObject({ size: vol.size, sizeBytes: vol.sizeBytes, bootable: true, status: 'available', volumeType: vol.volumeType, availabilityZone: vol.availabilityZone });
    expect(rv.metadata).toEqual({ app: 'db', tier: 'gold', 'permafrost:restored-from': b2.id });
    const rimg = lab.image(rv.id);
    const fsAfter = blkid(rimg);
    expect({ TYPE: fsAfter.TYPE, LABEL: fsAfter.LABEL, UUID: fsAfter.UUID }).toEqual({ TYPE: fs, LABEL: `data-${fs}`, UUID: fsBefore.UUID });
    expect(diffTrees(tree2, await treeOf(rimg))).toEqual([]);

    // The full backup into that (now existing, available) volume: it goes back to the first state.
    const r1 = await lab.ok(['restore', b1.id, '--to-volume', `${name}-restored`]);
    expect(r1).toMatchObject({ created: false, volume: { id: rv.id, status: 'available' } });
    expect(diffTrees(tree1, await treeOf(rimg))).toEqual([]);
    expect(blkid(rimg).UUID).toBe(fsBefore.UUID);
    // Without --meta-override an existing volume keeps its own metadata.
    expect((await lab.volume(rv.id)).metadata).toEqual({ app: 'db', tier: 'gold', 'permafrost:restored-from': b2.id });

    await finish([name, `${name}-restored`]);
  }, 300_000);

  it('block engine: backup and incremental of the raw device, restore gives identical bytes (file vs block figures)', async () => {
    const vol = await lab.createVolume('blk', '1G', 'ext4');
    const img = lab.image(vol.id);
    await withMounted(img, mnt, (root) => fillTree(root, { randomMiB: 256 }));

    // The file engine on the same volume, for the figures.
    const f = await lab.ok(['backup', '--volume', 'blk', '--engine', 'file']);
    let t0 = performance.now();
    const fr = await lab.ok(['restore', f.id, '--to-volume', 'new', '--name', 'blk-file']);
    const fileRestoreMs = performance.now() - t0;

    const b1 = await lab.ok(['backup', '--volume', 'blk', '--engine', 'block']);
    expect(b1).toMatchObject({ engine: 'block', parent: null, partial: false });
    expect(b1.stats.bytesTotal).toBe(GiB);
    t0 = performance.now();
    const r = await lab.ok(['restore', b1.id, '--to-volume', 'new', '--name', 'blk-restored']);
    const blockRestoreMs = performance.now() - t0;
    expect(r).toMatchObject({ created: true, engine: 'block', volume: { status: 'available', attachments: [] } });
    const rimg = lab.image(r.volume.id);
    expect(sha256File(rimg)).toBe(sha256File(img));
    figures.push(
      `1 GiB ext4 volume, ${Math.round(f.stats.bytesTotal / 2 ** 20)} MiB of files: file engine backup ${secs(f.durationMs)}, restore ${secs(fileRestoreMs)}; ` +
        `block engine backup ${secs(b1.durationMs)}, restore ${secs(blockRestoreMs)} (restores include ~2 s of CLI start)`,
    );

    // An incremental block backup re-stores only the changed blocks; restored over the existing volume.
    await withMounted(img, mnt, (root) => mutateTree(root));
    const b2 = await lab.ok(['backup', '--volume', 'blk', '--engine', 'block']);
    expect(b2).toMatchObject({ engine: 'block', parent: b1.id });
    expect(b2.stats.bytesNew).toBeLessThan(64 * 1024 * 1024);
    figures.push(`block incremental after a small change: ${secs(b2.durationMs)}, ${(b2.stats.bytesNew / 2 ** 20).toFixed(1)} MiB new`);
    const r2 = await lab.ok(['restore', b2.id, '--to-volume', 'blk-restored']);
    expect(r2).toMatchObject({ created: false, volume: { id: r.volume.id } });
    expect(sha256File(rimg)).toBe(sha256File(img));
    // The file restore of the first state, for completeness.
    expect(diffTrees(await treeOf(lab.image(fr.volume.id)), await treeOf(rimg)).length).toBeGreaterThan(0);

    await finish(['blk', 'blk-file', 'blk-restored']);
  }, 300_000);

  it('a partitioned volume (ext4 + xfs partitions) falls back to the block engine; restore gives an identical table and contents', async () => {
    const vol = await lab.createVolume('parted', '1G', 'none');
    const img = lab.image(vol.id);
    sh('sfdisk', ['-q', img], { input: 'label: gpt\n,350M,L,\n,,L,\n' });
    const dev = attachImage(img);
    try {
      sh('mkfs.ext4', ['-q', '-L', 'part1', `${dev}p1`]);
      sh('mkfs.xfs', ['-q', '-f', '-L', 'part2', `${dev}p2`]);
    } finally {
      detachLoop(dev);
    }
    await withMounted(img, mnt, (root) => fillTree(root, { randomMiB: 8 }), { partition: 1 });
    await withMounted(img, mnt, (root) => fillTree(root, { randomMiB: 8 }), { partition: 2 });
    const t1 = await treeOf(img, 1);
    const t2 = await treeOf(img, 2);

    // The file engine cannot take it...
    const refused = await lab.cli(['backup', '--volume', 'parted', '--engine', 'file']);
    expect(refused.code).toBe(2);
    expect(refused.stderr).toMatch(/partition table \(gpt\).*--engine block/);
    expect(await lab.leftovers()).toEqual(CLEAN);
    // ... auto falls back to the block engine.
    const b = await lab.cli(['backup', '--volume', 'parted'], { json: true });
    expect(b.code).toBe(0);
    expect(b.stderr).toMatch(/partition table \(gpt\), using the block engine/);
    expect(b.json).toMatchObject({ engine: 'block', partial: false });

    const r = await lab.ok(['restore', b.json.id, '--to-volume', 'new', '--name', 'parted-restored']);
    const rimg = lab.image(r.volume.id);
    expect(partitionTable(rimg)).toBe(partitionTable(img));
    expect(sha256File(rimg)).toBe(sha256File(img));
    expect(diffTrees(t1, await treeOf(rimg, 1))).toEqual([]);
    expect(diffTrees(t2, await treeOf(rimg, 2))).toEqual([]);
    expect(probePartition(rimg, 1)).toMatchObject({ TYPE: 'ext4', LABEL: 'part1' });
    expect(probePartition(rimg, 2)).toMatchObject({ TYPE: 'xfs', LABEL: 'part2' });

    await finish(['parted', 'parted-restored']);
  }, 300_000);

  it('swap and a damaged ext4 (superblock found, mount refused) are backed up as blocks; --engine file refuses them', async () => {
    const sw = await lab.createVolume('swap', '64M', 'none');
    sh('mkswap', ['-q', lab.image(sw.id)]);
    const br = await lab.createVolume('damaged', '64M', 'ext4');
    // Zero the group descriptors (1 KiB blocks on 64 MiB: block 2 on): blkid still sees ext4, mount fails.
    sh('dd', ['if=/dev/zero', `of=${lab.image(br.id)}`, 'bs=1024', 'seek=2', 'count=8', 'conv=notrunc', 'status=none']);
    expect(blkid(lab.image(br.id)).TYPE).toBe('ext4');

    const s = await lab.cli(['backup', '--volume', 'swap'], { json: true });
    expect(s.code, s.stderr).toBe(0);
    expect(s.stderr).toMatch(/swap, not mountable, using the block engine/);
    expect(s.json).toMatchObject({ engine: 'block' });
    const d = await lab.cli(['backup', '--volume', 'damaged'], { json: true });
    expect(d.code, d.stderr).toBe(0);
    expect(d.stderr).toMatch(/cannot mount [\s\S]*; using the block engine/);
    expect(d.json).toMatchObject({ engine: 'block' });
    expect(await lab.leftovers()).toEqual(CLEAN);

    const fs = await lab.cli(['backup', '--volume', 'swap', '--engine', 'file']);
    expect(fs.code).toBe(2);
    expect(fs.stderr).toMatch(/has swap, not a filesystem this node mounts; use --engine block/);
    const fd = await lab.cli(['backup', '--volume', 'damaged', '--engine', 'file']);
    expect(fd.code).toBe(18);
    expect(fd.stderr).toMatch(/cannot mount/);
    // The block backup restores the damaged image bit for bit.
    const r = await lab.ok(['restore', d.json.id, '--to-volume', 'new', '--name', 'damaged-restored']);
    expect(r.volume.sizeBytes).toBe(br.sizeBytes);
    expect(sha256File(lab.image(r.volume.id))).toBe(sha256File(lab.image(br.id)));
    await finish(['swap', 'damaged', 'damaged-restored']);
  }, 300_000);

  it('an in-use volume: --cold is refused (exit 2, nothing created), a hot backup of it works; restore refuses an in-use target, --recreate-vol-on-error restores into a clone, --meta-override', async () => {
    const vol = await lab.createVolume('live', '512M', 'ext4');
    const p = lab.provider();
    await p.updateMetadata(vol.id, { role: 'live' });
    // Attached read-write to this node the way a server would use it: provider + local connector.
    const att = await p.attach(vol.id, node);
    const conn = new LocalConnector({ stateDir: join(lab.dir, 'server-run') });
    let dev: AttachedDevice | undefined = await conn.attach(att.connectionInfo, { readOnly: false });
    let liveTree;
    let hot;
    const serverMnt = join(lab.dir, 'server-mnt');
    try {
      sh('mkdir', ['-p', serverMnt]);
      sh('mount', [dev.path, serverMnt]);
      try {
        fillTree(serverMnt, { randomMiB: 4 });
        // What a guest agent does before a snapshot: flush and checkpoint the journal.
        sh('fsfreeze', ['-f', serverMnt]);
        sh('fsfreeze', ['-u', serverMnt]);
        liveTree = describeTree(serverMnt);
        expect((await lab.volume(vol.id)).status).toBe('in-use');

        const cold = await lab.cli(['backup', '--volume', 'live', '--cold']);
        expect(cold.code).toBe(2);
        expect(cold.stderr).toMatch(/volume live is in use: a cold backup needs it detached/);
        expect((await lab.leftovers()).snapshots).toEqual([]);
        expect((await lab.leftovers()).temporaryVolumes).toEqual([]);
        expect((await lab.ok(['list', '--volume-id', vol.id])).backups).toEqual([]);

        hot = await lab.ok(['backup', '--volume', 'live']);
        expect(hot).toMatchObject({ engine: 'file', partial: false });
        expect((await lab.volume(vol.id)).status).toBe('in-use'); // untouched
      } finally {
        sh('umount', [serverMnt]);
      }
    } finally {
      await conn.detach(dev);
      dev = undefined;
      await p.detach(vol.id, att.id);
    }
    // The hot backup holds what the mounted filesystem held.
    const dir = join(lab.dir, 'restored-dir');
    await lab.ok(['restore', hot.id, '--target-dir', dir]);
    expect(diffTrees(liveTree!, describeTree(dir))).toEqual([]);
    sh('rm', ['-rf', dir]);

    // Restore targets: an existing available volume, then the same volume in use.
    const tgt = await lab.createVolume('target', '1G', 'ext4');
    await p.updateMetadata(tgt.id, { keep: 'mine' });
    const r1 = await lab.ok(['restore', hot.id, '--to-volume', 'target']);
    expect(r1).toMatchObject({ created: false, volume: { id: tgt.id, status: 'available', metadata: { keep: 'mine' } } });
    expect(diffTrees(liveTree!, await treeOf(lab.image(tgt.id)))).toEqual([]);
    const r2 = await lab.ok(['restore', hot.id, '--to-volume', 'target', '--meta-override']);
    expect(r2.volume.metadata).toEqual({ role: 'live', 'permafrost:restored-from': hot.id });

    const inUse = await p.attach(tgt.id, node);
    try {
      const before = sha256File(lab.image(tgt.id));
      const refused = await lab.cli(['restore', hot.id, '--to-volume', 'target']);
      expect(refused.code).toBe(17);
      expect(refused.stderr).toMatch(/volume target is in use.*--recreate-vol-on-error/);
      expect((await lab.leftovers()).snapshots).toEqual([]);
      expect(await lab.volumeNames()).toEqual(['live', 'target']);

      const r3 = await lab.ok(['restore', hot.id, '--to-volume', 'target', '--recreate-vol-on-error']);
      expect(r3).toMatchObject({ created: true, volume: { name: 'target-restored', status: 'available', attachments: [] } });
      expect(r3.volume.id).not.toBe(tgt.id);
      expect(r3.safetySnapshotId).toBeTruthy();
      expect(r3.warnings.join('\n')).toMatch(/is in use: restored into/);
      expect(diffTrees(liveTree!, await treeOf(lab.image(r3.volume.id)))).toEqual([]);
      // The clone carries the in-use volume's metadata plus the saved one.
      expect(r3.volume.metadata).toMatchObject({ role: 'live', 'permafrost:restored-from': hot.id });
      // The in-use volume itself was not touched.
      expect(sha256File(lab.image(tgt.id))).toBe(before);
      expect((await lab.volume(tgt.id)).status).toBe('in-use');
      // The safety snapshot is the operator's to keep or delete; it is the only snapshot.
      expect((await p.listSnapshots()).map((s) => s.id)).toEqual([r3.safetySnapshotId]);
      await p.deleteSnapshot(r3.safetySnapshotId);
    } finally {
      await p.detach(tgt.id, inUse.id);
    }
    await finish(['live', 'target', 'target-restored']);
  }, 300_000);
});

/** blkid of one partition of an image (through a read-only loop device). */
function probePartition(img: string, partition: number): Record<string, string> {
  const dev = attachImage(img, { readOnly: true });
  try {
    return blkid(`${dev}p${partition}`);
  } finally {
    detachLoop(dev);
  }
}
