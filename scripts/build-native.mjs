#!/usr/bin/env node
// npm's install step: build the optional native directory scanner
// (engines/file/native) with node-gyp. Without it the backup walk uses node:fs
// (slower on large trees, same results), so a failed build is a warning, not
// an error: the reason is printed and the install goes on.
import { spawnSync } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
if (process.env.PERMAFROST_NO_NATIVE === '1') {
  console.error('permafrost: PERMAFROST_NO_NATIVE=1, native directory scanner not built');
  process.exit(0);
}
// npm puts its own node-gyp on PATH for lifecycle scripts.
const r = spawnSync('node-gyp', ['rebuild', '--directory', join(root, 'engines/file/native')], { stdio: ['ignore', 'inherit', 'inherit'] });
if (r.status !== 0) {
  const why = r.error ? r.error.message : `node-gyp exited with ${r.status ?? r.signal}`;
  console.error(`permafrost: warning: the native directory scanner was not built (${why}); backups walk trees through node:fs instead`);
}
