/**
 * Prune: the only code that deletes data. Under an exclusive lock (so no
 * backup is running: backups hold shared locks), it deletes the manifests the
 * retention policy forgets, then every pack none of whose blobs a remaining
 * backup references and that is older than the grace period. Packs that hold
 * any referenced blob are kept whole (no repacking).
 *
 * Order, crash-safe at every step: manifests → new index for the kept packs →
 * old index files → unreferenced packs. A crash leaves at worst duplicate index
 * entries or unindexed packs, both harmless; the next prune finishes the work.
 */
import pLimit from 'p-limit';
import type { Progress } from '../util/progress.js';
import type { Manifest } from './manifest.js';
import { manifestKey } from './manifest.js';
import { type PackEntry, packKey, typeCode } from './pack.js';
import type { Repository } from './repository.js';
import type { BlobId, BlobType } from './types.js';

export interface PruneOptions {
  forget: Manifest[];
  references: (m: Manifest) => AsyncIterable<{ id: BlobId; type: BlobType }>;
  /** Packs younger than this are never deleted (ms). */
  graceMs: number;
  dryRun?: boolean;
  progress?: Progress;
}

export interface PruneResult {
  forgotten: string[];
  packsDeleted: number;
  bytesFreed: number;
  packsKept: number;
  packsInGrace: number;
  indexFilesReplaced: number;
  /** Temporary files left by killed writers, removed (local storage). */
  tempFilesRemoved: number;
}

export async function prune(repo: Repository, o: PruneOptions): Promise<PruneResult> {
  await repo.loadIndex();
  const forgetIds = new Set(o.forget.map((m) => m.id));
  const remaining = (await repo.loadManifests()).filter((m) => !forgetIds.has(m.id));
  const used = new Set<BlobId>();
  for (const m of remaining) for await (const r of o.references(m)) used.add(r.id);

  const packs = new Map<string, { size: number; mtime: Date }>();
  for await (const obj of repo.storage.list('data/')) packs.set(obj.key.slice(obj.key.lastIndexOf('/') + 1), { size: obj.size, mtime: obj.mtime });
  const blobsOf = new Map<string, PackEntry[]>();
  for (const [id, loc] of repo.index.entries()) {
    const list = blobsOf.get(loc.pack) ?? [];
    list.push([id, typeCode(loc.type), loc.offset, loc.length, loc.rawLength, loc.flags]);
    blobsOf.set(loc.pack, list);
  }
  const now = Date.now();
  const doomed: string[] = [];
  const kept: { id: string; blobs: PackEntry[] }[] = [];
  let inGrace = 0;
  for (const [pack, info] of packs) {
    const blobs = blobsOf.get(pack) ?? [];
    if (blobs.some((b) => used.has(b[0]))) kept.push({ id: pack, blobs });
    else if (now - info.mtime.getTime() < o.graceMs) {
      inGrace++;
      if (blobs.length) kept.push({ id: pack, blobs });
    } else doomed.push(pack);
  }
  const result: PruneResult = {
    forgotten: [...forgetIds],
    packsDeleted: doomed.length,
    bytesFreed: doomed.reduce((a, p) => a + (packs.get(p)?.size ?? 0), 0),
    packsKept: kept.length,
    packsInGrace: inGrace,
    indexFilesReplaced: repo.index.files.size,
    tempFilesRemoved: 0,
  };
  if (o.dryRun) return result;

  const limit = pLimit(8);
  // Temporary files of writers that were killed (staged packs, puts): no writer runs now.
  result.tempFilesRemoved = (await repo.storage.removeStaleTemp?.()) ?? 0;
  await Promise.all([...forgetIds].map((id) => limit(() => repo.storage.delete(manifestKey(id)))));
  if (doomed.length === 0 && forgetIds.size === 0) {
    result.indexFilesReplaced = 0;
    return result;
  }
  const oldIndex = [...repo.index.files];
  const fresh = await repo.writeIndex(kept);
  await Promise.all(oldIndex.filter((id) => id !== fresh).map((id) => limit(() => repo.storage.delete(`index/${id}`))));
  o.progress?.setTotal(result.bytesFreed, doomed.length);
  await Promise.all(
    doomed.map((p) =>
      limit(async () => {
        await repo.storage.delete(packKey(p));
        o.progress?.advance(packs.get(p)?.size ?? 0, 1);
      }),
    ),
  );
  o.progress?.done();
  return result;
}
