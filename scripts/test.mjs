#!/usr/bin/env node
// npm test: every suite (unit, then real), with vitest's own report, then one plain
// closing line "N passed, N failed, N skipped" for CI, and vitest's exit code.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

// The unit suites test xattrs with getfattr/setfattr (Debian: attr). The lab's bring-up installs
// it too, but only before the real suites: as root on a machine without it, install it first so
// those unit cases run instead of skipping. A failure here only leaves them skipping, with a reason.
if (process.getuid?.() === 0 && spawnSync('sh', ['-c', 'command -v getfattr && command -v setfattr'], { stdio: 'ignore' }).status !== 0) {
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
  const install = () => spawnSync('apt-get', ['install', '-y', '-qq', '--no-install-recommends', 'attr'], { stdio: 'ignore', env }).status === 0;
  console.log('[test] installing attr (getfattr/setfattr) for the xattr cases ...');
  if (!install() && !(spawnSync('apt-get', ['update', '-qq'], { stdio: 'ignore', env }).status === 0 && install())) {
    console.log('[test] could not install attr: the xattr cases will skip');
  }
}

const dir = mkdtempSync(join(tmpdir(), 'pf-vitest-'));
const out = join(dir, 'results.json');
const r = spawnSync('npx', ['vitest', 'run', '--reporter=default', '--reporter=json', `--outputFile.json=${out}`, ...process.argv.slice(2)], { stdio: 'inherit' });
let code = r.status ?? 1;
try {
  const j = JSON.parse(readFileSync(out, 'utf8'));
  const skipped = (j.numPendingTests ?? 0) + (j.numTodoTests ?? 0);
  console.log(`\n${j.numPassedTests} passed, ${j.numFailedTests} failed, ${skipped} skipped`);
  if (j.numFailedTests > 0 && code === 0) code = 1;
} catch {
  console.log('\nvitest wrote no results');
  if (code === 0) code = 1;
}
rmSync(dir, { recursive: true, force: true });
process.exit(code);
