/**
 * BLAKE3 (@napi-rs/blake-hash), loaded straight from its platform package
 * where there is one: the package's own loader asks `process.report` for the
 * C library, which costs 20–40 ms in every thread that loads it (the main
 * thread and each reader and decoder thread). `blake3Path` is what threads
 * `require()` for the same binding.
 */
import { createRequire } from 'node:module';

type Binding = typeof import('@napi-rs/blake-hash');

const require = createRequire(import.meta.url);

function load(): { binding: Binding; path: string } {
  const direct = process.platform === 'linux' ? [`@napi-rs/blake-hash-linux-${process.arch}-gnu`] : [`@napi-rs/blake-hash-${process.platform}-${process.arch}`];
  for (const name of direct) {
    try {
      const path = require.resolve(name);
      const binding = require(path) as Binding;
      if (typeof binding.Blake3Hasher === 'function') return { binding, path };
    } catch {
      /* not installed or not loadable here (e.g. musl): the package's loader decides */
    }
  }
  const path = require.resolve('@napi-rs/blake-hash');
  return { binding: require(path) as Binding, path };
}

const loaded = load();

export const Blake3Hasher = loaded.binding.Blake3Hasher;
export type Blake3Hasher = InstanceType<Binding['Blake3Hasher']>;
export const blake3 = loaded.binding.blake3;
/** Path to require() in a worker thread for the same binding. */
export const blake3Path = loaded.path;
