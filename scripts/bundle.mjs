#!/usr/bin/env node
// After tsc: the CLI as one ES module, <outDir>/permafrost.mjs, which
// bin/permafrost.js runs. Node then reads one file instead of ~200 (the
// compiled modules and the pure-JS packages they import), which is most of its
// start-up on a cold page cache: `permafrost --version` after dropping the
// caches 0.34–0.50 s → 0.32 s, and the bench's incremental backup starts its
// walk ~80 ms sooner.
//
// Left outside (loaded from node_modules as before): the native addons'
// packages, which find their .node files relative to themselves, and the
// packages only some commands load, through import(): the S3 SDK, yaml, execa.
//
// usage: node scripts/bundle.mjs [outDir]   (default dist; the input is <outDir>/src/cli/run.js)
import { build } from 'esbuild';
import { join, resolve } from 'node:path';

const outDir = resolve(process.argv[2] ?? 'dist');
await build({
  entryPoints: [join(outDir, 'src/cli/run.js')],
  outfile: join(outDir, 'permafrost.mjs'),
  bundle: true,
  platform: 'node',
  format: 'esm',
  target: 'node20',
  sourcemap: true,
  logLevel: 'warning',
  external: ['better-sqlite3', 'zstd-napi', '@napi-rs/*', '@aws-sdk/*', 'yaml', 'execa', 'tsx'],
  // Bundled CommonJS packages call require() for Node's own modules.
  banner: { js: "import { createRequire as __pfCreateRequire } from 'node:module'; const require = __pfCreateRequire(import.meta.url);" },
});
