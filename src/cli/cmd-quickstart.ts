/**
 * permafrost quickstart: the whole flow on the embedded default, on this
 * machine, in a scratch directory: init, backup, change, incremental backup,
 * restore, verify, check. With root and loop devices it does it on a real
 * volume (local provider, ext4) as well: create a 256 MiB sparse volume, write
 * the sample to it, volume backup, change, incremental volume backup, restore
 * to a new volume, verify (files and filesystem UUID/label), delete both
 * volumes and check that nothing temporary is left.
 */
import { spawnSync } from 'node:child_process';
import { mkdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import type { Command } from 'commander';
import { Catalog } from '../catalog/catalog.js';
import { connectorFor } from '../connectors/index.js';
import { connectorProperties } from '../connectors/properties.js';
import type { ScriptConnectorOptions } from '../connectors/script.js';
import { IntegrityError } from '../errors.js';
import { backupPath } from '../jobs/backup-path.js';
import { backupVolume } from '../jobs/backup-volume.js';
import { cleanupLeftovers } from '../jobs/cleanup.js';
import { diffDigests, mutateSample, treeDigest, writeSample } from '../jobs/quickstart-data.js';
import { restoreToVolume } from '../jobs/restore-volume.js';
import { detectFilesystem } from '../util/fs-detect.js';
import { listMounts, mountReadOnly, mountReadWrite, umount } from '../util/mounts.js';
import { LocalVolumeProvider } from '../volume/local.js';
import { createVolumeWithFilesystem } from '../volume/local-cli.js';
import type { VolumeProvider } from '../volume/provider.js';
import { referencedBlobs } from '../jobs/references.js';
import { checkRepository } from '../repository/check.js';
import { Repository } from '../repository/repository.js';
import { LocalStorage } from '../storage/local.js';
import { restoreTree } from '../../engines/file/restore.js';
import { log } from '../util/log.js';
import { noProgress } from '../util/progress.js';
import { withContext } from './main.js';
import { formatBytes, formatDuration } from './output.js';

interface QuickstartOptions {
  dir: string;
  keep?: boolean;
}

export function registerQuickstart(program: Command, signal: AbortSignal): void {
  program
    .command('quickstart')
    .description('run the whole flow on this machine in a scratch directory: backup, change, incremental backup, restore, verify (as root, on a local volume too)')
    .option('--dir <dir>', 'scratch directory (emptied first)', '/tmp/permafrost-quickstart')
    .option('--keep', 'keep the scratch directory afterwards')
    .action(
      withContext<QuickstartOptions>(signal, async (ctx, opts) => {
        const dir = opts.dir;
        const volumeSkip = volumeFlowUnavailable();
        rmSync(dir, { recursive: true, force: true });
        mkdirSync(dir, { recursive: true });
        const steps: { step: string; ms: number; detail: string }[] = [];
        const step = async <T>(name: string, fn: () => Promise<T>, detail: (t: T) => string): Promise<T> => {
          const t0 = Date.now();
          const r = await fn();
          const s = { step: name, ms: Date.now() - t0, detail: detail(r) };
          steps.push(s);
          if (!ctx.out.json) log.info(`✓ ${name} (${formatDuration(s.ms)}): ${s.detail}`);
          return r;
        };
        const data = join(dir, 'data');
        const catalog = new Catalog(join(dir, 'state', 'catalog.db'));
        let repo: Repository | undefined;
        try {
          await step('write sample data', async () => writeSample(data), () => data);
          repo = await step('init repository', () => Repository.init(new LocalStorage(join(dir, 'repo'))), (r) => `${r.storage.location}`);
          await repo.lock(false, 'quickstart');
          const bo = { path: data, name: 'quickstart', signal: ctx.signal, progress: noProgress, host: ctx.config.host };
          const full = await step('full backup', () => backupPath(repo!, catalog, bo), (m) => `${m.id}: ${m.stats.files} files, ${formatBytes(m.stats.bytesTotal)}, stored ${formatBytes(m.stats.bytesStored)}`);
          await step('change some files', async () => mutateSample(data), () => '1 edited, 1 appended, 1 added, 1 deleted');
          const incr = await step('incremental backup', () => backupPath(repo!, catalog, bo), (m) => `${m.id} on ${m.parent}: read ${m.stats.filesRead} files, ${m.stats.filesUnchanged} unchanged, stored ${formatBytes(m.stats.bytesStored)}`);
          if (incr.parent !== full.id) throw new IntegrityError(`incremental backup did not use the full backup as parent`);
          const target = join(dir, 'restored');
          await step('restore', () => restoreTree(incr.root, target, {}, { repo: repo!, signal: ctx.signal, progress: noProgress, log }), () => target);
          await step(
            'verify',
            async () => {
              const diffs = diffDigests(treeDigest(data), treeDigest(target));
              if (diffs.length) throw new IntegrityError(`restored tree differs from the source: ${diffs.slice(0, 5).join('; ')}`);
            },
            () => 'restored tree equals the source (content, modes, times, links)',
          );
          if (volumeSkip) {
            steps.push({ step: 'volume flow', ms: 0, detail: `skipped: ${volumeSkip}` });
            if (!ctx.out.json) log.info(`- volume flow skipped: ${volumeSkip} (directory flow only)`);
          } else await volumeFlow(repo, catalog, dir, ctx.config.host, ctx.signal, step);
          await step(
            'check repository',
            async () => {
              const res = await checkRepository(repo!, { readData: true, references: (m) => referencedBlobs(repo!, m) });
              if (res.errors.length) throw new IntegrityError(res.errors.join('; '));
              return res;
            },
            (r) => `${r.backups} backups, ${r.packs} packs, all data verified`,
          );
          ctx.out.result({ ok: true, dir, volumeFlow: volumeSkip ? `skipped: ${volumeSkip}` : 'passed', steps }, () =>
            volumeSkip ? `quickstart passed in ${dir} (directory flow only: ${volumeSkip})` : `quickstart passed in ${dir} (directory and volume flows)`,
          );
        } finally {
          await repo?.close();
          catalog.close();
          if (!opts.keep) rmSync(dir, { recursive: true, force: true });
        }
      }),
    );
}

type Step = <T>(name: string, fn: () => Promise<T>, detail: (t: T) => string) => Promise<T>;

const SBIN = `/usr/local/sbin:/usr/sbin:/sbin:${process.env.PATH ?? '/usr/bin:/bin'}`;

/** Why the volume flow cannot run here (not root, a tool missing), or undefined. */
function volumeFlowUnavailable(): string | undefined {
  if (typeof process.getuid !== 'function' || process.getuid() !== 0) return 'not running as root (loop devices and mounts need root)';
  for (const tool of ['losetup', 'blkid', 'mkfs.ext4', 'mount']) {
    if (spawnSync('sh', ['-c', `command -v ${tool}`], { env: { ...process.env, PATH: SBIN }, stdio: 'ignore' }).status !== 0) return `${tool} is not installed`;
  }
  if (spawnSync('losetup', ['--find'], { env: { ...process.env, PATH: SBIN }, stdio: 'ignore' }).status !== 0) return 'no free loop device';
  return undefined;
}

/** Attach a volume to this node through its connector, mount it, run fn on the tree, unmount, detach. */
async function onVolume<T>(provider: VolumeProvider, volumeId: string, scripts: ScriptConnectorOptions, host: string, mnt: string, readOnly: boolean, fn: (root: string, device: string) => Promise<T> | T): Promise<T> {
  const att = await provider.attach(volumeId, connectorProperties({ host }));
  try {
    const conn = connectorFor(att.connectionInfo.driver_volume_type, scripts);
    const dev = await conn.attach(att.connectionInfo, { readOnly });
    try {
      if (readOnly) await mountReadOnly(dev.path, mnt);
      else await mountReadWrite(dev.path, mnt);
      try {
        return await fn(mnt, dev.path);
      } finally {
        await umount(mnt);
      }
    } finally {
      await conn.detach(dev);
    }
  } finally {
    await provider.detach(volumeId, att.id);
  }
}

/**
 * The volume half of the quickstart, in <dir>/state: a 256 MiB sparse ext4
 * volume of the local provider, written, backed up, changed, backed up
 * incrementally, restored to a new volume and compared; then both volumes are
 * deleted and the pool, the mounts and the connector state must be empty.
 */
async function volumeFlow(repo: Repository, catalog: Catalog, dir: string, host: string, signal: AbortSignal, step: Step): Promise<void> {
  const stateDir = join(dir, 'state');
  const scripts: ScriptConnectorOptions = { stateDir: join(stateDir, 'run') };
  const mnt = join(stateDir, 'mnt', 'quickstart');
  const provider = new LocalVolumeProvider({ poolDir: join(stateDir, 'volumes'), host, pollMs: 20 });
  const common = { host, stateDir, scripts, connector: connectorProperties({ host }), signal, progress: noProgress };
  const mine: string[] = [];
  try {
    const vol = await step(
      'create a volume',
      () => createVolumeWithFilesystem(provider, { name: 'quickstart-volume', size: '256M', fs: 'ext4', label: 'quickstart', connector: scripts }),
      (v) => `${v.name} (${v.id}): 256 MiB sparse image, ext4, local provider`,
    );
    mine.push(vol.id);
    await step('write sample data to the volume', () => onVolume(provider, vol.id, scripts, host, mnt, false, (root) => writeSample(join(root, 'data'))), () => 'attached read-write (loop device), mounted, written, detached');
    const full = await step(
      'volume backup',
      () => backupVolume(repo, catalog, provider, { ...common, volume: vol.id }),
      (m) => `${m.id}: snapshot, temporary volume, read-only mount, ${m.engine} engine: ${m.stats.files} files, ${formatBytes(m.stats.bytesTotal)}`,
    );
    if (full.engine !== 'file') throw new IntegrityError(`the volume was backed up with the ${full.engine} engine, not the file engine`);
    await step('change files on the volume', () => onVolume(provider, vol.id, scripts, host, mnt, false, (root) => mutateSample(join(root, 'data'))), () => '1 edited, 1 appended, 1 added, 1 deleted');
    const incr = await step(
      'incremental volume backup',
      () => backupVolume(repo, catalog, provider, { ...common, volume: vol.id }),
      (m) => `${m.id} on ${m.parent}: read ${m.stats.filesRead} files, ${m.stats.filesUnchanged} unchanged, stored ${formatBytes(m.stats.bytesStored)}`,
    );
    if (incr.parent !== full.id) throw new IntegrityError('the incremental volume backup did not use the full one as parent');
    const restored = await step(
      'restore to a new volume',
      async () => {
        const r = await restoreToVolume(repo, catalog, provider, incr, { ...common, toVolume: 'new', name: 'quickstart-volume-restored' });
        mine.push(r.volume.id);
        return r;
      },
      (r) => `${r.volume.name} (${r.volume.id}): mkfs with the same UUID and label, files written back`,
    );
    await step(
      'verify the restored volume',
      async () => {
        const fsOf = async (_root: string, device: string) => detectFilesystem(device);
        const [a, fa] = await onVolume(provider, vol.id, scripts, host, mnt, true, async (root, d) => [treeDigest(root), await fsOf(root, d)] as const);
        const [b, fb] = await onVolume(provider, restored.volume.id, scripts, host, mnt, true, async (root, d) => [treeDigest(root), await fsOf(root, d)] as const);
        const diffs = diffDigests(a, b);
        if (diffs.length) throw new IntegrityError(`the restored volume differs from the source: ${diffs.slice(0, 5).join('; ')}`);
        if (fa?.type !== fb?.type || fa?.uuid !== fb?.uuid || fa?.label !== fb?.label)
          throw new IntegrityError(`filesystem differs: ${fa?.type} ${fa?.uuid} ${fa?.label} ≠ ${fb?.type} ${fb?.uuid} ${fb?.label}`);
        return a.size;
      },
      (n) => `${n} entries identical (content, modes, times, links); same filesystem type, UUID and label`,
    );
  } finally {
    // Both volumes are the quickstart's own; everything temporary must already be gone.
    for (const id of mine.reverse()) await provider.deleteVolume(id).catch((err: unknown) => log.warn(`cannot delete volume ${id}: ${(err as Error).message}`));
  }
  try {
    await step(
      'clean up the volumes',
      async () => {
        const report = await cleanupLeftovers(catalog, provider, { host, stateDir, scripts });
        const left = [...(await provider.listVolumes()).map((v) => `volume ${v.name}`), ...(await provider.listSnapshots()).map((s) => `snapshot ${s.name}`), ...(await listMounts(join(stateDir, 'mnt'))).map((m) => `mount ${m.mountPoint}`)];
        if (report.removed.length || report.failed.length || left.length)
          throw new IntegrityError(`left behind: ${[...report.removed.map((r) => `${r.kind} ${r.ref}`), ...left].join(', ')}`);
      },
      () => 'both volumes deleted; no snapshot, temporary volume, mount or loop device left',
    );
  } finally {
    await provider.close();
  }
}
