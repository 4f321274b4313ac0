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
  // One generator with an explicit stack: nested generators (yield*) would pass every event
  // up through one async generator per level, a few promises each (on 100k entries that
  // allocation was a sixth of a restore's main-thread heap).
  const stack: Level[] = [level(repo, root.nodes, '', sel === undefined, sel, undefined)];
  while (stack.length > 0) {
    const f = stack[stack.length - 1]!;
    if (f.i >= f.nodes.length) {
      stack.pop();
      if (f.dir !== undefined) yield { kind: 'leave', rel: f.dir.rel, node: f.dir.node, selected: f.dir.selected };
      continue;
    }
    if (signal.aborted) throw new InterruptedError();
    const i = f.i++;
    const n = f.nodes[i]!;
    const rel = f.prefix + n.name;
    const selected = f.selected[i]!;
    yield { kind: 'node', rel, node: n, selected };
    if (n.type !== 'dir') continue;
    if (f.dirs[f.dirIdx] !== i) {
      yield { kind: 'leave', rel, node: n, selected };
      continue;
    }
    f.dirIdx++;
    f.prefetch(f.dirIdx + PREFETCH);
    const sub = await f.loads.get(i)!;
    f.loads.delete(i);
    stack.push(level(repo, sub.nodes, rel + '/', selected, sel, { rel, node: n, selected }));
  }
}

/** One tree being walked: its nodes, which are selected, which directories are entered, their loads. */
interface Level {
  nodes: TreeNode[];
  prefix: string;
  selected: boolean[];
  /** Indices of the directories that will be entered, in order. */
  dirs: number[];
  loads: Map<number, Promise<Tree>>;
  prefetch: (upTo: number) => void;
  /** Next node; next entry of dirs. */
  i: number;
  dirIdx: number;
  /** The directory this tree is the content of (its "leave" comes after the tree), none for the root. */
  dir?: { rel: string; node: TreeNode; selected: boolean };
}

function level(repo: BlobStore, nodes: TreeNode[], prefix: string, parentSelected: boolean, sel: Selection | undefined, dir: Level['dir']): Level {
  const dirs: number[] = [];
  const selected: boolean[] = new Array(nodes.length);
  for (let i = 0; i < nodes.length; i++) {
    const n = nodes[i]!;
    const rel = prefix + n.name;
    const s = parentSelected || (sel !== undefined && sel.matches(rel));
    selected[i] = s;
    if (n.type === 'dir' && (s || sel === undefined || sel.mayContain(rel))) dirs.push(i);
  }
  // Subtree loads started a few directories ahead.
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
  return { nodes, prefix, selected, dirs, loads, prefetch, i: 0, dirIdx: 0, dir };
}
