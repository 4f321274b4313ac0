// LocalVolumeProvider on a real pool directory: sparse images, Cinder-like status rules, snapshots
// (forced on in-use volumes), volumes from snapshots as independent copies, delete rules,
// leftovers, records shared between two provider instances, and (as root) `volume create --fs`
// through the local connector.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, open, readdir, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { CloudError, NotFoundError, UsageError } from '../../src/errors.js';
import { detectFilesystem } from '../../src/util/fs-detect.js';
import { GiB, LocalVolumeProvider, type LocalVolumeRecord } from '../../src/volume/local.js';
import { HOST_KEY, TEMPORARY_KEY } from '../../src/volume/temporary.js';
import { createVolumeWithFilesystem, deleteVolumeByRef, listVolumeRows, parseSize } from '../../src/volume/local-cli.js';
import type { ConnectorProperties } from '../../src/volume/provider.js';

const MiB = 1024 * 1024;
const node: ConnectorProperties = { ip: '127.0.0.1', host: 'pf-test-node', multipath: false, platform: 'x86_64', os_type: 'linux2' };

const PATH = `/usr/sbin:/sbin:${process.env.PATH ?? '/usr/bin:/bin'}`;
function rootReason(): string | undefined {
  if (typeof process.getuid !== 'function' || process.getuid() !== 0) return 'not running as root (losetup needs root)';
  for (const cmd of ['losetup', 'mkfs.ext4', 'mkfs.xfs']) {
    // (xfsprogs: the xfs half of the test, and the 300 MB minimum that makes mkfs fail on purpose)
    if (spawnSync('sh', ['-c', `command -v ${cmd}`], { env: { ...process.env, PATH } }).status !== 0) return `${cmd} not installed`;
  }
  return undefined;
}
const noRoot = rootReason();
if (noRoot) console.warn(`test/real/volume-local: 'volume create --fs' part skipped: ${noRoot}`);

async function writeAt(file: string, offset: number, data: string): Promise<void> {
  const fh = await open(file, 'r+');
  try {
    await fh.write(Buffer.from(data), 0, data.length, offset);
  } finally {
    await fh.close();
  }
}

async function readAt(file: string, offset: number, length: number): Promise<string> {
  const fh = await open(file, 'r');
  try {
    const b = Buffer.alloc(length);
    await fh.read(b, 0, length, offset);
    return b.toString();
  } finally {
    await fh.close();
  }
}

async function cloudStatus(p: Promise<unknown>): Promise<number | undefined> {
  try {
    await p;
  } catch (err) {
    expect(err).toBeInstanceOf(CloudError);
    return (err as CloudError).status;
  }
  throw new Error('expected a CloudError');
}

describe('local volume provider', () => {
  let dir: string;
  let pool: string;
  let p: LocalVolumeProvider;

  beforeAll(async () => {
    dir = await mkdtemp('/var/tmp/pf-volume-local-');
    pool = join(dir, 'pool');
    p = new LocalVolumeProvider({ poolDir: pool, host: 'pf-test-node', pollMs: 20 });
  });

  afterAll(async () => {
    await p?.close();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('creates a sparse 1 GiB volume: creating, then available, with Cinder-like fields', async () => {
    const v = await p.createVolume({ name: 'data', size: 1, metadata: { app: 'db' }, description: 'test volume' });
    expect(v.status).toBe('creating');
    const ready = await p.waitVolume(v.id, ['available']);
    expect(ready).toMatchObject({
      id: v.id,
      name: 'data',
      size: 1,
      sizeBytes: GiB,
      status: 'available',
      volumeType: 'local',
      availabilityZone: 'local',
      bootable: false,
      metadata: { app: 'db' },
      attachments: [],
      description: 'test volume',
    });
    const st = await stat(ready.path);
    expect(st.size).toBe(GiB);
    expect(st.blocks).toBe(0); // sparse: costs nothing
    expect(ready.path.startsWith(join(pool, 'volumes'))).toBe(true);
    expect(await p.getVolume('data')).toMatchObject({ id: v.id });
    expect((await p.listVolumes({ metadata: { app: 'db' } })).map((x) => x.id)).toEqual([v.id]);
    expect(await p.listVolumes({ metadata: { app: 'other' } })).toEqual([]);
    await p.updateMetadata(v.id, { tier: 'gold' });
    await p.setBootable(v.id, true);
    expect(await p.getVolume(v.id)).toMatchObject({ bootable: true, metadata: { app: 'db', tier: 'gold' } });
    await p.updateMetadata(v.id, { only: 'this' }, true);
    expect((await p.getVolume(v.id)).metadata).toEqual({ only: 'this' });
    await p.deleteVolume(v.id);
  });

  it('accepts small sizes in bytes for tests, and refuses bad sizes', async () => {
    const v = await p.createVolume({ name: 'small', size: 1, sizeBytes: 64 * MiB });
    const r = await p.waitVolume(v.id, ['available']);
    expect(r.size).toBe(1);
    expect(r.sizeBytes).toBe(64 * MiB);
    expect((await stat(r.path)).size).toBe(64 * MiB);
    await p.deleteVolume(v.id);
    await expect(p.createVolume({ name: 'bad', size: 0 })).rejects.toBeInstanceOf(CloudError);
    await expect(p.createVolume({ name: 'bad', size: 1, sizeBytes: 1000 })).rejects.toBeInstanceOf(UsageError);
  });

  it('snapshots an in-use volume only with force; a volume from the snapshot is an independent copy', async () => {
    const v = await p.createVolume({ name: 'app', size: 1, sizeBytes: 32 * MiB });
    const vol = await p.waitVolume(v.id, ['available']);
    await writeAt(vol.path, 4096, 'before-snapshot');

    const att = await p.attach(v.id, node);
    expect(att.connectionInfo).toEqual({
      driver_volume_type: 'local',
      data: expect.objectContaining({ device_path: vol.path, volume_id: v.id, attachment_id: att.id }),
    });
    const inUse = await p.getVolume(v.id);
    expect(inUse.status).toBe('in-use');
    expect(inUse.attachments).toEqual([{ attachmentId: att.id, serverId: null, hostName: 'pf-test-node', device: null }]);
    // A second attach of a non-multiattach volume is refused.
    expect(await cloudStatus(p.attach(v.id, node))).toBe(400);

    // Cinder: 400 without force on an in-use volume.
    expect(await cloudStatus(p.createSnapshot(v.id, 'snap', { force: false }))).toBe(400);
    const s = await p.createSnapshot(v.id, 'snap', { force: true, metadata: { why: 'backup' } });
    expect(s.status).toBe('creating');
    const snap = await p.waitSnapshot(s.id, ['available']);
    expect(snap).toMatchObject({ volumeId: v.id, name: 'snap', size: 1, sizeBytes: 32 * MiB, metadata: { why: 'backup' } });

    // The volume changes after the snapshot; the snapshot does not.
    await writeAt(vol.path, 4096, 'after--snapshot');
    expect(await readAt(snap.path, 4096, 15)).toBe('before-snapshot');

    // Volume from the snapshot: the snapshot's content, and its own copy.
    const c = await p.createVolume({ name: 'clone', size: 1, snapshotId: s.id, metadata: { [TEMPORARY_KEY]: 'true', [HOST_KEY]: 'pf-test-node' } });
    const clone = await p.waitVolume(c.id, ['available']);
    expect(clone.snapshotId).toBe(s.id);
    expect(clone.sizeBytes).toBe(32 * MiB);
    expect(await readAt(clone.path, 4096, 15)).toBe('before-snapshot');
    await writeAt(clone.path, 4096, 'changed-in-clone');
    expect(await readAt(snap.path, 4096, 15)).toBe('before-snapshot');
    expect(await readAt(vol.path, 4096, 15)).toBe('after--snapshot');
    // The copy is sparse too.
    expect((await stat(clone.path)).blocks * 512).toBeLessThan(4 * MiB);

    // A larger volume from the snapshot grows; a smaller one is refused.
    const big = await p.createVolume({ name: 'big', size: 2, snapshotId: s.id });
    expect((await p.waitVolume(big.id, ['available'])).sizeBytes).toBe(2 * GiB);
    await p.deleteVolume(big.id);

    // Clone of a volume (source volume), in-use allowed.
    const src = await p.createVolume({ name: 'srcclone', size: 1, sourceVolumeId: v.id });
    const srcClone = await p.waitVolume(src.id, ['available']);
    expect(await readAt(srcClone.path, 4096, 15)).toBe('after--snapshot');
    await p.deleteVolume(src.id);

    // Delete rules.
    expect(await cloudStatus(p.deleteVolume(v.id))).toBe(400); // attached
    await p.detach(v.id, att.id);
    await p.detach(v.id, att.id); // idempotent
    expect((await p.getVolume(v.id)).status).toBe('available');
    expect(await cloudStatus(p.deleteVolume(v.id))).toBe(400); // has a snapshot
    await p.deleteSnapshot(s.id);
    await p.deleteSnapshot(s.id); // idempotent
    await expect(p.getSnapshot(s.id)).rejects.toBeInstanceOf(NotFoundError);
    expect(existsSync(snap.path)).toBe(false);
    await p.deleteVolume(v.id);
    await p.deleteVolume(v.id); // idempotent
    await expect(p.getVolume(v.id)).rejects.toBeInstanceOf(NotFoundError);
    expect(existsSync(vol.path)).toBe(false);
    // The clone survives its snapshot and origin.
    expect(await readAt(clone.path, 4096, 16)).toBe('changed-in-clone');
    await p.deleteVolume(c.id);
  });

  it('refuses snapshots of missing volumes and volumes from missing snapshots', async () => {
    await expect(p.createSnapshot('00000000-0000-0000-0000-000000000000', 's', { force: true })).rejects.toBeInstanceOf(NotFoundError);
    await expect(p.createVolume({ name: 'x', size: 1, snapshotId: '00000000-0000-0000-0000-000000000000' })).rejects.toBeInstanceOf(NotFoundError);
    await expect(p.getVolume('no-such-volume')).rejects.toBeInstanceOf(NotFoundError);
  });

  it('treats an ambiguous name as a usage error', async () => {
    const a = await p.createVolume({ name: 'twin', size: 1, sizeBytes: MiB });
    const b = await p.createVolume({ name: 'twin', size: 1, sizeBytes: MiB });
    await p.waitVolume(a.id, ['available']);
    await p.waitVolume(b.id, ['available']);
    await expect(p.getVolume('twin')).rejects.toBeInstanceOf(UsageError);
    expect((await p.getVolume(a.id)).id).toBe(a.id);
    await p.deleteVolume(a.id);
    await p.deleteVolume(b.id);
  });

  it('lists leftovers of this host only', async () => {
    const tag = (host: string) => ({ [TEMPORARY_KEY]: 'true', [HOST_KEY]: host });
    const ours = await p.createVolume({ name: 'tmp-ours', size: 1, sizeBytes: MiB, metadata: tag('node-a') });
    const theirs = await p.createVolume({ name: 'tmp-theirs', size: 1, sizeBytes: MiB, metadata: tag('node-b') });
    const plain = await p.createVolume({ name: 'plain', size: 1, sizeBytes: MiB, metadata: { [HOST_KEY]: 'node-a' } });
    for (const v of [ours, theirs, plain]) await p.waitVolume(v.id, ['available']);
    const s1 = await p.createSnapshot(plain.id, 'tmp-snap', { force: false, metadata: tag('node-a') });
    const s2 = await p.createSnapshot(plain.id, 'user-snap', { force: false });
    await p.waitSnapshot(s1.id, ['available']);
    await p.waitSnapshot(s2.id, ['available']);
    const left = await p.listLeftovers({ host: 'node-a' });
    expect(left.volumes.map((v) => v.id)).toEqual([ours.id]);
    expect(left.snapshots.map((s) => s.id)).toEqual([s1.id]);
    expect((await p.listLeftovers({ host: 'node-c' })).volumes).toEqual([]);
    for (const s of [s1, s2]) await p.deleteSnapshot(s.id);
    for (const v of [ours, theirs, plain]) await p.deleteVolume(v.id);
  });

  it('shares records between provider instances on one pool, under concurrent creates', async () => {
    const q = new LocalVolumeProvider({ poolDir: pool, host: 'pf-test-node', pollMs: 20 });
    try {
      const made = await Promise.all(
        Array.from({ length: 12 }, (_, i) => (i % 2 ? p : q).createVolume({ name: `par-${i}`, size: 1, sizeBytes: MiB })),
      );
      for (const v of made) await q.waitVolume(v.id, ['available']);
      const names = (await p.listVolumes()).map((v) => v.name).filter((n) => n.startsWith('par-'));
      expect(names.sort()).toEqual(Array.from({ length: 12 }, (_, i) => `par-${i}`).sort());
      await Promise.all(made.map((v, i) => ((i % 2 ? q : p) as LocalVolumeProvider).deleteVolume(v.id)));
      expect(await q.listVolumes()).toEqual([]);
    } finally {
      await q.close();
    }
  });

  it('moves a volume left "creating" by a dead process to error', async () => {
    const v = await p.createVolume({ name: 'orphan', size: 1, sizeBytes: MiB });
    await p.waitVolume(v.id, ['available']);
    // Pretend a process that has since exited was creating it.
    const dead = spawnSync('true').pid;
    const db = new Database(join(pool, 'pool.db'), { timeout: 10_000 });
    try {
      const row = db.prepare('SELECT doc FROM volumes WHERE id = ?').get(v.id) as { doc: string };
      const doc = JSON.parse(row.doc) as LocalVolumeRecord & { worker: unknown };
      doc.status = 'creating';
      doc.worker = { token: 'gone', pid: dead, host: 'pf-test-node' };
      db.prepare('UPDATE volumes SET doc = ? WHERE id = ?').run(JSON.stringify(doc), v.id);
    } finally {
      db.close();
    }
    await expect(p.waitVolume(v.id, ['available'], 5000)).rejects.toThrow(/went to error: the process that was creating it/);
    expect((await p.getVolume(v.id)).status).toBe('error');
    await p.deleteVolume(v.id); // error volumes can be deleted
  });

  it('times out a wait with CloudError', async () => {
    const v = await p.createVolume({ name: 'waiter', size: 1, sizeBytes: MiB });
    await p.waitVolume(v.id, ['available']);
    await expect(p.waitVolume(v.id, ['in-use'], 200)).rejects.toThrow(/timed out waiting for volume/);
    await p.deleteVolume(v.id);
  });

  it('parses sizes for volume create', () => {
    expect(parseSize('2G')).toBe(2 * GiB);
    expect(parseSize('512M')).toBe(512 * MiB);
    expect(parseSize('1.5GiB')).toBe(1.5 * GiB);
    expect(parseSize('4096')).toBe(4096);
    expect(() => parseSize('two gigs')).toThrow(UsageError);
    expect(() => parseSize('0')).toThrow(UsageError);
  });

  describe.skipIf(noRoot !== undefined)('volume create --fs (root)', () => {
    it('creates, attaches through the local connector, makes ext4 and xfs, detaches', async () => {
      const runDir = join(dir, 'run');
      const t0 = performance.now();
      const v = await createVolumeWithFilesystem(p, { name: 'app', size: '2G', fs: 'ext4', label: 'app', connector: { stateDir: runDir } });
      const ms = performance.now() - t0;
      console.log(`volume create --size 2G --fs ext4: ${ms.toFixed(0)} ms`);
      expect(v).toMatchObject({ name: 'app', size: 2, status: 'available', attachments: [] });
      const rec = v as LocalVolumeRecord;
      expect(await detectFilesystem(rec.path)).toMatchObject({ type: 'ext4', label: 'app' });
      // Nothing left attached.
      expect(execFileSync('losetup', ['-j', rec.path], { encoding: 'utf8' }).trim()).toBe('');
      expect(await readdir(runDir)).toEqual([]);

      const x = await createVolumeWithFilesystem(p, {
        name: 'logs',
        size: '320M',
        fs: 'xfs',
        uuid: '11111111-2222-4333-8444-555555555555',
        connector: { stateDir: runDir },
      });
      expect(x.size).toBe(1);
      expect(await detectFilesystem((x as LocalVolumeRecord).path)).toMatchObject({ type: 'xfs', uuid: '11111111-2222-4333-8444-555555555555' });

      const rows = await listVolumeRows(p);
      expect(rows.map((r) => [r.name, r.size, r.status])).toEqual([
        ['app', 2, 'available'],
        ['logs', 1, 'available'],
      ]);

      // A snapshot and a volume from it carry the filesystem (same UUID).
      const s = await p.createSnapshot(v.id, 'app-snap', { force: false });
      await p.waitSnapshot(s.id, ['available']);
      const c = await p.createVolume({ name: 'app-copy', size: 2, snapshotId: s.id });
      const copy = await p.waitVolume(c.id, ['available']);
      expect((await detectFilesystem(copy.path))?.uuid).toBe((await detectFilesystem(rec.path))?.uuid);

      // delete: refused with snapshots unless asked to delete them.
      await expect(deleteVolumeByRef(p, 'app')).rejects.toBeInstanceOf(CloudError);
      expect(await deleteVolumeByRef(p, 'app', { withSnapshots: true })).toBe(v.id);
      await deleteVolumeByRef(p, 'logs');
      await deleteVolumeByRef(p, c.id);
      expect(await p.listVolumes()).toEqual([]);
    });

    it('refuses an unknown filesystem before creating anything, and deletes the volume when mkfs fails', async () => {
      await expect(createVolumeWithFilesystem(p, { name: 'nofs', size: '64M', fs: 'nosuchfs' })).rejects.toBeInstanceOf(UsageError);
      // xfs needs 300 MB: mkfs.xfs fails on 64 MiB, after the volume was created and attached.
      await expect(
        createVolumeWithFilesystem(p, { name: 'tiny-xfs', size: '64M', fs: 'xfs', connector: { stateDir: join(dir, 'run') } }),
      ).rejects.toThrow(/mkfs.xfs/);
      expect(await p.listVolumes()).toEqual([]);
      expect(await readdir(join(dir, 'run'))).toEqual([]);
    });
  });
});
