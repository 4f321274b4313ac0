/**
 * Repository check: structure always (config, index files, packs present and
 * large enough, manifests readable, every blob a backup references indexed),
 * data when asked (every blob of the selected packs read, decrypted,
 * decompressed and verified against its ID, pack headers against the index).
 *
 * Packs that no index names are not errors: an interrupted backup leaves them,
 * and they are reported as garbage for prune.
 */
import pLimit from 'p-limit';
import { UsageError } from '../errors.js';
import type { Progress } from '../util/progress.js';
import type { Manifest } from './manifest.js';
import { parsePack } from './pack.js';
import type { Repository } from './repository.js';
import type { BlobId, BlobType } from './types.js';

export interface CheckOptions {
  /** Read all data. */
  readData?: boolean;
  /** Read the packs of subset n of m (1-based), by the first byte of their ID. */
  subset?: { n: number; m: number };
  /** Enumerate the blobs a backup references (engine-specific). */
  references: (m: Manifest) => AsyncIterable<{ id: BlobId; type: BlobType }>;
  progress?: Progress;
  signal?: AbortSignal;
}

export interface CheckResult {
  errors: string[];
  warnings: string[];
  backups: number;
  packs: number;
  blobs: number;
  unindexedPacks: string[];
  packsRead: number;
  bytesRead: number;
}

export function parseSubset(text: string): { n: number; m: number } {
  const m = /^(\d+)\/(\d+)$/.exec(text);
  if (!m || Number(m[1]) < 1 || Number(m[1]) > Number(m[2])) throw new UsageError(`bad subset "${text}": expected n/m with 1 ≤ n ≤ m`);
  return { n: Number(m[1]), m: Number(m[2]) };
}

export async function checkRepository(repo: Repository, o: CheckOptions): Promise<CheckResult> {
  const errors: string[] = [];
  const warnings: string[] = [];
  const st = repo.storage;
  const encKey = repo.keys.encKey;

  // Index files, each verified by name and decoded (the repository was opened without its index).
  await repo.loadIndex((_id, err) => errors.push((err as Error).message));
  const index = repo.index;

  // Packs present and large enough for what the index says they hold.
  const stored = new Map<string, number>();
  for await (const obj of st.list('data/')) stored.set(obj.key.slice(obj.key.lastIndexOf('/') + 1), obj.size);
  const extent = new Map<string, number>();
  for (const [, loc] of index.entries()) extent.set(loc.pack, Math.max(extent.get(loc.pack) ?? 0, loc.offset + loc.length));
  for (const [pack, end] of extent) {
    const size = stored.get(pack);
    if (size === undefined) errors.push(`pack ${pack} is named by the index but missing`);
    else if (size < end) errors.push(`pack ${pack} is truncated (${size} bytes, index needs ${end})`);
  }
  const unindexed = [...stored.keys()].filter((p) => !extent.has(p));
  if (unindexed.length) warnings.push(`${unindexed.length} packs are not in any index (left by interrupted backups; prune removes them)`);

  // Manifests and everything they reference.
  const ids = await repo.listBackupIds();
  let backups = 0;
  const seen = new Set<string>();
  for (const id of ids) {
    if (o.signal?.aborted) break;
    let m: Manifest;
    try {
      m = await repo.loadManifest(id);
    } catch (err) {
      errors.push((err as Error).message);
      continue;
    }
    backups++;
    try {
      for await (const ref of o.references(m)) {
        if (seen.has(ref.id)) continue;
        seen.add(ref.id);
        const loc = index.get(ref.id);
        if (!loc) errors.push(`backup ${id}: ${ref.type} blob ${ref.id} is missing from the index`);
        else if (loc.type !== ref.type) errors.push(`backup ${id}: blob ${ref.id} is indexed as ${loc.type}, referenced as ${ref.type}`);
      }
    } catch (err) {
      errors.push(`backup ${id}: ${(err as Error).message}`);
    }
  }

  // Data.
  let packsRead = 0;
  let bytesRead = 0;
  if (o.readData || o.subset) {
    const packs = [...extent.keys()].filter((p) => stored.has(p) && (!o.subset || (parseInt(p.slice(0, 2), 16) % o.subset.m) + 1 === o.subset.n));
    o.progress?.setTotal(packs.reduce((a, p) => a + (stored.get(p) ?? 0), 0), packs.length);
    const rl = pLimit(2);
    await Promise.all(
      packs.map((p) =>
        rl(async () => {
          if (o.signal?.aborted) return;
          try {
            const bytes = await st.get(`data/${p.slice(0, 2)}/${p}`);
            bytesRead += bytes.length;
            const entries = parsePack(bytes, p, encKey);
            for (const [id, t, offset, length, rawLength, flags] of entries) {
              const loc = index.get(id);
              if (loc && loc.pack === p && (loc.offset !== offset || loc.length !== length)) errors.push(`pack ${p}: blob ${id} is at a different place than the index says`);
              try {
                repo.decodeBlob(id, bytes.subarray(offset, offset + length), flags, rawLength);
              } catch (err) {
                errors.push(`pack ${p} (${t === 'd' ? 'data' : 'tree'}): ${(err as Error).message}`);
              }
            }
            packsRead++;
            o.progress?.advance(bytes.length, 1);
          } catch (err) {
            errors.push((err as Error).message);
          }
        }),
      ),
    );
  }
  o.progress?.done();
  return { errors, warnings, backups, packs: stored.size, blobs: index.size, unindexedPacks: unindexed, packsRead, bytesRead };
}
