/** permafrost catalog rebuild: recreate the SQLite catalog from the repository alone. */
import type { Command } from 'commander';
import { ExitCode } from '../errors.js';
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
        const res = await syncCatalog(repo, ctx.catalog(), true);
        if (res.unreadable.length) process.exitCode = ExitCode.partial;
        ctx.out.result({ repository: repo.storage.location, backups: res.added, unreadable: res.unreadable, catalog: ctx.catalog().path }, () =>
          `catalog ${ctx.catalog().path} rebuilt: ${res.added} backups from ${repo.storage.location}` +
          (res.unreadable.length ? `; ${res.unreadable.length} unreadable manifests: ${res.unreadable.join(', ')}` : ''),
        );
      }),
    );
}
