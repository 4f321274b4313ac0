/**
 * Index repair: the index rebuilt from the packs alone. Packs describe
 * themselves, so every pack whose header reads back is indexed again; index
 * files that cannot be read are removed once a new index covers their packs.
 * Runs under an exclusive lock.
 */
import pLimit from 'p-limit';
import type { Progress } from '../util/progress.js';
import { log } from '../util/log.js';
import { type PackEntry, readPackHeader } from './pack.js';
import type { Repository } from './repository.js';

export interface RebuildResult {
  packs: number;
  indexedBefore: number;
  reindexed: number;
  unreadablePacks: string[];
  removedIndexFiles: string[];
  rewrittenIndex: string | null;
}

export async function rebuildIndex(repo: Repository, o: { progress?: Progress; signal?: AbortSignal } = {}): Promise<RebuildResult> {
  const badIndex: string[] = [];
  await repo.loadIndex((id, err) => {
    badIndex.push(id);
    log.warn(`index ${id} unreadable: ${(err as Error).message}`);
  });
  const indexed = new Set(repo.index.packIds());
  const packs: { id: string; size: number }[] = [];
  for await (const obj of repo.storage.list('data/')) packs.push({ id: obj.key.slice(obj.key.lastIndexOf('/') + 1), size: obj.size });
  const todo = packs.filter((p) => !indexed.has(p.id));
  o.progress?.setTotal(undefined, todo.length);
  const found: { id: string; blobs: PackEntry[] }[] = [];
  const unreadable: string[] = [];
  const limit = pLimit(8);
  await Promise.all(
    todo.map((p) =>
      limit(async () => {
        if (o.signal?.aborted) return;
        try {
          found.push({ id: p.id, blobs: await readPackHeader(repo.storage, p.id, repo.keys.encKey, p.size) });
        } catch (err) {
          unreadable.push(p.id);
          log.warn(`pack ${p.id}: ${(err as Error).message}`);
        }
        o.progress?.advance(0, 1);
      }),
    ),
  );
  const written = found.length ? await repo.writeIndex(found) : undefined;
  for (const f of found) repo.index.addPack(f.id, f.blobs);
  // An index rebuilt from the same packs can have the very name of the damaged one: it was just rewritten whole.
  for (const id of badIndex) if (id !== written) await repo.storage.delete(`index/${id}`);
  o.progress?.done();
  return { packs: packs.length, indexedBefore: indexed.size, reindexed: found.length, unreadablePacks: unreadable, removedIndexFiles: badIndex.filter((id) => id !== written), rewrittenIndex: written ?? null };
}
