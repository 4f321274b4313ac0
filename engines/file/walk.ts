/**
 * Depth-first traversal of a stored tree (for restore and tar export): nodes in
 * tree order (a directory before its contents, then a "leave" event after
 * them), subtrees loaded and validated on the way with a small prefetch window.
 */
import { InterruptedError } from '../../src/errors.js';
import type { BlobId, BlobStore } from '../../src/repository/types.js';
import type { Selection } from './select.js';
import { decodeTree, type Tree, type TreeNode } from './tree.js';

/** One traversal event. */
export type WalkEvent =
  /** Every node; a directory's "node" is followed by its contents (when entered) and always by a "leave". */
  | { kind: 'node'; rel: string; node: TreeNode; selected: boolean }
  | { kind: 'leave'; rel: string; node: TreeNode; selected: boolean };

const PREFETCH = 8;

/** Load and validate one tree blob. */
export async function loadTree(repo: BlobStore, id: BlobId): Promise<Tree> {
  return decodeTree(await repo.loadBlob('tree', id));
}

/**
 * Walk the tree below `root` (already loaded). A node is `selected` when there
 * is no selection, or its path or an ancestor's path matches. Unselected
 * directories are still reported (so callers can create them lazily as
 * ancestors of selected entries) but only entered when they may contain a match.
 */
export async function* walkTree(repo: BlobStore, root: Tree, sel: Selection | undefined, signal: AbortSignal): AsyncGenerator<WalkEvent> {
  yield* walkNodes(repo, root.nodes, '', sel === undefined, sel, signal);
}

async function* walkNodes(repo: BlobStore, nodes: TreeNode[], prefix: string, parentSelected: boolean, sel: Selection | undefined, signal: AbortSignal): AsyncGenerator<WalkEvent> {
  // Directories of this tree we will enter, in order, with their subtree loads started a few ahead.
  const dirs: number[] = [];
  const selected: boolean[] = new Array(nodes.length);
  for (let i = 0; i < nodes.length; i++) {
    const n = nodes[i]!;
    const rel = prefix + n.name;
    const s = parentSelected || (sel !== undefined && sel.matches(rel));
    selected[i] = s;
    if (n.type === 'dir' && (s || sel === undefined || sel.mayContain(rel))) dirs.push(i);
  }
  const loads = new Map<number, Promise<Tree>>();
  let next = 0;
  const prefetch = (upTo: number) => {
    for (; next < dirs.length && next < upTo; next++) {
      const i = dirs[next]!;
      const p = loadTree(repo, nodes[i]!.subtree!);
      p.catch(() => {});
      loads.set(i, p);
    }
  };
  prefetch(PREFETCH);
  let dirIdx = 0;
  for (let i = 0; i < nodes.length; i++) {
    if (signal.aborted) throw new InterruptedError();
    const n = nodes[i]!;
    const rel = prefix + n.name;
    yield { kind: 'node', rel, node: n, selected: selected[i]! };
    if (n.type !== 'dir') continue;
    if (dirs[dirIdx] !== i) {
      yield { kind: 'leave', rel, node: n, selected: selected[i]! };
      continue;
    }
    dirIdx++;
    prefetch(dirIdx + PREFETCH);
    const sub = await loads.get(i)!;
    loads.delete(i);
    yield* walkNodes(repo, sub.nodes, rel + '/', selected[i]!, sel, signal);
    yield { kind: 'leave', rel, node: n, selected: selected[i]! };
  }
}
