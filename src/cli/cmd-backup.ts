/** permafrost backup: a directory (--path) or a volume (--volume / --volume-id / batch selectors). */
import type { Command } from 'commander';
import { ExitCode, UsageError } from '../errors.js';
import { backupPath } from '../jobs/backup-path.js';
import { backupVolume } from '../jobs/backup-volume.js';
import { type BatchResult, backupBatch, selectVolumes } from '../jobs/batch.js';
import { log } from '../util/log.js';
import { type ProviderOpts, addProviderOptions } from './cmd-volume.js';
import type { Manifest } from '../repository/manifest.js';
import { withContext } from './main.js';
import { formatBytes, formatDuration } from './output.js';

export interface BackupOptions extends ProviderOpts {
  path?: string;
  name?: string;
  exclude?: string[];
  full?: boolean;
  tag?: string[];
  volume?: string;
  volumeId?: string;
  volumeName?: string;
  snapshotId?: string;
  engine?: 'file' | 'block' | 'auto';
  cold?: boolean;
  project?: boolean;
  allTenants?: boolean;
  groupId?: string;
  select?: string[];
  skipMetadata?: string[];
  concurrency?: string;
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
  const cmd = program
    .command('backup')
    .description('back up a directory (--path), a volume (--volume), or a batch of volumes; incremental on the newest backup of the same series')
    .option('--path <dir>', 'directory to back up with the file engine')
    .option('--name <name>', 'backup name for --path (the series incrementals follow; default: the path)')
    .option('--exclude <glob>', 'skip paths matching this glob (repeatable)', collect)
    .option('--volume <ref>', 'volume ID or name')
    .option('--volume-id <id>', 'volume ID')
    .option('--volume-name <name>', 'volume name')
    .option('--snapshot-id <id>', 'back up this existing snapshot (of --volume) instead of taking one')
    .option('--engine <engine>', 'file (mounted filesystem), block (raw device) or auto: file when mountable', 'auto')
    .option('--cold', 'refuse an in-use volume instead of a crash-consistent hot backup')
    .option('--project', "every volume of the token's project")
    .option('--all-tenants', 'every volume of every project (admin)')
    .option('--group-id <ids>', 'the volumes of these volume groups (comma-separated)')
    .option('--select <key=value>', 'only volumes with this metadata (repeatable)', collect)
    .option('--skip-metadata <key=value>', 'skip volumes with this metadata (repeatable)', collect)
    .option('--concurrency <n>', 'volumes backed up at the same time in a batch (default [agent] concurrency, 10)')
    .option('--full', 'ignore the parent: read everything')
    .option('--tag <key=value>', 'tag stored with the backup (repeatable)', collect);
  addProviderOptions(cmd).action(
    withContext<BackupOptions>(signal, async (ctx, opts) => {
      const tags = parseTags(opts.tag);
      const one = opts.volume ?? opts.volumeId ?? opts.volumeName;
      const batch = opts.project || opts.allTenants || opts.groupId || (opts.select && !one);
      const modes = [opts.path, one, batch].filter(Boolean).length;
      if (modes !== 1) throw new UsageError('backup needs exactly one of --path DIR, --volume REF (or --volume-id/--volume-name), or a batch selector (--project, --all-tenants, --group-id, --select)');
      if (opts.engine && !['file', 'block', 'auto'].includes(opts.engine)) throw new UsageError(`--engine must be file, block or auto, not ${opts.engine}`);
      if (opts.path) {
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
        return;
      }
      const provider = await ctx.provider(opts);
      const base = {
        engine: opts.engine,
        cold: opts.cold,
        full: opts.full,
        tags,
        ...ctx.volumeJobOptions(),
      };
      if (one) {
        const repo = await ctx.repository({ exclusive: false, purpose: 'backup' });
        const m = await backupVolume(repo, ctx.catalog(), provider, { ...base, volume: one, snapshotId: opts.snapshotId, progress: ctx.out.progress('backup') });
        if (m.stats.errors > 0) process.exitCode = ExitCode.partial;
        ctx.out.result(summary(m), () => humanSummary(m));
        return;
      }
      const volumes = await selectVolumes(provider, {
        project: opts.project,
        allTenants: opts.allTenants,
        groupIds: opts.groupId?.split(',').map((g) => g.trim()).filter(Boolean),
        select: opts.select ? parseTags(opts.select) : undefined,
        skip: opts.skipMetadata ? parseTags(opts.skipMetadata) : undefined,
      });
      const repo = await ctx.repository({ exclusive: false, purpose: 'backup' });
      const concurrency = opts.concurrency ? Number.parseInt(opts.concurrency, 10) : (ctx.config.int('agent', 'concurrency') ?? 10);
      if (!Number.isInteger(concurrency) || concurrency < 1) throw new UsageError('--concurrency must be a positive integer');
      log.info(`backing up ${volumes.length} volumes, ${concurrency} at a time`);
      const results = await backupBatch(repo, ctx.catalog(), provider, volumes, { ...base, concurrency }, (r) => {
        if (!ctx.out.json) log.info(batchLine(r));
      });
      const ok = results.filter((r) => r.ok).length;
      if (results.length > 0 && ok === 0) process.exitCode = results[0]!.error!.exitCode;
      else if (ok < results.length) process.exitCode = ExitCode.partial;
      ctx.out.result(
        { volumes: results.length, succeeded: ok, failed: results.length - ok, results: results.map(({ manifest, ...r }) => ({ ...r, stats: manifest?.stats })) },
        () => `${ok} of ${results.length} volumes backed up${ok < results.length ? `; failed: ${results.filter((r) => !r.ok).map((r) => r.volumeName || r.volumeId).join(', ')}` : ''}`,
      );
    }),
  );
}

function batchLine(r: BatchResult): string {
  const name = r.volumeName ? `${r.volumeName} (${r.volumeId})` : r.volumeId;
  if (!r.ok) return `✗ ${name}: ${r.error!.message}`;
  const s = r.manifest!.stats;
  return `✓ ${name}: backup ${r.backupId}, ${r.manifest!.engine}, ${formatBytes(s.bytesTotal)}, stored ${formatBytes(s.bytesStored)} in ${formatDuration(r.durationMs)}`;
}
