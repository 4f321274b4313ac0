/** permafrost catalog rebuild: recreate the SQLite catalog from the repository alone. */
import type { Command } from 'commander';
import { existsSync, renameSync } from 'node:fs';
import { ExitCode, IntegrityError } from '../errors.js';
import { log } from '../util/log.js';
import { syncCatalog } from '../jobs/catalog-sync.js';
import { withContext } from './main.js';

export function registerCatalog(program: Command, signal: AbortSignal): void {
  const cat = program.command('catalog').description('the local SQLite catalog (a cache of the repository)');
  cat
    .command('rebuild')
    .description('rebuild the catalog from the manifests in the repository (after losing the agent disk)')
    .action(
      withContext(signal, async (ctx) => {
        const repo = await ctx.repository();
        try {
          ctx.catalog();
        } catch (err) {
          // A damaged catalog is what this command is for: keep it aside and start a new one.
          if (!(err instanceof IntegrityError)) throw err;
          const aside = `${ctx.catalogPath}.damaged-${new Date().toISOString().replace(/[:.]/g, '-')}`;
          for (const suffix of ['', '-wal', '-shm']) if (existsSync(ctx.catalogPath + suffix)) renameSync(ctx.catalogPath + suffix, aside + suffix);
          log.warn(`the catalog was damaged; moved it to ${aside}`);
        }
        const res = await syncCatalog(repo, ctx.catalog(), true);
        if (res.unreadable.length) process.exitCode = ExitCode.partial;
        ctx.out.result({ repository: repo.storage.location, backups: res.added, unreadable: res.unreadable, catalog: ctx.catalog().path }, () =>
          `catalog ${ctx.catalog().path} rebuilt: ${res.added} backups from ${repo.storage.location}` +
          (res.unreadable.length ? `; ${res.unreadable.length} unreadable manifests: ${res.unreadable.join(', ')}` : ''),
        );
      }),
    );
}
