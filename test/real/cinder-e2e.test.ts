/**
 * Cinder end to end, through the CLI, against the real lab (Keystone + Cinder with the RBD driver,
 * Ceph, radosgw): volumes are created through the API, their content is written through the same
 * attach path the agent uses (attachments API → RBD connection_info → scripts/rbd-attach in
 * userspace → loop device), then `permafrost backup --provider cinder` and `restore --to-volume new`
 * run as child processes, and the restored volumes are read back through the attach path and
 * compared with what was written, with their record (size, name, metadata, bootable).
 *
 * Flows: an available ext4 volume (--volume-id, cold), an incremental after changes (--volume-name,
 * parent chosen, unchanged files not read), restore to a new volume; an in-use xfs volume (attached
 * through the API as a server would be: hot backup with a forced snapshot) into a repository on
 * the lab's radosgw (s3://bucket/prefix with [s3] endpoint in agent.ini) and back; a raw volume (no
 * filesystem → block engine) and back; --snapshot-id of an existing snapshot; list --volume-id.
 * After every backup nothing temporary may be left in the cloud (permafrost-tmp-* volumes and
 * snapshots, any project) nor on this node (processes, loop devices, mounts).
 *
 * Skips with a printed reason when not root or the lab cannot come up. Everything created in the
 * cloud is removed in afterAll, even when a test failed.
 */
import { createHash, randomBytes } from 'node:crypto';
import { appendFileSync, closeSync, fstatSync, openSync, readSync, unlinkSync, writeFileSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Repository } from '../../src/repository/repository.js';
import { openStorage } from '../../src/storage/index.js';
import { detectFilesystem } from '../../src/util/fs-detect.js';
import { listMounts } from '../../src/util/mounts.js';
import type { CinderVolumeProvider } from '../../src/volume/cinder/provider.js';
import {
  type CliRun,
  Janitor,
  attachAsServer,
  cliEnv,
  createVolume,
  deleteAttachment,
  describeRun,
  dropVolume,
  endSuite,
  ensureQuotas,
  fingerprint,
  loopsUnder,
  osEnv,
  processesMatching,
  provider,
  runCli,
  suiteLab,
  suiteWork,
  tempLeftovers,
  withDevice,
  withMounted,
  writeContent,
} from '../helpers/cinder.js';

const RUN = `pf-e2e-${randomBytes(3).toString('hex')}`;
const HOST = `${RUN}-node`;
const MiB = 1024 * 1024;

const { cl, skip } = await suiteLab('cinder-e2e', ['cinder', 's3']);

let admin: CinderVolumeProvider;
const janitor = new Janitor();
let work: string;
let state: string;
let repo: string;
const timings: Record<string, number> = {};

/** `permafrost --repo R --state-dir S ARGS` as admin. */
function pf(args: string[], o: { repo?: string; extraEnv?: Record<string, string>; config?: string } = {}): Promise<CliRun> {
  const global = ['--repo', o.repo ?? repo, '--state-dir', state, ...(o.config ? ['--config', o.config] : [])];
  return runCli([...global, ...args], cliEnv(cl, { ...osEnv(cl.admin), PERMAFROST_HOST: HOST, PERMAFROST_CONFIG: join(work, 'empty.ini'), ...o.extraEnv }));
}

function ok(r: CliRun): CliRun {
  expect(r.code, describeRun(r)).toBe(0);
  return r;
}

/** Nothing of this suite's jobs left: cloud (tagged with our host), processes, loops, mounts. */
async function assertNothingLeft(): Promise<void> {
  const left = await tempLeftovers(admin, { host: HOST });
  expect(left).toEqual([]);
  expect(processesMatching(join(state, 'run'))).toEqual([]);
  expect(loopsUnder(join(state, 'run'))).toEqual([]);
  expect((await listMounts(state)).map((m) => m.mountPoint)).toEqual([]);
}

async function loadManifest(id: string, url = repo, s3 = false) {
  const storage = openStorage(url, s3 ? { endpoint: cl.lab.s3.endpoint, region: cl.lab.s3.region, forcePathStyle: true, accessKeyId: cl.lab.s3.accessKeyId, secretAccessKey: cl.lab.s3.secretAccessKey } : {});
  const r = await Repository.open(storage);
  try {
    return await r.loadManifest(id);
  } finally {
    await r.close();
  }
}

/** sha256 and size of a whole block device. */
function hashDevice(dev: string): { sha256: string; size: number } {
  const fd = openSync(dev, 'r');
  try {
    const h = createHash('sha256');
    const buf = Buffer.alloc(4 * MiB);
    let size = 0;
    for (;;) {
      const n = readSync(fd, buf, 0, buf.length, null);
      if (n <= 0) break;
      h.update(buf.subarray(0, n));
      size += n;
    }
    return { sha256: h.digest('hex'), size };
  } finally {
    closeSync(fd);
  }
}

beforeAll(async () => {
  if (skip) return;
  admin = await provider(cl.admin);
  await ensureQuotas(admin, [(await admin.info()).projectId!, (await (await provider(cl.demo)).info()).projectId!]);
  ({ work, state, repo } = suiteWork('pf-cinder-e2e-'));
  ok(await pf(['init']));
});

afterAll(async () => {
  if (skip) return;
  // Whatever a failed test may have left: what `permafrost cleanup` finds, then check the cloud.
  await endSuite({ name: 'cinder-e2e', run: RUN, host: HOST, admin, janitor, work, timings, cleanup: () => pf(['cleanup', '--provider', 'cinder']) });
}, 900_000);

describe.skipIf(skip !== undefined)('cinder end to end (CLI against the lab)', () => {
  const ext4: { id?: string; name: string; full?: string; incr?: string; print?: ReturnType<typeof fingerprint>; uuid?: string } = { name: `${RUN}-ext4` };

  it('backs up an available ext4 volume by --volume-id (cold: snapshot, temporary volume, read-only attach, file engine)', async () => {
    const v = await createVolume(admin, janitor, { name: ext4.name, size: 1, metadata: { app: 'e2e', tier: 'gold' }, bootable: true, description: 'e2e ext4' });
    ext4.id = v.id;
    ext4.print = await withMounted(cl, admin, v.id, { stateDir: join(work, 'helper'), mkfsType: 'ext4', label: 'e2edata' }, async (dir) => {
      writeContent(dir, 'ext4-1', { bigMiB: 8 });
      return fingerprint(dir);
    });
    await withDevice(cl, admin, v.id, { readOnly: true, stateDir: join(work, 'helper') }, async (dev) => {
      ext4.uuid = (await detectFilesystem(dev))?.uuid;
    });
    const r = ok(await pf(['--json', 'backup', '--provider', 'cinder', '--volume-id', v.id]));
    timings['cold backup ext4 1 GiB (8 MiB of files)'] = r.ms;
    expect(r.json).toMatchObject({ name: v.id, engine: 'file', parent: null, partial: false });
    expect(r.json.stats.files).toBe(Object.values(ext4.print).filter((e) => e.type !== 'dir').length);
    ext4.full = r.json.id;
    const m = await loadManifest(ext4.full!);
    expect(m.source).toMatchObject({ kind: 'volume', provider: 'cinder', volumeId: v.id, mode: 'cold' });
    expect(m.volume).toMatchObject({ id: v.id, name: ext4.name, size: 1, bootable: true, metadata: { app: 'e2e', tier: 'gold' }, description: 'e2e ext4' });
    expect(m.filesystem).toMatchObject({ type: 'ext4', label: 'e2edata', uuid: ext4.uuid });
    expect(Date.parse(m.dataTimestamp)).not.toBeNaN();
    expect(m.dataTimestamp).toMatch(/Z$/);
    // The source is untouched: available, no attachment left.
    expect(await admin.getVolume(v.id)).toMatchObject({ status: 'available', attachments: [] });
    await assertNothingLeft();
  });

  it('an incremental after changes written through the attach path (--volume-name): parent chosen, unchanged files not read', async () => {
    expect(ext4.full).toBeDefined();
    ext4.print = await withMounted(cl, admin, ext4.id!, { stateDir: join(work, 'helper') }, async (dir) => {
      appendFileSync(join(dir, 'data/small-3.txt'), 'changed\n');
      unlinkSync(join(dir, 'data/small-7.txt'));
      writeFileSync(join(dir, 'data/new-file.bin'), randomBytes(300_000));
      return fingerprint(dir);
    });
    const r = ok(await pf(['--json', 'backup', '--provider', 'cinder', '--volume-name', ext4.name]));
    timings['incremental ext4'] = r.ms;
    expect(r.json.parent).toBe(ext4.full);
    expect(r.json.stats.filesUnchanged).toBeGreaterThan(0);
    expect(r.json.stats.filesRead).toBeLessThanOrEqual(3);
    expect(r.json.stats.files).toBe(Object.values(ext4.print).filter((e) => e.type !== 'dir').length);
    ext4.incr = r.json.id;
    await assertNothingLeft();
  });

  it('restore --to-volume new: a volume rebuilt from the record; read back through the attach path, same files and record', async () => {
    expect(ext4.incr).toBeDefined();
    const r = ok(await pf(['--json', 'restore', ext4.incr!, '--provider', 'cinder', '--to-volume', 'new']));
    timings['restore ext4 to new volume'] = r.ms;
    const id = r.json.volume.id as string;
    janitor.volume(admin, id);
    expect(id).not.toBe(ext4.id);
    const v = await admin.getVolume(id);
    expect(v).toMatchObject({ size: 1, name: ext4.name, bootable: true, status: 'available', attachments: [] });
    expect(v.metadata).toEqual({ app: 'e2e', tier: 'gold', 'permafrost:restored-from': ext4.incr });
    await withDevice(cl, admin, id, { readOnly: true, stateDir: join(work, 'helper') }, async (dev) => {
      expect(await detectFilesystem(dev)).toMatchObject({ type: 'ext4', label: 'e2edata', uuid: ext4.uuid });
    });
    const back = await withMounted(cl, admin, id, { stateDir: join(work, 'helper'), readOnly: true }, async (dir) => fingerprint(dir));
    expect(back).toEqual(ext4.print);
    await dropVolume(admin, id);
    await assertNothingLeft();
  });

  it('--snapshot-id: backs up an existing snapshot (dataTimestamp = its created_at) and leaves it in place', async () => {
    expect(ext4.id).toBeDefined();
    const s = await admin.createSnapshot(ext4.id!, `${RUN}-user-snap`, { force: false, description: 'taken by the operator' });
    janitor.snapshot(admin, s.id);
    const snap = await admin.waitSnapshot(s.id, ['available']);
    const raw = await admin.client.getSnapshot(s.id);
    const r = ok(await pf(['--json', 'backup', '--provider', 'cinder', '--volume-id', ext4.id!, '--snapshot-id', s.id]));
    expect(Date.parse(r.json.dataTimestamp)).toBe(Date.parse(`${raw.created_at}Z`));
    expect(r.json.dataTimestamp).toBe(snap.createdAt);
    expect(r.json.parent).toBe(ext4.incr);
    expect(r.json.stats.filesRead).toBe(0);
    const m = await loadManifest(r.json.id);
    expect(m.source).toMatchObject({ mode: 'snapshot', snapshotId: s.id });
    expect((await admin.getSnapshot(s.id)).status).toBe('available');
    // A snapshot of another volume is refused (usage error), nothing created.
    const other = await createVolume(admin, janitor, { name: `${RUN}-other`, size: 1 });
    const bad = await pf(['backup', '--provider', 'cinder', '--volume-id', other.id, '--snapshot-id', s.id]);
    expect(bad.code, describeRun(bad)).toBe(2);
    expect(bad.stderr).toMatch(/belongs to volume/);
    await dropVolume(admin, other.id);
    await assertNothingLeft();
  });

  it('list --provider cinder --volume-id ID: the backups of that volume', async () => {
    expect(ext4.incr).toBeDefined();
    const r = ok(await pf(['--json', 'list', '--provider', 'cinder', '--volume-id', ext4.id!]));
    const ids = (r.json.backups as { id: string; volumeId: string; status: string }[]).map((b) => b.id);
    expect(ids).toEqual(expect.arrayContaining([ext4.full, ext4.incr]));
    expect(ids).toHaveLength(3);
    expect((r.json.backups as { volumeId: string }[]).every((b) => b.volumeId === ext4.id)).toBe(true);
    const text = ok(await pf(['list', '--provider', 'cinder', '--volume-id', ext4.id!]));
    expect(text.stdout).toContain(ext4.full);
    const none = ok(await pf(['--json', 'list', '--provider', 'local', '--volume-id', ext4.id!]));
    expect(none.json.backups).toEqual([]);
  });

  it('an in-use xfs volume (attached to a server through the API): hot backup with a forced snapshot into S3 (radosgw), restore from S3', async () => {
    const s3url = `s3://${cl.lab.s3.bucket}/pf-e2e/${RUN}`;
    const ini = join(work, 'agent.ini');
    writeFileSync(
      ini,
      [
        '[s3]',
        `endpoint = ${cl.lab.s3.endpoint}`,
        `region = ${cl.lab.s3.region}`,
        `access_key_id = ${cl.lab.s3.accessKeyId}`,
        `secret_access_key = ${cl.lab.s3.secretAccessKey}`,
        '[connector]',
        `ceph_keyring = ${cl.keyring}`,
        `ceph_conf = ${cl.cephConf}`,
        'attach_mode = userspace',
        '',
      ].join('\n'),
    );
    janitor.add('delete the S3 repository', async () => {
      const s = openStorage(`s3://${cl.lab.s3.bucket}/pf-e2e/${RUN}`, { endpoint: cl.lab.s3.endpoint, region: cl.lab.s3.region, forcePathStyle: true, accessKeyId: cl.lab.s3.accessKeyId, secretAccessKey: cl.lab.s3.secretAccessKey });
      const keys: string[] = [];
      for await (const o of s.list('')) keys.push(o.key);
      for (const k of keys) await s.delete(k);
      await s.close();
    });
    // Only the ini names the keyring and the S3 endpoint here.
    const env = { PERMAFROST_CEPH_KEYRING: '', CEPH_CONF: '', PERMAFROST_ATTACH_MODE: '' };
    const s3 = (args: string[]) => pf(args, { repo: s3url, config: ini, extraEnv: env });
    ok(await s3(['init']));

    const v = await createVolume(admin, janitor, { name: `${RUN}-xfs`, size: 1, metadata: { app: 'db' } });
    const print = await withMounted(cl, admin, v.id, { stateDir: join(work, 'helper'), mkfsType: 'xfs', label: 'dbdata' }, async (dir) => {
      writeContent(dir, 'xfs-1', { bigMiB: 16 });
      return fingerprint(dir);
    });
    const att = await attachAsServer(admin, janitor, v.id);
    expect((await admin.getVolume(v.id)).status).toBe('in-use');

    const cold = await s3(['backup', '--provider', 'cinder', '--volume-id', v.id, '--cold']);
    expect(cold.code, describeRun(cold)).toBe(2);
    expect(cold.stderr).toMatch(/in use/);

    const r = ok(await s3(['--json', 'backup', '--provider', 'cinder', '--volume-id', v.id]));
    timings['hot backup xfs 1 GiB (16 MiB of files) to S3'] = r.ms;
    expect(r.json).toMatchObject({ engine: 'file', parent: null });
    const m = await loadManifest(r.json.id, s3url, true);
    expect(m.source).toMatchObject({ mode: 'hot', volumeId: v.id });
    expect(m.filesystem).toMatchObject({ type: 'xfs', label: 'dbdata' });
    expect(m.volume!.status).toBe('in-use');
    // Still attached to its server, exactly as before.
    const after = await admin.getVolume(v.id);
    expect(after.status).toBe('in-use');
    expect(after.attachments.map((a) => a.attachmentId)).toEqual([att]);
    await assertNothingLeft();

    const rr = ok(await s3(['--json', 'restore', r.json.id, '--provider', 'cinder', '--to-volume', 'new', '--name', `${RUN}-xfs-restored`]));
    timings['restore xfs from S3 to new volume'] = rr.ms;
    const id = rr.json.volume.id as string;
    janitor.volume(admin, id);
    const nv = await admin.getVolume(id);
    expect(nv).toMatchObject({ name: `${RUN}-xfs-restored`, size: 1, bootable: false, status: 'available' });
    expect(nv.metadata).toEqual({ app: 'db', 'permafrost:restored-from': r.json.id });
    const back = await withMounted(cl, admin, id, { stateDir: join(work, 'helper'), readOnly: true }, async (dir) => fingerprint(dir));
    expect(back).toEqual(print);
    await dropVolume(admin, id);
    await assertNothingLeft();
  });

  it('a raw volume in use (no filesystem): hot, block engine; restored block for block after the volume and its type are gone', async () => {
    const type = await admin.client.call<{ volume_type: { id: string } }>('POST', '/types', { body: { volume_type: { name: `${RUN}-fast` } }, what: 'create volume type' });
    janitor.volumeType(admin, type.volume_type.id);
    const v = await createVolume(admin, janitor, { name: `${RUN}-raw`, size: 1, metadata: { kind: 'raw' }, volumeType: `${RUN}-fast` });
    expect(v.volumeType).toBe(`${RUN}-fast`);
    const written = await withDevice(cl, admin, v.id, { readOnly: false, stateDir: join(work, 'helper') }, async (dev) => {
      const fd = openSync(dev, 'r+');
      try {
        const size = fstatSync(fd).size || 1024 * MiB;
        for (const off of [0, 300 * MiB + 4096, 1024 * MiB - 2 * MiB]) {
          const data = createHash('sha512').update(`raw-${off}`).digest();
          const block = Buffer.alloc(MiB);
          for (let i = 0; i < block.length; i += data.length) data.copy(block, i);
          writeSync(fd, block, 0, block.length, Math.min(off, size - MiB));
        }
      } finally {
        closeSync(fd);
      }
      return hashDevice(dev);
    });
    expect(written.size).toBe(1024 * MiB);
    // In use by a (simulated) server: a hot backup of the raw device.
    const att = await attachAsServer(admin, janitor, v.id);
    const r = ok(await pf(['--json', 'backup', '--provider', 'cinder', '--volume-id', v.id]));
    timings['hot backup raw 1 GiB (block engine)'] = r.ms;
    expect(r.json.engine).toBe('block');
    expect(r.json.stats.bytesNew).toBeLessThan(16 * MiB);
    expect((await loadManifest(r.json.id)).source).toMatchObject({ mode: 'hot' });
    await assertNothingLeft();
    await deleteAttachment(admin.client, att);
    await admin.waitVolume(v.id, ['available'], 60_000);
    // The volume and its type are gone (disaster recovery into a cloud without that type): the
    // restore falls back to the cloud's default type, with a warning.
    await dropVolume(admin, v.id);
    await admin.client.call('DELETE', `/types/${type.volume_type.id}`, { what: 'delete volume type' });

    const rr = ok(await pf(['--json', 'restore', r.json.id, '--provider', 'cinder', '--to-volume', 'new']));
    timings['restore raw 1 GiB to new volume'] = rr.ms;
    const id = rr.json.volume.id as string;
    janitor.volume(admin, id);
    expect(rr.json.warnings.join('\n')).toMatch(new RegExp(`volume type ${RUN}-fast .*not available here`));
    expect(await admin.getVolume(id)).toMatchObject({ size: 1, name: `${RUN}-raw`, volumeType: '__DEFAULT__', metadata: { kind: 'raw', 'permafrost:restored-from': r.json.id } });
    const back = await withDevice(cl, admin, id, { readOnly: true, stateDir: join(work, 'helper') }, async (dev) => hashDevice(dev));
    expect(back).toEqual(written);
    await dropVolume(admin, id);
    await assertNothingLeft();
  });
});
