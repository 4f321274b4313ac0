/** permafrost prune: apply retention, then delete the data no remaining backup references. */
import type { Command } from 'commander';
import { UsageError } from '../errors.js';
import { syncCatalog } from '../jobs/catalog-sync.js';
import { referencedBlobs } from '../jobs/references.js';
import { applyRetention, isEmptyPolicy, type RetentionPolicy } from '../jobs/retention.js';
import { prune } from '../repository/prune.js';
import { withContext } from './main.js';
import { formatBytes } from './output.js';

interface PruneOpts {
  keepLast?: string;
  keepHourly?: string;
  keepDaily?: string;
  keepWeekly?: string;
  keepMonthly?: string;
  keepYearly?: string;
  name?: string;
  forget?: string[];
  grace: string;
  dryRun?: boolean;
}

function count(v: string | undefined, flag: string): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!Number.isInteger(n) || n < 0) throw new UsageError(`${flag} must be a non-negative integer`);
  return n;
}

export function parseDuration(text: string): number {
  const m = /^(\d+)\s*(s|m|h|d)$/.exec(text.trim());
  if (!m) throw new UsageError(`"${text}" is not a duration (e.g. 30m, 24h, 7d)`);
  return Number(m[1]) * { s: 1e3, m: 6e4, h: 3.6e6, d: 8.64e7 }[m[2] as 's' | 'm' | 'h' | 'd'];
}

const collect = (v: string, prev: string[] = []) => [...prev, v];

export function registerPrune(program: Command, signal: AbortSignal): void {
  program
    .command('prune')
    .description('forget backups by retention policy (per backup name) and delete data no remaining backup references')
    .option('--keep-last <n>', 'keep the n newest backups')
    .option('--keep-hourly <n>', 'keep the newest backup of each of the last n hours that have one')
    .option('--keep-daily <n>', 'keep the newest backup of each of the last n days that have one')
    .option('--keep-weekly <n>', 'keep the newest backup of each of the last n weeks that have one')
    .option('--keep-monthly <n>', 'keep the newest backup of each of the last n months that have one')
    .option('--keep-yearly <n>', 'keep the newest backup of each of the last n years that have one')
    .option('--name <name>', 'apply the policy only to this backup name')
    .option('--forget <id>', 'forget this backup (repeatable; ID or unique prefix)', collect)
    .option('--grace <duration>', 'never delete packs younger than this', '24h')
    .option('--dry-run', 'only say what would be deleted')
    .action(
      withContext<PruneOpts>(signal, async (ctx, o) => {
        const policy: RetentionPolicy = {
          last: count(o.keepLast, '--keep-last'),
          hourly: count(o.keepHourly, '--keep-hourly'),
          daily: count(o.keepDaily, '--keep-daily'),
          weekly: count(o.keepWeekly, '--keep-weekly'),
          monthly: count(o.keepMonthly, '--keep-monthly'),
          yearly: count(o.keepYearly, '--keep-yearly'),
        };
        const graceMs = parseDuration(o.grace);
        const repo = await ctx.repository({ exclusive: true, purpose: 'prune' });
        const all = await repo.loadManifests();
        const forget = new Map<string, (typeof all)[number]>();
        if (!isEmptyPolicy(policy)) for (const m of applyRetention(all.filter((m) => !o.name || m.name === o.name), policy).forget) forget.set(m.id, m);
        for (const ref of o.forget ?? []) {
          const id = await repo.resolveBackupId(ref);
          forget.set(id, all.find((m) => m.id === id)!);
        }
        const res = await prune(repo, {
          forget: [...forget.values()],
          references: (m) => referencedBlobs(repo, m),
          graceMs,
          dryRun: o.dryRun,
          progress: ctx.out.progress('prune'),
        });
        if (!o.dryRun) await syncCatalog(repo, ctx.catalog());
        ctx.out.result({ dryRun: Boolean(o.dryRun), ...res }, () =>
          `${o.dryRun ? 'would forget' : 'forgot'} ${res.forgotten.length} backups${res.forgotten.length ? ` (${res.forgotten.join(', ')})` : ''}; ` +
          `${o.dryRun ? 'would delete' : 'deleted'} ${res.packsDeleted} packs (${formatBytes(res.bytesFreed)}); kept ${res.packsKept} packs` +
          (res.packsInGrace ? `; ${res.packsInGrace} unused packs younger than ${o.grace} kept` : ''),
        );
      }),
    );
}
