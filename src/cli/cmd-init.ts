/** permafrost init: create a repository (and, for --key-file, the key when the file does not exist yet). */
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import type { Command } from 'commander';
import { newMasterKeyHex } from '../repository/crypto.js';
import { Repository } from '../repository/repository.js';
import { log } from '../util/log.js';
import { withContext } from './main.js';

export function registerInit(program: Command, signal: AbortSignal): void {
  program
    .command('init')
    .description('create a repository at --repo (a directory or s3://bucket/prefix); --key-file makes it encrypted')
    .action(
      withContext(signal, async (ctx) => {
        const keyFile = ctx.config.get('repository', 'key_file');
        let newKey = false;
        if (keyFile && !existsSync(keyFile)) {
          mkdirSync(dirname(keyFile), { recursive: true });
          writeFileSync(keyFile, newMasterKeyHex() + '\n', { mode: 0o600, flag: 'wx' });
          newKey = true;
        }
        const storage = ctx.storage();
        await (storage as { ensureBucket?: () => Promise<void> }).ensureBucket?.();
        const repo = await Repository.init(storage, {
          keyFile,
          compressionLevel: ctx.config.int('repository', 'compression_level'),
          packSize: ctx.config.size('repository', 'pack_size'),
        });
        await repo.close();
        if (newKey) log.warn(`created a new key in ${keyFile}: without it the backups cannot be read — keep a copy somewhere safe`);
        ctx.out.result({ repository: storage.location, id: repo.config.id, encrypted: repo.encrypted, keyFile: keyFile ?? null, newKey }, () =>
          `created ${repo.encrypted ? 'encrypted ' : ''}repository ${repo.config.id.slice(0, 8)} at ${storage.location}`,
        );
      }),
    );
}
