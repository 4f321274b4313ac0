/** Key files for encrypted test repositories. */
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { newMasterKeyHex } from '../../src/repository/crypto.js';

/** A new key file (a fresh master key, mode 0600) in `dir` (default: a new temporary directory). */
export function keyFile(dir: string = mkdtempSync(join(tmpdir(), 'pf-key-'))): string {
  const p = join(dir, 'key');
  writeFileSync(p, newMasterKeyHex() + '\n', { mode: 0o600 });
  return p;
}
