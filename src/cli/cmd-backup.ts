/** permafrost backup: a directory (--path) or a volume (--volume / --volume-id / batch selectors). */
import type { Command } from 'commander';
import { ExitCode, UsageError } from '../errors.js';
import { backupPath } from '../jobs/backup-path.js';
import type { Manifest } from '../repository/manifest.js';
import { withContext } from './main.js';
import { formatBytes, formatDuration } from './output.js';

export interface BackupOptions {
  path?: string;
  name?: string;
  exclude?: string[];
  full?: boolean;
  tag?: string[];
}

export function parseTags(list: string[] | undefined): Record<string, string> {
  const out: Record<string, string> = {};
  for (const t of list ?? []) {
    const i = t.indexOf('=');
    if (i <= 0) throw new UsageError(`--tag ${t}: expected key=value`);
    out[t.slice(0, i)] = t.slice(i + 1);
  }
  return out;
}

const collect = (v: string, prev: string[] = []) => [...prev, v];

export function summary(m: Manifest): Record<string, unknown> {
  return {
    id: m.id,
    name: m.name,
    engine: m.engine,
    parent: m.parent ?? null,
    dataTimestamp: m.dataTimestamp,
    durationMs: Date.parse(m.finishedAt) - Date.parse(m.startedAt),
    stats: m.stats,
    partial: m.stats.errors > 0,
  };
}

export function humanSummary(m: Manifest): string {
  const s = m.stats;
  const dur = formatDuration(Date.parse(m.finishedAt) - Date.parse(m.startedAt));
  return (
    `backup ${m.id} of ${m.name} complete in ${dur}` +
    `${m.parent ? ` (incremental on ${m.parent})` : ' (full)'}\n` +
    `  ${s.files} files, ${s.dirs} dirs, ${formatBytes(s.bytesTotal)}; read ${formatBytes(s.bytesRead)} (${s.filesUnchanged} files unchanged); ` +
    `added ${formatBytes(s.bytesNew)} new data, ${formatBytes(s.bytesStored)} stored` +
    (s.errors ? `\n  ${s.errors} entries could not be read (see warnings above)` : '')
  );
}

export function registerBackup(program: Command, signal: AbortSignal): void {
  program
    .command('backup')
    .description('back up a directory (--path) into the repository; incremental on the newest backup of the same name')
    .option('--path <dir>', 'directory to back up with the file engine')
    .option('--name <name>', 'backup name (the series incrementals follow; default: the path)')
    .option('--exclude <glob>', 'skip paths matching this glob (repeatable)', collect)
    .option('--full', 'ignore the parent: read every file')
    .option('--tag <key=value>', 'tag stored with the backup (repeatable)', collect)
    .action(
      withContext<BackupOptions>(signal, async (ctx, opts) => {
        if (!opts.path) throw new UsageError('backup needs --path DIR (or a volume selector)');
        const tags = parseTags(opts.tag);
        const repo = await ctx.repository({ exclusive: false, purpose: 'backup' });
        const m = await backupPath(repo, ctx.catalog(), {
          path: opts.path,
          name: opts.name,
          excludes: opts.exclude,
          full: opts.full,
          tags,
          host: ctx.config.host,
          signal: ctx.signal,
          progress: ctx.out.progress('backup'),
        });
        if (m.stats.errors > 0) process.exitCode = ExitCode.partial;
        ctx.out.result(summary(m), () => humanSummary(m));
      }),
    );
}
