/**
 * The commander program. One module per command registers itself; commands
 * throw, only bin/permafrost.js turns an error into an exit code.
 */
import { Command, CommanderError, Option } from 'commander';
import { PermafrostError, UsageError } from '../errors.js';
import { Context, type GlobalOptions } from './context.js';
import { registerBackup } from './cmd-backup.js';
import { registerCatalog } from './cmd-catalog.js';
import { registerCheck } from './cmd-check.js';
import { registerInit } from './cmd-init.js';
import { registerCleanup } from './cmd-cleanup.js';
import { registerList } from './cmd-list.js';
import { registerQuickstart } from './cmd-quickstart.js';
import { registerPrune } from './cmd-prune.js';
import { registerRepair } from './cmd-repair.js';
import { registerRestore } from './cmd-restore.js';
import { registerVolume } from './cmd-volume.js';

export type Action<O> = (ctx: Context, opts: O, ...args: string[]) => Promise<void>;

/** Wrap a command action: build the context from global options, always close it. */
export function withContext<O>(signal: AbortSignal, action: Action<O>) {
  return async (...args: unknown[]): Promise<void> => {
    const cmd = args[args.length - 1] as Command;
    const opts = cmd.optsWithGlobals() as O & GlobalOptions;
    const positional = args.slice(0, -2) as string[];
    const ctx = new Context(opts, signal);
    try {
      await action(ctx, opts, ...positional);
    } finally {
      await ctx.close();
    }
  };
}

export function buildProgram(signal: AbortSignal): Command {
  const program = new Command('permafrost')
    .description('Backup agent for OpenStack block storage: deduplicated, compressed, optionally encrypted backups of volumes and directories into S3 or a local directory.')
    .version('0.1.0')
    .addOption(new Option('-c, --config <file>', 'agent.ini to read (default /etc/permafrost/agent.ini)'))
    .addOption(new Option('-r, --repo <url>', 'repository: a directory or s3://bucket/prefix (env PERMAFROST_REPO)'))
    .addOption(new Option('--key-file <file>', 'repository key file (env PERMAFROST_KEY_FILE)'))
    .addOption(new Option('--state-dir <dir>', 'catalog and run state (default /var/lib/permafrost)'))
    .option('--json', 'print results as JSON on stdout')
    .option('-q, --quiet', 'no progress output')
    .option('-v, --verbose', 'debug logging on stderr')
    .exitOverride();
  // Commander's own error output is dropped: run.ts prints every error once, as one line (and as
  // JSON with --json), so a usage error must not also come out of commander.
  program.configureOutput({ outputError: () => undefined });
  for (const register of [registerInit, registerBackup, registerList, registerRestore, registerCheck, registerPrune, registerRepair, registerCatalog, registerVolume, registerCleanup, registerQuickstart]) register(program, signal);
  program.commands.forEach((c) => c.exitOverride());
  return program;
}

/** Run the CLI; resolves when the command finished, rejects with a PermafrostError (or a commander exit). */
export async function main(argv: string[], signal: AbortSignal): Promise<void> {
  const program = buildProgram(signal);
  try {
    await program.parseAsync(argv, { from: 'user' });
  } catch (err) {
    if (err instanceof CommanderError) {
      if (err.code === 'commander.helpDisplayed' || err.code === 'commander.version' || err.exitCode === 0) return;
      // No (sub)command given: commander printed the help on stderr; for scripts that is a usage error.
      if (err.code === 'commander.help') throw new UsageError('a command is required; see --help', { cause: err });
      // One line: "unknown option '--jsn' (did you mean --json?); see --help".
      const msg = err.message
        .replace(/^error: /, '')
        .replace(/\n\(Did you mean (.*)\?\)/, ' (did you mean $1?)')
        .replace(/\s*\n\s*/g, ' ');
      throw new UsageError(`${msg}; see --help`, { cause: err });
    }
    throw err;
  }
}

export { PermafrostError };
