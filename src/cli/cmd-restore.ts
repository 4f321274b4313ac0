/** permafrost restore: a backup into a directory (--target-dir), as a tar stream (--tar), or onto a volume. */
import { createWriteStream } from 'node:fs';
import type { Command } from 'commander';
import { exportTar } from '../../engines/file/tar.js';
import { restoreTree } from '../../engines/file/restore.js';
import { UsageError } from '../errors.js';
import { log } from '../util/log.js';
import { withContext } from './main.js';
import { formatBytes, formatDuration } from './output.js';

export interface RestoreOptions {
  targetDir?: string;
  tar?: string;
  include?: string[];
  overwrite?: boolean;
}

const collect = (v: string, prev: string[] = []) => [...prev, v];

export function registerRestore(program: Command, signal: AbortSignal): void {
  program
    .command('restore')
    .argument('<backup-id>', 'backup ID or a unique prefix of it')
    .description('restore a backup into a directory or as a tar archive')
    .option('--target-dir <dir>', 'restore the files into this directory (created if needed)')
    .option('--tar <file>', 'write a tar archive to FILE, or "-" for stdout')
    .option('--include <glob>', 'only paths matching this glob, e.g. "etc/**" (repeatable)', collect)
    .option('--overwrite', 'replace files that already exist in the target directory')
    .action(
      withContext<RestoreOptions>(signal, async (ctx, opts, idArg) => {
        if (!opts.targetDir === !opts.tar) throw new UsageError('restore needs exactly one of --target-dir DIR or --tar FILE|-');
        const repo = await ctx.repository();
        const id = await repo.resolveBackupId(idArg!);
        const m = await repo.loadManifest(id);
        if (m.engine !== 'file') throw new UsageError(`backup ${id} holds raw blocks (block engine): restore it to a volume or an image file with --to-volume/--to-image`);
        const t0 = Date.now();
        const progress = ctx.out.progress('restore');
        progress.setTotal(m.stats.bytesTotal, m.stats.files);
        const ectx = { repo, signal: ctx.signal, progress, log };
        try {
          if (opts.tar) {
            const out = opts.tar === '-' ? process.stdout : createWriteStream(opts.tar);
            await exportTar(m.root, out, { include: opts.include }, ectx);
            if (out !== process.stdout) await new Promise<void>((res, rej) => (out as NodeJS.WritableStream).end(() => res()) || rej);
            if (opts.tar !== '-') ctx.out.result({ id, tar: opts.tar }, () => `backup ${id} written as tar to ${opts.tar}`);
            return;
          }
          const res = await restoreTree(m.root, opts.targetDir!, { include: opts.include, overwrite: opts.overwrite }, ectx);
          const ms = Date.now() - t0;
          ctx.out.result({ id, targetDir: opts.targetDir, durationMs: ms, ...res }, () =>
            `restored backup ${id} into ${opts.targetDir} in ${formatDuration(ms)}` +
            (res && typeof res === 'object' && 'bytes' in res ? ` (${formatBytes(Number((res as { bytes: number }).bytes))})` : ''),
          );
        } finally {
          progress.done();
        }
      }),
    );
}
