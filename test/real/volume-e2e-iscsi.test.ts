// Volume backup and restore through the iSCSI connector, userspace path, against a real target.
//
// The local provider hands out 'local' connection_info (a loop device on the image); a cloud hands
// out 'iscsi'. Here a thin provider wraps the local pool and, on attach, exports the volume's image
// as a LUN of the suite's own tgtd (127.0.0.1, a free port) and answers with iSCSI connection_info,
// as Cinder's LVM/tgt driver does; detach removes the target. The backup and restore jobs then run
// unchanged: snapshot → temporary volume → attach through scripts/iscsi-attach (qemu-storage-daemon
// with libiscsi, FUSE export, loop device) → read-only mount → file engine → detach; and restore →
// new volume → iscsi-attach read-write → mkfs with the same UUID/label → files → detach. The
// restored tree is compared with the source's; afterwards no qemu-storage-daemon, FUSE mount, loop
// device, tgt target, temporary volume or snapshot of ours is left.
//
// Needs root, tgt, qemu-system-common + qemu-block-extra (block-iscsi), fuse3; skips otherwise.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { Catalog } from '../../src/catalog/catalog.js';
import { backupVolume } from '../../src/jobs/backup-volume.js';
import { cleanupLeftovers } from '../../src/jobs/cleanup.js';
import { restoreToVolume } from '../../src/jobs/restore-volume.js';
import { Repository } from '../../src/repository/repository.js';
import { LocalStorage } from '../../src/storage/local.js';
import { noProgress } from '../../src/util/progress.js';
import { LocalVolumeProvider } from '../../src/volume/local.js';
import { createVolumeWithFilesystem } from '../../src/volume/local-cli.js';
import type { Attachment, ConnectorProperties } from '../../src/volume/provider.js';
import { CLEAN, type VolumeLab as Lab, VolumeLab, blkid, describeTree, diffTrees, fillTree, has, mutateTree, qsdProcesses, rootSkipReason, withMounted } from '../helpers/volumes.js';
import { freePort, startTgtd, stopTgtd } from '../helpers/tgtd.js';

const PATH = `/usr/sbin:/sbin:${process.env.PATH ?? '/usr/bin:/bin'}`;
const env = { ...process.env, PATH };

function skipReason(): string | undefined {
  const r = rootSkipReason(['losetup', 'blkid', 'mkfs.ext4', 'setfattr', 'tgtd', 'tgtadm', 'qemu-storage-daemon']);
  if (r) return r;
  const libdirs = ['/usr/lib/x86_64-linux-gnu/qemu', '/usr/lib/aarch64-linux-gnu/qemu', '/usr/lib/qemu', '/usr/lib64/qemu'];
  if (!libdirs.some((d) => existsSync(join(d, 'block-iscsi.so')))) return 'qemu block-iscsi module missing (Debian: qemu-block-extra)';
  if (!existsSync('/dev/fuse')) return '/dev/fuse missing';
  if (!has('fusermount3') && !has('fusermount')) return 'fusermount missing (Debian: fuse3)';
  return undefined;
}
const reason = skipReason();
if (reason) console.warn(`test/real/volume-e2e-iscsi: skipped: ${reason}`);

/** The local pool, exported over iSCSI by a tgtd on attach (what Cinder's tgt driver does). */
class IscsiExportedPool extends LocalVolumeProvider {
  #tid = 0;
  readonly targets = new Map<string, number>();
  constructor(
    poolDir: string,
    private readonly port: number,
    private readonly ctl: number,
  ) {
    super({ poolDir, host: 'pf-e2e-node', pollMs: 20 });
  }

  tgtadm(...args: string[]): string {
    return execFileSync('tgtadm', ['-C', String(this.ctl), '--lld', 'iscsi', ...args], { encoding: 'utf8', env });
  }

  override async attach(volumeId: string, connector: ConnectorProperties): Promise<Attachment> {
    const local = await super.attach(volumeId, connector);
    const tid = ++this.#tid;
    const iqn = `iqn.2024-01.test.permafrost:volume-${volumeId}`;
    try {
      this.tgtadm('--op', 'new', '--mode', 'target', '--tid', String(tid), '-T', iqn);
      this.tgtadm('--op', 'new', '--mode', 'logicalunit', '--tid', String(tid), '--lun', '1', '-b', String(local.connectionInfo.data.device_path));
      this.tgtadm('--op', 'bind', '--mode', 'target', '--tid', String(tid), '-I', 'ALL');
    } catch (err) {
      await super.detach(volumeId, local.id);
      throw err;
    }
    this.targets.set(local.id, tid);
    return {
      id: local.id,
      volumeId,
      connectionInfo: {
        driver_volume_type: 'iscsi',
        data: { target_portal: `127.0.0.1:${this.port}`, target_iqn: iqn, target_lun: 1, target_discovered: false, volume_id: volumeId, attachment_id: local.id, access_mode: 'rw' },
      },
    };
  }

  override async detach(volumeId: string, attachmentId: string): Promise<void> {
    const tid = this.targets.get(attachmentId);
    if (tid !== undefined) {
      this.tgtadm('--op', 'delete', '--mode', 'target', '--tid', String(tid), '--force');
      this.targets.delete(attachmentId);
    }
    await super.detach(volumeId, attachmentId);
  }
}

describe.skipIf(reason !== undefined)('volume backup and restore through the iSCSI connector (userspace, real tgtd)', () => {
  let lab: Lab;
  let port: number;
  let tgtd: number | undefined;
  let pool: IscsiExportedPool;
  let repo: Repository;
  let catalog: Catalog;
  const qsdBefore = new Set<string>();

  beforeAll(async () => {
    for (const p of qsdProcesses()) qsdBefore.add(p);
    lab = await VolumeLab.create('iscsi');
    port = await freePort(3300, 100);
    tgtd = await startTgtd(port, port);
    pool = new IscsiExportedPool(lab.pool, port, port);
    repo = await Repository.open(new LocalStorage(lab.repo));
    await repo.loadIndex();
    await repo.lock(false, 'volume-e2e-iscsi');
    catalog = new Catalog(join(lab.state, 'catalog.db'));
  });

  afterAll(async () => {
    await repo?.close();
    catalog?.close();
    await pool?.close();
    if (tgtd) await stopTgtd(tgtd, port);
    await lab?.close();
  });

  it('backs up an ext4 volume through iscsi-attach (read-only), incrementally, and restores it to a new volume through iSCSI (read-write)', async () => {
    const scripts = { stateDir: join(lab.state, 'run'), mode: 'userspace' as const, timeoutMs: 90_000 };
    const o = { host: 'pf-e2e-node', stateDir: lab.state, scripts, connector: { ip: '127.0.0.1', host: 'pf-e2e-node', multipath: false, platform: 'x86_64', os_type: 'linux2' }, signal: new AbortController().signal, progress: noProgress };
    // Created (and formatted) through the local connector: the pool's own volumes.
    const base = new LocalVolumeProvider({ poolDir: lab.pool, host: 'pf-e2e-node', pollMs: 20 });
    const vol = await createVolumeWithFilesystem(base, { name: 'lun', size: '512M', fs: 'ext4', label: 'iscsi-vol', connector: { stateDir: join(lab.state, 'run') } });
    await base.close();
    const img = lab.image(vol.id);
    const mnt = join(lab.dir, 'mnt');
    await withMounted(img, mnt, (root) => fillTree(root, { randomMiB: 16 }));

    const t0 = performance.now();
    const full = await backupVolume(repo, catalog, pool, { ...o, volume: vol.id });
    const fullMs = performance.now() - t0;
    expect(full).toMatchObject({ engine: 'file', filesystem: { type: 'ext4', label: 'iscsi-vol' } });
    expect(full.stats.errors).toBe(0);
    expect(pool.targets.size).toBe(0); // every target it exported is gone
    // It went through the iSCSI connector's userspace path (qemu-storage-daemon + FUSE + loop).
    const devices = catalog.db.prepare(`SELECT provider, data FROM resources WHERE job_id = ? AND kind = 'device'`).all(full.id) as { provider: string; data: string }[];
    expect(devices.map((d) => [d.provider, (JSON.parse(d.data) as { state: Record<string, string> }).state.MODE])).toEqual([['iscsi', 'userspace']]);

    await withMounted(img, mnt, (root) => mutateTree(root));
    const source = await withMounted(img, mnt, (root) => describeTree(root), { readOnly: true });
    const incr = await backupVolume(repo, catalog, pool, { ...o, volume: vol.id });
    expect(incr.parent).toBe(full.id);
    expect(incr.stats.filesUnchanged).toBeGreaterThan(30);

    const t1 = performance.now();
    const r = await restoreToVolume(repo, catalog, pool, incr, { ...o, toVolume: 'new', name: 'lun-restored' });
    const restoreMs = performance.now() - t1;
    expect(r.volume).toMatchObject({ status: 'available', attachments: [] });
    const rimg = lab.image(r.volume.id);
    expect(blkid(rimg)).toMatchObject({ TYPE: 'ext4', LABEL: 'iscsi-vol', UUID: blkid(img).UUID });
    expect(diffTrees(source, await withMounted(rimg, mnt, (root) => describeTree(root), { readOnly: true }))).toEqual([]);
    console.log(`iscsi userspace: full backup ${(fullMs / 1000).toFixed(1)} s (${Math.round(full.stats.bytesTotal / 2 ** 20)} MiB of files), restore to a new volume ${(restoreMs / 1000).toFixed(1)} s`);

    // Nothing left: targets, qemu-storage-daemon, FUSE exports, loops, temporaries, catalog resources.
    expect(pool.targets.size).toBe(0);
    expect(pool.tgtadm('--op', 'show', '--mode', 'target').trim()).toBe('');
    expect(qsdProcesses().filter((p) => !qsdBefore.has(p) && p.includes(lab.dir))).toEqual([]);
    expect(await lab.leftovers()).toEqual({ ...CLEAN, poolFiles: [] });
    expect(lab.catalogOpen()).toEqual({ resources: [], running: [] });
    expect(await cleanupLeftovers(catalog, pool, { host: 'pf-e2e-node', stateDir: lab.state, scripts })).toEqual({ removed: [], failed: [], interruptedBackups: [] });
    expect((await pool.listVolumes()).map((v) => v.name).sort()).toEqual(['lun', 'lun-restored']);
  }, 600_000);
});
