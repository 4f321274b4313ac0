#!/usr/bin/env -S MALLOC_ARENA_MAX=2 UV_THREADPOOL_SIZE=16 node --max-semi-space-size=8 --heap-growing-percent=50
// Runtime options (measured on a 100k-file backup: about 30 MiB less peak RSS,
// same speed): two malloc arenas instead of one per thread for the worker
// threads, and a young generation of 2x8 MiB instead of 2x16 MiB (2x4 MiB
// saved a few MiB more but doubled the scavenges of an incremental: the bench
// incremental's main-thread scavenge pauses 521 → 345 ms, full backup RSS the
// same within its noise). 16 libuv
// threads instead of 4: the native directory scanner runs there, and on cold
// metadata more requests in flight list faster (no-change backup of 100k files
// after dropping the page cache: 1.41 s → 1.24 s, medians of 3). It must be in
// the environment before Node starts: loading this file already starts the pool.
// The old generation grows by half its live size between full collections
// (V8's default factor lets it reach 90 MiB of mostly garbage on the bench
// dataset's full backup: peak RSS 405 → 346 MiB, 39 → 57 full GCs).
// Entry point: the only place that turns an error into an exit code.
// Runs the compiled CLI (npm run build → dist/): the bundle (scripts/bundle.mjs)
// unless a later tsc run left it behind, else the compiled modules; falls back
// to the TypeScript sources through tsx in a development checkout.
import { existsSync, statSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const bundle = new URL('../dist/permafrost.mjs', import.meta.url);
const built = new URL('../dist/src/cli/run.js', import.meta.url);
const mtime = (u) => statSync(fileURLToPath(u), { throwIfNoEntry: false })?.mtimeMs;
let runCli;
if (process.env.PERMAFROST_FROM_SOURCE || !existsSync(fileURLToPath(built))) {
  const { register } = await import('tsx/esm/api');
  register();
  ({ runCli } = await import(new URL('../src/cli/run.ts', import.meta.url).href));
} else if ((mtime(bundle) ?? -1) >= mtime(built)) {
  ({ runCli } = await import(bundle.href));
} else {
  ({ runCli } = await import(built.href));
}
process.exitCode = await runCli(process.argv.slice(2));
