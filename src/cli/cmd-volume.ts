/** permafrost volume create|list|delete: volumes of the configured provider (local by default). */
import type { Command } from 'commander';
import { createVolumeWithFilesystem, deleteVolumeByRef, listVolumeRows } from '../volume/local-cli.js';
import { withContext } from './main.js';

/** The options addProviderOptions declares (--provider, --os-cloud). */
export interface ProviderOpts {
  provider?: string;
  osCloud?: string;
}

export function addProviderOptions(cmd: Command): Command {
  return cmd.option('--provider <kind>', 'volume provider: local or cinder (default: [volume] provider)').option('--os-cloud <name>', 'cloud in clouds.yaml (env OS_CLOUD)');
}

export function registerVolume(program: Command, signal: AbortSignal): void {
  const vol = program.command('volume').description('manage volumes of the provider (the local pool by default)');
  addProviderOptions(
    vol
      .command('create')
      .description('create a volume, optionally with a filesystem')
      .requiredOption('--size <size>', 'size, e.g. 2G or 512M (Cinder rounds up to GiB)')
      .requiredOption('--name <name>', 'volume name')
      .option('--fs <type>', 'filesystem to create: ext4, xfs, btrfs, vfat, or none', 'none')
      .option('--label <label>', 'filesystem label'),
  ).action(
    withContext<ProviderOpts & { size: string; name: string; fs: string; label?: string }>(signal, async (ctx, o) => {
      const provider = await ctx.provider(o);
      const v = await createVolumeWithFilesystem(provider, { name: o.name, size: o.size, fs: o.fs, label: o.label, connector: ctx.scripts() });
      ctx.out.result(v, () => `created volume ${v.name} (${v.id}), ${v.size} GiB${o.fs !== 'none' ? `, ${o.fs}` : ''}`);
    }),
  );
  addProviderOptions(vol.command('list').description('list volumes')).action(
    withContext<ProviderOpts>(signal, async (ctx, o) => {
      const rows = await listVolumeRows(await ctx.provider(o));
      ctx.out.result({ volumes: rows }, () =>
        rows.length === 0 ? 'no volumes' : ['ID\tNAME\tSIZE\tSTATUS\tATTACHED', ...rows.map((r) => `${r.id}\t${r.name}\t${r.size} GiB\t${r.status}\t${r.attachedTo || '-'}`)].join('\n'),
      );
    }),
  );
  addProviderOptions(vol.command('delete').argument('<volume>', 'ID or name').description('delete a volume').option('--with-snapshots', 'delete its snapshots first')).action(
    withContext<ProviderOpts & { withSnapshots?: boolean }>(signal, async (ctx, o, ref) => {
      const id = await deleteVolumeByRef(await ctx.provider(o), ref!, { withSnapshots: o.withSnapshots });
      ctx.out.result({ deleted: id }, () => `deleted volume ${id}`);
    }),
  );
}
