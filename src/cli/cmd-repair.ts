/** permafrost repair index: rebuild the index from the packs alone. */
import type { Command } from 'commander';
import { ExitCode } from '../errors.js';
import { rebuildIndex } from '../repository/rebuild.js';
import { withContext } from './main.js';

export function registerRepair(program: Command, signal: AbortSignal): void {
  const repair = program.command('repair').description('repair the repository');
  repair
    .command('index')
    .description('index every pack that no readable index names (from the packs\' own headers); drop unreadable index files')
    .action(
      withContext(signal, async (ctx) => {
        const repo = await ctx.repository({ exclusive: true, purpose: 'repair index' }, false);
        const r = await rebuildIndex(repo, { progress: ctx.out.progress('repair'), signal: ctx.signal });
        if (r.unreadablePacks.length) process.exitCode = ExitCode.integrity;
        ctx.out.result(r, () =>
          [
            `${r.packs} packs: ${r.indexedBefore} already indexed, ${r.reindexed} indexed from their headers`,
            r.removedIndexFiles.length ? `removed ${r.removedIndexFiles.length} unreadable index files` : '',
            r.unreadablePacks.length ? `${r.unreadablePacks.length} packs are unreadable: ${r.unreadablePacks.join(', ')}` : '',
          ]
            .filter(Boolean)
            .join('\n'),
        );
      }),
    );
}
