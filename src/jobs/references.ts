/**
 * The blobs a backup references, whatever its engine: the file engine's trees
 * and their content, or the block engine's map segments and blocks. Used by
 * check (every reference must be indexed) and by prune (what to keep).
 */
import { decodeTree } from '../../engines/file/tree.js';
import { decodeSegment, loadRoot, segmentLength } from '../../engines/block/map.js';
import type { Manifest } from '../repository/manifest.js';
import type { BlobId, BlobStore, BlobType } from '../repository/types.js';

export async function* referencedBlobs(repo: BlobStore, m: Manifest): AsyncGenerator<{ id: BlobId; type: BlobType }> {
  if (m.engine === 'file') {
    const seen = new Set<BlobId>();
    const stack: BlobId[] = [m.root];
    while (stack.length > 0) {
      const id = stack.pop()!;
      if (seen.has(id)) continue;
      seen.add(id);
      yield { id, type: 'tree' };
      const tree = decodeTree(await repo.loadBlob('tree', id));
      for (const n of tree.nodes) {
        if (n.subtree) stack.push(n.subtree);
        for (const c of n.content ?? []) yield { id: c, type: 'data' };
      }
    }
    return;
  }
  yield { id: m.root, type: 'tree' };
  const root = await loadRoot(repo, m.root);
  for (let s = 0; s < root.segments.length; s++) {
    const seg = root.segments[s]!;
    yield { id: seg, type: 'tree' };
    for (const b of decodeSegment(await repo.loadBlob('tree', seg), segmentLength(root, s))) if (b) yield { id: b, type: 'data' };
  }
}
