#!/usr/bin/env node
// npm test: every suite (unit, then real), with vitest's own report, then one plain
// closing line "N passed, N failed, N skipped" for CI, and vitest's exit code.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

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
