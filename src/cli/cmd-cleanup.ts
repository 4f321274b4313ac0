/** permafrost cleanup: remove what crashed runs left behind (mounts, devices, attachments, temporary volumes and snapshots). */
import type { Command } from 'commander';
import { ExitCode } from '../errors.js';
import { cleanupLeftovers } from '../jobs/cleanup.js';
import { type ProviderOpts, addProviderOptions } from './cmd-volume.js';
import { withContext } from './main.js';

export function registerCleanup(program: Command, signal: AbortSignal): void {
  addProviderOptions(program.command('cleanup').description('remove leftovers of interrupted runs of this agent, from the catalog and the tags of cloud resources')).action(
    withContext<ProviderOpts>(signal, async (ctx, o) => {
      const provider = await ctx.provider(o);
      const r = await cleanupLeftovers(ctx.catalog(), provider, { host: ctx.config.host, stateDir: ctx.config.stateDir, scripts: ctx.scripts() });
      if (r.failed.length) process.exitCode = ExitCode.partial;
      ctx.out.result(r, () =>
        [
          ...r.interruptedBackups.map((id) => `backup ${id}: marked failed (interrupted)`),
          ...r.removed.map((x) => `removed ${x.kind} ${x.ref}${x.job !== '-' ? ` (job ${x.job})` : ''}`),
          ...r.failed.map((x) => `FAILED to remove ${x.kind} ${x.ref}: ${x.error}`),
          r.removed.length || r.failed.length || r.interruptedBackups.length ? '' : 'nothing to clean up',
        ]
          .filter(Boolean)
          .join('\n'),
      );
    }),
  );
}
