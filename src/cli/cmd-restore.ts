/** permafrost restore: a backup into a directory (--target-dir), as a tar stream (--tar), or onto a volume. */
import { createWriteStream, existsSync, openSync, rmSync, statSync } from 'node:fs';
import { finished } from 'node:stream/promises';
import type { Command } from 'commander';
import { exportTar } from '../../engines/file/tar.js';
import { restoreTree } from '../../engines/file/restore.js';
import { restoreDevice } from '../../engines/block/restore.js';
import { ExitCode, IntegrityError, NotFoundError, UsageError, fromSystemError } from '../errors.js';
import type { BlobStore } from '../repository/types.js';
import { restoreToVolume } from '../jobs/restore-volume.js';
import { type ProviderOpts, addProviderOptions } from './cmd-volume.js';
import { log } from '../util/log.js';
import { withContext } from './main.js';
import { formatBytes, formatDuration } from './output.js';

export interface RestoreOptions extends ProviderOpts {
  targetDir?: string;
  tar?: string;
  toImage?: string;
  toVolume?: string;
  name?: string;
  recreateVolOnError?: boolean;
  metaOverride?: boolean;
  removeOldVol?: boolean;
  include?: string[];
  overwrite?: boolean;
}

const collect = (v: string, prev: string[] = []) => [...prev, v];

/** An output file that cannot be created: a usage error naming it (a full disk stays 16). */
function outputError(err: unknown, what: string): unknown {
  const code = (err as NodeJS.ErrnoException).code;
  if (code === 'EISDIR') return new UsageError(`${what} is a directory`, { cause: err });
  if (code === 'ENOENT' || code === 'ENOTDIR') return new UsageError(`${what}: its directory does not exist`, { cause: err });
  if (code === 'EACCES' || code === 'EPERM' || code === 'EROFS') return new UsageError(`${what}: cannot create it (${code})`, { cause: err });
  return fromSystemError(err, what);
}

export function registerRestore(program: Command, signal: AbortSignal): void {
  const cmd = program
    .command('restore')
    .argument('<backup-id>', 'backup ID or a unique prefix of it')
    .description('restore a backup into a directory, as a tar archive, into an image file, or onto a volume')
    .option('--target-dir <dir>', 'restore the files into this directory (created if needed)')
    .option('--tar <file>', 'write a tar archive to FILE, or "-" for stdout')
    .option('--to-image <file>', 'write a block backup into a (sparse) image file')
    .option('--to-volume <new|ref>', '"new": a volume rebuilt from the saved record; or the ID/name of an existing volume')
    .option('--name <name>', 'name of the new volume (default: the saved name)')
    .option('--recreate-vol-on-error', 'when the existing volume is in use: snapshot it, clone it, restore into the clone')
    .option('--meta-override', "replace the volume's metadata with the saved metadata")
    .option('--remove-old-vol', 'DANGEROUS: delete the old volume after a verified restore into a clone (never one still in use)')
    .option('--include <glob>', 'only paths matching this glob, e.g. "etc/**" (repeatable)', collect)
    .option('--overwrite', 'replace files that already exist in the target directory');
  addProviderOptions(cmd).action(
      withContext<RestoreOptions>(signal, async (ctx, opts, idArg) => {
        const targets = [opts.targetDir, opts.tar, opts.toImage, opts.toVolume].filter(Boolean).length;
        if (targets !== 1) throw new UsageError('restore needs exactly one of --target-dir DIR, --tar FILE|-, --to-image FILE or --to-volume new|REF');
        if (opts.targetDir && existsSync(opts.targetDir) && !statSync(opts.targetDir).isDirectory())
          throw new UsageError(`--target-dir ${opts.targetDir} exists and is not a directory`);
        const repo = await ctx.repository();
        const id = await repo.resolveBackupId(idArg!);
        const m = await repo.loadManifest(id);
        if (opts.toVolume) {
          const provider = await ctx.provider(opts);
          const progress = ctx.out.progress('restore');
          progress.setTotal(m.stats.bytesTotal);
          try {
            const r = await restoreToVolume(repo, ctx.catalog(), provider, m, {
              toVolume: opts.toVolume,
              name: opts.name,
              recreateVolOnError: opts.recreateVolOnError,
              metaOverride: opts.metaOverride,
              removeOldVol: opts.removeOldVol,
              ...ctx.volumeJobOptions(),
              progress,
            });
            for (const w of r.warnings) log.warn(w);
            ctx.out.result(r, () => `restored backup ${id} onto ${r.created ? 'new ' : ''}volume ${r.volume.name} (${r.volume.id}), ${r.volume.size} GiB`);
          } finally {
            progress.done();
          }
          return;
        }
        if (opts.toImage) {
          if (m.engine !== 'block') throw new UsageError(`backup ${id} holds files (file engine): restore it with --target-dir, --tar or --to-volume`);
          const progress = ctx.out.progress('restore');
          try {
            const r = await restoreDevice(m.root, opts.toImage, {}, { repo, signal: ctx.signal, progress, log });
            ctx.out.result({ id, image: opts.toImage, ...r }, () => `restored backup ${id} into ${opts.toImage} (${formatBytes(r.size)}, ${formatDuration(r.seconds * 1000)})`);
          } finally {
            progress.done();
          }
          return;
        }
        if (m.engine !== 'file') throw new UsageError(`backup ${id} holds raw blocks (block engine): restore it with --to-volume or --to-image`);
        const t0 = Date.now();
        const progress = ctx.out.progress('restore');
        progress.setTotal(m.stats.bytesTotal, m.stats.files);
        // Count blobs that failed verification: a restore that met corrupted or missing data must
        // not exit 0 just because the engine restored the other entries.
        let damaged = 0;
        const store: BlobStore = {
          hash: (d) => repo.hash(d),
          has: (b) => repo.has(b),
          saveBlob: (t, d, b) => repo.saveBlob(t, d, b),
          loadBlob: (t, b) =>
            repo.loadBlob(t, b).catch((err: unknown) => {
              if (err instanceof IntegrityError || err instanceof NotFoundError) damaged++;
              throw err;
            }),
          // Restores decode on the writer threads (the engine counts the blobs that fail there).
          loadStored: (t, b) => repo.loadStored(t, b),
          codec: () => repo.codec(),
          locateStored: (t, b) => repo.locateStored(t, b),
        };
        const ectx = { repo: store, signal: ctx.signal, progress, log };
        try {
          if (opts.tar) {
            if (opts.tar === '-') await exportTar(m.root, process.stdout, { include: opts.include }, ectx);
            else {
              // Opened here, so that a bad path is one clear error before anything is read; an
              // archive cut short by an error is removed (it would pass for a whole one).
              let fd: number;
              try {
                fd = openSync(opts.tar, 'w', 0o600);
              } catch (err) {
                throw outputError(err, `--tar ${opts.tar}`);
              }
              const out = createWriteStream(opts.tar, { fd });
              try {
                await exportTar(m.root, out, { include: opts.include }, ectx);
                out.end();
                await finished(out);
              } catch (err) {
                out.destroy();
                rmSync(opts.tar, { force: true });
                log.warn(`removed the incomplete archive ${opts.tar}`);
                throw fromSystemError(err, `cannot write ${opts.tar}`);
              }
            }
            if (opts.tar !== '-') ctx.out.result({ id, tar: opts.tar }, () => `backup ${id} written as tar to ${opts.tar}`);
            return;
          }
          const res = await restoreTree(m.root, opts.targetDir!, { include: opts.include, overwrite: opts.overwrite }, ectx);
          const ms = Date.now() - t0;
          let failure: { code: string; message: string; exitCode: number } | undefined;
          if (res.errors > 0) {
            failure =
              damaged > 0 || res.damaged > 0
                ? { code: 'integrity', exitCode: ExitCode.integrity, message: `restore of backup ${id} incomplete: ${res.errors} entries could not be restored (corrupted or missing data; run "permafrost check --read-data")` }
                : { code: 'partial', exitCode: ExitCode.partial, message: `restore of backup ${id} incomplete: ${res.errors} entries could not be restored (see the warnings above)` };
          }
          ctx.out.result({ id, targetDir: opts.targetDir, durationMs: ms, ...res, ...(failure ? { error: failure } : {}) }, () =>
            `restored backup ${id} into ${opts.targetDir} in ${formatDuration(ms)}` +
            (res && typeof res === 'object' && 'bytes' in res ? ` (${formatBytes(Number((res as { bytes: number }).bytes))})` : ''),
          );
          if (failure) {
            log.error(failure.message);
            process.exitCode = failure.exitCode;
          }
        } finally {
          progress.done();
        }
      }),
    );
}
