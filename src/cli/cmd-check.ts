/** permafrost check: verify the repository's structure, and its data with --read-data. */
import type { Command } from 'commander';
import { ExitCode, throwIfAborted } from '../errors.js';
import { referencedBlobs } from '../jobs/references.js';
import { checkRepository, parseSubset } from '../repository/check.js';
import { log } from '../util/log.js';
import { withContext } from './main.js';
import { formatBytes } from './output.js';

interface CheckOpts {
  readData?: boolean;
  readDataSubset?: string;
}

export function registerCheck(program: Command, signal: AbortSignal): void {
  program
    .command('check')
    .description('verify the repository: index, packs, manifests and references; with --read-data every blob')
    .option('--read-data', 'read and verify all data')
    .option('--read-data-subset <n/m>', 'read and verify the n-th of m parts of the packs (e.g. 1/5)')
    .action(
      withContext<CheckOpts>(signal, async (ctx, opts) => {
        const subset = opts.readDataSubset ? parseSubset(opts.readDataSubset) : undefined;
        const repo = await ctx.repository({ exclusive: false, purpose: 'check' }, false);
        const res = await checkRepository(repo, {
          readData: opts.readData,
          subset,
          references: (m) => referencedBlobs(repo, m),
          progress: opts.readData || subset ? ctx.out.progress('check') : undefined,
          signal: ctx.signal,
        });
        // An interrupted check verified only part of the repository: never report it as clean.
        throwIfAborted(ctx.signal);
        for (const w of res.warnings) log.warn(w);
        const ok = res.errors.length === 0;
        const failure = `check found ${res.errors.length} errors in ${repo.storage.location}`;
        // With --json a failed check carries the same {error} a script looks for on any failure.
        const error = ok ? {} : { error: { code: 'integrity', message: failure, exitCode: ExitCode.integrity } };
        ctx.out.result({ ok, ...res, ...error }, () =>
          [
            `${res.backups} backups, ${res.packs} packs, ${res.blobs} blobs` + (res.packsRead ? `; read ${res.packsRead} packs (${formatBytes(res.bytesRead)})` : ''),
            ...res.errors.map((e) => `error: ${e}`),
            ok ? 'no errors found' : `${res.errors.length} errors found`,
          ].join('\n'),
        );
        if (!ok) {
          log.error(failure);
          process.exitCode = ExitCode.integrity;
        }
      }),
    );
}
