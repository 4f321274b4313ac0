import { randomBytes } from 'node:crypto';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { newMasterKeyHex } from '../../src/repository/crypto.js';
import { PackBuilder, parsePack } from '../../src/repository/pack.js';
import { Repository } from '../../src/repository/repository.js';
import { BufferPool } from '../../src/util/buffers.js';
import { MemStorage } from '../helpers/memstorage.js';

describe('BufferPool', () => {
  it('hands out power-of-two classes of at least the minimum and reuses what comes back', () => {
    const pool = new BufferPool(2, 1000);
    const a = pool.take(10);
    expect(a.byteLength).toBe(1000);
    const b = pool.take(1500);
    expect(b.byteLength).toBe(2000);
    pool.give(a);
    expect(pool.take(999)).toBe(a);
    expect(pool.take(999)).not.toBe(a);
    // Detached buffers are ignored; at most `keep` per class are kept.
    const c = pool.take(1);
    structuredClone(c, { transfer: [c] });
    pool.give(c);
    const kept = [pool.take(1), pool.take(1), pool.take(1)];
    for (const k of kept) pool.give(k);
    const again = [pool.take(1), pool.take(1), pool.take(1)];
    expect(again.filter((x) => kept.includes(x))).toHaveLength(2);
  });
});

describe('PackBuilder', () => {
  it('grows its buffer for a blob or a header that does not fit, and the pack parses', () => {
    const pool = new BufferPool(4, 0);
    const builder = new PackBuilder(pool, 256);
    const blobs = [randomBytes(100), randomBytes(5000), ...Array.from({ length: 40 }, () => randomBytes(20))];
    for (const [i, b] of blobs.entries()) builder.add(i.toString(16).padStart(64, '0'), 'data', b, b.length, 0);
    const { id, bytes } = builder.finish(undefined);
    const entries = parsePack(Buffer.from(bytes), id, undefined);
    expect(entries).toHaveLength(blobs.length);
    for (const [i, e] of entries.entries()) expect(bytes.subarray(e[2], e[2] + e[3]).equals(blobs[i]!)).toBe(true);
    builder.release();
  });
});

describe.each([
  ['plain', false],
  ['encrypted', true],
])('saveBlob copies what it keeps (%s)', (_n, encrypted) => {
  it('a caller may overwrite its buffer as soon as saveBlob returns', async () => {
    const st = new MemStorage();
    let keyFile: string | undefined;
    if (encrypted) {
      keyFile = join(mkdtempSync(join(tmpdir(), 'pf-key-')), 'key');
      writeFileSync(keyFile, newMasterKeyHex() + '\n', { mode: 0o600 });
    }
    const repo = await Repository.init(st, { keyFile, packSize: 1 << 20 });
    // One reused buffer, as the file engine's read buffers are: small blobs,
    // blobs larger than a compression batch, compressible and random ones.
    const scratch = Buffer.alloc(6 << 20);
    const originals: Buffer[] = [];
    const saves: Promise<unknown>[] = [];
    const sizes = [10, 100, 70_000, 5 << 20, 3000, 1 << 20];
    for (let round = 0; round < 3; round++) {
      for (const [i, n] of sizes.entries()) {
        const data = i % 2 === 0 ? randomBytes(n) : Buffer.alloc(n, `${round}:${i}`);
        data.copy(scratch);
        originals.push(data);
        saves.push(repo.saveBlob('data', scratch.subarray(0, n)));
        scratch.fill(0xee);
      }
    }
    const ids = ((await Promise.all(saves)) as { id: string }[]).map((r) => r.id);
    await repo.flush();
    for (const [i, id] of ids.entries()) expect((await repo.loadBlob('data', id)).equals(originals[i]!)).toBe(true);
    await repo.close();
  });
});
