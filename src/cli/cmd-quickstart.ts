/**
 * permafrost quickstart: the whole flow on the embedded default, on this
 * machine, in a scratch directory: init, backup, change, incremental backup,
 * restore, verify, check. With root and loop devices it does it on a real
 * volume (local provider, ext4) as well.
 */
import { mkdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import type { Command } from 'commander';
import { Catalog } from '../catalog/catalog.js';
import { IntegrityError } from '../errors.js';
import { backupPath } from '../jobs/backup-path.js';
import { diffDigests, mutateSample, treeDigest, writeSample } from '../jobs/quickstart-data.js';
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
    .description('run the whole flow on this machine in a scratch directory: backup, change, incremental backup, restore, verify')
    .option('--dir <dir>', 'scratch directory (emptied first)', '/tmp/permafrost-quickstart')
    .option('--keep', 'keep the scratch directory afterwards')
    .action(
      withContext<QuickstartOptions>(signal, async (ctx, opts) => {
        const dir = opts.dir;
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
          await step(
            'check repository',
            async () => {
              const res = await checkRepository(repo!, { readData: true, references: (m) => referencedBlobs(repo!, m) });
              if (res.errors.length) throw new IntegrityError(res.errors.join('; '));
              return res;
            },
            (r) => `${r.backups} backups, ${r.packs} packs, all data verified`,
          );
          ctx.out.result({ ok: true, dir, steps }, () => `quickstart passed in ${dir}`);
        } finally {
          await repo?.close();
          catalog.close();
          if (!opts.keep) rmSync(dir, { recursive: true, force: true });
        }
      }),
    );
}
