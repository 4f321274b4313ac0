/** permafrost list: the backups of the repository (complete ones from the repository, running/failed from this agent's catalog). */
import type { Command } from 'commander';
import type { BackupRow } from '../catalog/catalog.js';
import { syncCatalog } from '../jobs/catalog-sync.js';
import { type ProviderOpts, addProviderOptions } from './cmd-volume.js';
import { withContext } from './main.js';
import { formatBytes } from './output.js';

/** `provider` keeps only backups of volumes of that provider (local, cinder); the provider options are accepted so that `list` takes the same options as `backup`. */
interface ListOptions extends ProviderOpts {
  name?: string;
  volumeId?: string;
  status?: 'running' | 'complete' | 'failed';
}

function row(b: BackupRow) {
  return {
    id: b.id,
    name: b.name,
    status: b.status,
    engine: b.engine,
    source: b.source,
    volumeId: b.volumeId,
    parent: b.parentId,
    dataTimestamp: b.dataTimestamp,
    startedAt: b.startedAt,
    finishedAt: b.finishedAt,
    host: b.host,
    reason: b.reason,
    stats: b.stats,
  };
}

export function registerList(program: Command, signal: AbortSignal): void {
  addProviderOptions(
    program
      .command('list')
      .description('list backups')
      .option('--name <name>', 'only this backup name')
      .option('--volume-id <id>', 'only backups of this volume')
      .option('--status <status>', 'only running, complete or failed'),
  ).action(
      withContext<ListOptions>(signal, async (ctx, opts) => {
        const repo = await ctx.repository();
        const cat = ctx.catalog();
        await syncCatalog(repo, cat);
        // The repository alone answers (no cloud call): --provider only narrows to that provider's volume backups.
        const rows = cat
          .listBackups({ repoId: repo.config.id, name: opts.name, volumeId: opts.volumeId, status: opts.status })
          .filter((b) => !opts.provider || b.provider === opts.provider);
        ctx.out.result({ repository: repo.storage.location, backups: rows.map(row) }, () => {
          if (rows.length === 0) return 'no backups';
          const lines = [['ID', 'TIME', 'NAME', 'STATUS', 'ENGINE', 'SIZE', 'ADDED', 'PARENT'].join('\t')];
          for (const b of rows)
            lines.push(
              [
                b.id,
                (b.dataTimestamp ?? b.startedAt).replace('T', ' ').slice(0, 19),
                b.name,
                b.status + (b.reason ? ` (${b.reason})` : ''),
                b.engine ?? '-',
                b.stats ? formatBytes(b.stats.bytesTotal) : '-',
                b.stats ? formatBytes(b.stats.bytesStored) : '-',
                b.parentId ?? '-',
              ].join('\t'),
            );
          return lines.join('\n');
        });
      }),
    );
}
