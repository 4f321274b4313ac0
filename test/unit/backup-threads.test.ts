// The reader threads cut and hash chunks (engines/file/iopool.ts, with the chunker source of
// engines/file/chunker.ts); the main thread only looks the IDs up. That must give exactly the
// blobs and trees the main thread would: a backup with threads and one without must produce the
// same root tree, and the second of them must store nothing new. Files are shaped around the
// edges of the block reads (4 MiB) and of the chunker (512 KiB min, 8 MiB max).
import { randomBytes } from 'node:crypto';
import { closeSync, mkdirSync, mkdtempSync, openSync, readFileSync, rmSync, truncateSync, writeFileSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { backupTree } from '../../engines/file/backup.js';
import { addon } from '../../src/util/native.js';
import { Repository } from '../../src/repository/repository.js';
import { keyFile } from '../helpers/keyfile.js';
import { MemStorage } from '../helpers/memstorage.js';
import { memContext } from '../helpers/memstore.js';

const MiB = 1 << 20;
let src: string;

/** Compressible but not trivially repeating text of n bytes. */
function text(n: number, seed: number): Buffer {
  const words = ['volume', 'snapshot', 'cinder', 'ceph', 'backup', 'restore', 'pack', 'index', 'chunk', 'tree'];
  const parts: string[] = [];
  let len = 0;
  let x = seed;
  while (len < n) {
    x = (x * 1103515245 + 12345) >>> 0;
    const w = `${words[x % words.length]} ${x % 1000} `;
    parts.push(w);
    len += w.length;
  }
  return Buffer.from(parts.join('')).subarray(0, n);
}

beforeAll(() => {
  src = mkdtempSync(join(tmpdir(), 'pf-bthreads-'));
  mkdirSync(join(src, 'small/deep'), { recursive: true });
  mkdirSync(join(src, 'large'));
  writeFileSync(join(src, 'small/empty'), '');
  writeFileSync(join(src, 'small/one'), 'x');
  for (let i = 0; i < 300; i++) writeFileSync(join(src, `small/deep/f${i}`), i % 3 === 0 ? randomBytes(1 + i * 37) : text(1 + i * 53, i));
  writeFileSync(join(src, 'large/min-size'), randomBytes(512 << 10));
  writeFileSync(join(src, 'large/one-block'), randomBytes(4 * MiB));
  writeFileSync(join(src, 'large/two-blocks'), randomBytes(8 * MiB));
  writeFileSync(join(src, 'large/random-9m'), randomBytes(9 * MiB + 12345));
  writeFileSync(join(src, 'large/text-21m'), text(21 * MiB + 7, 42));
  writeFileSync(join(src, 'large/zeros-12m'), Buffer.alloc(12 * MiB));
  // Sparse: 40 MiB with data islands (one across a block boundary), holes between and at the end.
  const fd = openSync(join(src, 'large/sparse'), 'w');
  writeSync(fd, randomBytes(MiB), 0, MiB, 0);
  writeSync(fd, randomBytes(3 * MiB), 0, 3 * MiB, 7 * MiB);
  writeSync(fd, text(MiB, 7), 0, MiB, 20 * MiB + 3);
  writeSync(fd, Buffer.from([1]), 0, 1, 40 * MiB - 1);
  closeSync(fd);
});

afterAll(() => rmSync(src, { recursive: true, force: true }));

describe.each([
  ['plain', false],
  ['encrypted', true],
])('backup with reader threads that cut and hash (%s)', (_name, encrypted) => {
  it('gives the same root tree as the main thread alone, and stores nothing new the second time', async () => {
    const repo = await Repository.init(new MemStorage(), { keyFile: encrypted ? keyFile() : undefined });
    const main = await backupTree(src, { readers: 0 }, memContext(repo));
    await repo.flush();
    expect(main.stats.errors).toBe(0);
    expect(main.stats.blobsNew).toBeGreaterThan(300);

    // Count hashing on this thread during the threaded backup: trees only, no data.
    let hashedHere = 0;
    const hash = repo.hash.bind(repo);
    repo.hash = (d) => {
      hashedHere++;
      return hash(d);
    };
    const threaded = await backupTree(src, { readers: 3 }, memContext(repo));
    await repo.flush();
    repo.hash = hash;
    expect(threaded.stats.errors).toBe(0);
    expect(threaded.root).toBe(main.root);
    expect(threaded.stats.blobsNew).toBe(0);
    expect(threaded.stats.bytesRead).toBe(main.stats.bytesRead);
    expect(hashedHere).toBeLessThanOrEqual(5); // root, small, small/deep, large: trees

    // And the other way round on a fresh repository: threads first, then the main thread.
    const repo2 = await Repository.init(new MemStorage(), { keyFile: encrypted ? keyFile() : undefined });
    const t2 = await backupTree(src, { readers: 2 }, memContext(repo2));
    await repo2.flush();
    const m2 = await backupTree(src, { readers: 0 }, memContext(repo2));
    expect(m2.root).toBe(t2.root);
    expect(m2.stats.blobsNew).toBe(0);
    await repo.close();
    await repo2.close();
  }, 60_000);
});

/** Bytes this process has read through read(2)-like calls so far (all threads). */
function readChars(): number {
  const m = /^rchar: (\d+)$/m.exec(readFileSync('/proc/self/io', 'utf8'));
  return Number(m![1]);
}

describe('sparse files on reader threads', () => {
  if (addon === undefined) console.warn('[backup-threads] skipping: the native addon is not built (engines/file/native; npm run install)');
  it.skipIf(addon === undefined)('skips the holes (SEEK_DATA): a 256 MiB file with 2 MiB of data costs about 2 MiB of reads, and restores the same', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'pf-holes-'));
    try {
      const path = join(dir, 'disk.raw');
      const fd = openSync(path, 'w');
      const a = randomBytes(MiB);
      const b = text(MiB, 3);
      writeSync(fd, a, 0, MiB, 5 * MiB + 4096); // inside a block, not aligned to it
      writeSync(fd, b, 0, MiB, 100 * MiB - 512 * 1024); // across a block boundary
      closeSync(fd);
      truncateSync(path, 256 * MiB);
      const repo = await Repository.init(new MemStorage());
      const before = readChars();
      const res = await backupTree(dir, { readers: 2 }, memContext(repo));
      await repo.flush();
      const read = readChars() - before;
      expect(res.stats.errors).toBe(0);
      expect(read).toBeLessThan(24 * MiB);
      // The main thread alone reads everything (zeros included) and must agree.
      const main = await backupTree(dir, { readers: 0 }, memContext(repo));
      expect(main.root).toBe(res.root);
      expect(main.stats.blobsNew).toBe(0);
      await repo.close();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }, 60_000);
});
