/**
 * Trees: one blob per directory, JSON `{"nodes":[...]}` with the nodes sorted
 * by name, every node's keys in one fixed order and absent fields omitted, so
 * that identical directories encode to identical bytes and deduplicate.
 *
 * Decoding validates everything a hostile or corrupted blob could use against
 * a restore: names (no "/", NUL, ".", "..", empty), strict name order (so no
 * duplicates), types, integer fields, blob IDs. Any violation is an
 * IntegrityError. The format is described in docs/ARCHITECTURE.md ("Trees").
 */
import { IntegrityError } from '../../src/errors.js';
import type { BlobId } from '../../src/repository/types.js';

/** Kinds of filesystem entries a tree records. */
export type NodeType = 'file' | 'dir' | 'symlink' | 'fifo' | 'chardev' | 'blockdev' | 'socket';

const NODE_TYPES: ReadonlySet<string> = new Set<NodeType>(['file', 'dir', 'symlink', 'fifo', 'chardev', 'blockdev', 'socket']);

/** A hole in a file: `[offset, length]` in bytes, a whole all-zero chunk that is not stored. */
export type Hole = [number, number];

/** One directory entry. Optional fields are omitted when absent. */
export interface TreeNode {
  name: string;
  type: NodeType;
  /** Permission bits (mode & 0o7777), without the file type. */
  mode: number;
  uid: number;
  gid: number;
  /** Files: size in bytes. */
  size?: number;
  /** Times in nanoseconds since the epoch, decimal strings (exact; JSON numbers are not). */
  mtimeNs: string;
  ctimeNs: string;
  /**
   * Not recorded for directories and symlinks: the backup's own readdir/readlink changes it, and
   * keeping it would make every directory's tree new at each backup.
   */
  atimeNs?: string;
  /** Inode number, decimal string. */
  inode: string;
  /** Device, only when it differs from the device of the backup root (nested mounts). */
  dev?: number;
  /** Link count, only for non-directories with more than one link (hardlink groups: same dev+inode). */
  nlink?: number;
  /** Device nodes: st_rdev. */
  rdev?: number;
  /** Symlinks: the target, verbatim. */
  linkTarget?: string;
  /** Extended attributes, name → base64 value, names sorted. */
  xattrs?: Record<string, string>;
  /** The source file was sparse (allocated blocks < size); restore keeps zero runs as holes. */
  sparse?: boolean;
  /** Whole all-zero chunks that were not stored, in order. */
  holes?: Hole[];
  /** Files: the data blobs of the non-hole chunks, in order. */
  content?: BlobId[];
  /** Directories: the tree blob of the directory's contents. */
  subtree?: BlobId;
}

/** A decoded tree. `root` holds the metadata of the backed-up directory itself (root tree only). */
export interface Tree {
  nodes: TreeNode[];
  root?: Omit<TreeNode, 'name'>;
}

/** Order of names in a tree (UTF-16 code unit order, as JavaScript's default sort). */
export function compareNames(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/** True when `name` may appear as a tree node name (one path component, nothing special). */
export function isValidName(name: unknown): name is string {
  return typeof name === 'string' && name.length > 0 && name.length <= 4096 && name !== '.' && name !== '..' && !name.includes('/') && !name.includes('\0');
}

const ID_RE = /^[0-9a-f]{64}$/;
const NS_RE = /^(0|-?[1-9][0-9]{0,20})$/;
const INODE_RE = /^(0|[1-9][0-9]{0,19})$/;
const B64_RE = /^[A-Za-z0-9+/]*={0,2}$/;

function fail(msg: string): never {
  throw new IntegrityError(`malformed tree: ${msg}`);
}

function isUint(v: unknown, max = Number.MAX_SAFE_INTEGER): v is number {
  return typeof v === 'number' && Number.isInteger(v) && v >= 0 && v <= max;
}

/** Put one node's fields in the canonical order, dropping absent ones. */
function canonicalNode(n: TreeNode | Omit<TreeNode, 'name'>, withName: boolean): Record<string, unknown> {
  const o: Record<string, unknown> = {};
  if (withName) o.name = (n as TreeNode).name;
  o.type = n.type;
  o.mode = n.mode;
  o.uid = n.uid;
  o.gid = n.gid;
  if (n.size !== undefined) o.size = n.size;
  o.mtimeNs = n.mtimeNs;
  o.ctimeNs = n.ctimeNs;
  if (n.atimeNs !== undefined) o.atimeNs = n.atimeNs;
  o.inode = n.inode;
  if (n.dev !== undefined) o.dev = n.dev;
  if (n.nlink !== undefined) o.nlink = n.nlink;
  if (n.rdev !== undefined) o.rdev = n.rdev;
  if (n.linkTarget !== undefined) o.linkTarget = n.linkTarget;
  if (n.xattrs !== undefined) {
    const x: Record<string, string> = {};
    for (const k of Object.keys(n.xattrs).sort(compareNames)) x[k] = n.xattrs[k]!;
    o.xattrs = x;
  }
  if (n.sparse) o.sparse = true;
  if (n.holes !== undefined && n.holes.length > 0) o.holes = n.holes;
  if (n.content !== undefined) o.content = n.content;
  if (n.subtree !== undefined) o.subtree = n.subtree;
  return o;
}

/**
 * A node with every field present in the canonical order (absent ones
 * undefined, which JSON.stringify leaves out). Nodes built this way, with
 * sorted xattr names, can be encoded without copying (`canonical: true`).
 */
export function createNode(name: string, type: NodeType): TreeNode {
  return {
    name,
    type,
    mode: 0,
    uid: 0,
    gid: 0,
    size: undefined,
    mtimeNs: '',
    ctimeNs: '',
    atimeNs: undefined,
    inode: '',
    dev: undefined,
    nlink: undefined,
    rdev: undefined,
    linkTarget: undefined,
    xattrs: undefined,
    sparse: undefined,
    holes: undefined,
    content: undefined,
    subtree: undefined,
  };
}

/**
 * Encode a tree deterministically. Nodes are sorted by name and put in the
 * canonical field order here, unless `canonical` says the caller built them
 * with createNode() in name order (the backup's fast path; order and names
 * are still checked). Duplicate or invalid names throw IntegrityError: a tree
 * that would not decode is never written.
 */
export function encodeTree(tree: Tree, opts: { canonical?: boolean } = {}): Buffer {
  if (opts.canonical) {
    const nodes = tree.nodes;
    for (let i = 0; i < nodes.length; i++) {
      const n = nodes[i]!;
      if (!isValidName(n.name)) fail(`invalid name ${JSON.stringify(n.name)}`);
      if (i > 0 && compareNames(nodes[i - 1]!.name, n.name) >= 0) fail(`names not strictly sorted at ${JSON.stringify(n.name)}`);
    }
    return Buffer.from(JSON.stringify(tree.root ? { nodes, root: tree.root } : { nodes }));
  }
  const nodes = tree.nodes.slice().sort((a, b) => compareNames(a.name, b.name));
  const out: Record<string, unknown>[] = new Array(nodes.length);
  for (let i = 0; i < nodes.length; i++) {
    const n = nodes[i]!;
    if (!isValidName(n.name)) fail(`invalid name ${JSON.stringify(n.name)}`);
    if (i > 0 && nodes[i - 1]!.name === n.name) fail(`duplicate name ${JSON.stringify(n.name)}`);
    out[i] = canonicalNode(n, true);
  }
  const doc: Record<string, unknown> = { nodes: out };
  if (tree.root) doc.root = canonicalNode(tree.root, false);
  return Buffer.from(JSON.stringify(doc));
}

/**
 * Decode a tree the backup itself wrote earlier (a parent tree, verified by
 * its ID on load) for comparison only: JSON plus the type checks the parent
 * skip relies on, without the full validation restore does. Throws
 * IntegrityError when the shape is wrong.
 */
export function decodeParentTree(data: Uint8Array): { nodes: TreeNode[]; root?: Omit<TreeNode, 'name'> } {
  let doc: unknown;
  try {
    doc = JSON.parse(Buffer.from(data.buffer, data.byteOffset, data.byteLength).toString('utf8'));
  } catch (err) {
    throw new IntegrityError('malformed tree: not JSON', { cause: err });
  }
  const nodes = (doc as { nodes?: unknown } | null)?.nodes;
  if (!Array.isArray(nodes)) fail('no nodes');
  for (let i = 0; i < nodes.length; i++) {
    const n = nodes[i] as TreeNode;
    if (typeof n !== 'object' || n === null || typeof n.name !== 'string' || typeof n.type !== 'string') fail(`node ${i}: not a node`);
    if (i > 0 && compareNames((nodes[i - 1] as TreeNode).name, n.name) >= 0) fail(`names not strictly sorted at ${JSON.stringify(n.name)}`);
    if (n.type === 'file') {
      if (typeof n.size !== 'number' || typeof n.mtimeNs !== 'string' || typeof n.ctimeNs !== 'string' || typeof n.inode !== 'string' || !Array.isArray(n.content)) fail(`node ${i}: malformed file`);
      for (const id of n.content) if (typeof id !== 'string' || id.length !== 64) fail(`node ${i}: malformed content`);
      if (n.holes !== undefined && !Array.isArray(n.holes)) fail(`node ${i}: malformed holes`);
    } else if (n.type === 'dir' && n.subtree !== undefined && typeof n.subtree !== 'string') fail(`node ${i}: malformed subtree`);
  }
  const root = (doc as { root?: unknown }).root;
  return { nodes: nodes as TreeNode[], root: typeof root === 'object' && root !== null ? (root as TreeNode) : undefined };
}

function validateNode(raw: unknown, withName: boolean, where: string): TreeNode {
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) fail(`${where}: not an object`);
  const n = raw as Record<string, unknown>;
  if (withName && !isValidName(n.name)) fail(`${where}: invalid name ${JSON.stringify(n.name)}`);
  const at = withName ? `${where} ${JSON.stringify(n.name)}` : where;
  if (typeof n.type !== 'string' || !NODE_TYPES.has(n.type)) fail(`${at}: invalid type`);
  if (!isUint(n.mode, 0o7777)) fail(`${at}: invalid mode`);
  if (!isUint(n.uid, 0xffffffff) || !isUint(n.gid, 0xffffffff)) fail(`${at}: invalid uid/gid`);
  for (const k of ['mtimeNs', 'ctimeNs', 'atimeNs'] as const) {
    if (k === 'atimeNs' && n[k] === undefined) continue;
    if (typeof n[k] !== 'string' || !NS_RE.test(n[k] as string)) fail(`${at}: invalid ${k}`);
  }
  if (typeof n.inode !== 'string' || !INODE_RE.test(n.inode)) fail(`${at}: invalid inode`);
  if (n.size !== undefined && !isUint(n.size)) fail(`${at}: invalid size`);
  if (n.dev !== undefined && !isUint(n.dev)) fail(`${at}: invalid dev`);
  if (n.nlink !== undefined && !isUint(n.nlink)) fail(`${at}: invalid nlink`);
  if (n.rdev !== undefined && !isUint(n.rdev)) fail(`${at}: invalid rdev`);
  if (n.sparse !== undefined && typeof n.sparse !== 'boolean') fail(`${at}: invalid sparse`);
  if (n.xattrs !== undefined) {
    if (typeof n.xattrs !== 'object' || n.xattrs === null || Array.isArray(n.xattrs)) fail(`${at}: invalid xattrs`);
    for (const [k, v] of Object.entries(n.xattrs)) {
      if (k.length === 0 || k.length > 255 || k.includes('\0') || typeof v !== 'string' || !B64_RE.test(v)) fail(`${at}: invalid xattr ${JSON.stringify(k)}`);
    }
  }
  const type = n.type as NodeType;
  if (type === 'file') {
    if (!isUint(n.size)) fail(`${at}: file without size`);
    if (!Array.isArray(n.content)) fail(`${at}: file without content`);
    for (const id of n.content) if (typeof id !== 'string' || !ID_RE.test(id)) fail(`${at}: invalid content id`);
    if (n.holes !== undefined) {
      if (!Array.isArray(n.holes)) fail(`${at}: invalid holes`);
      let end = 0;
      for (const h of n.holes) {
        if (!Array.isArray(h) || h.length !== 2 || !isUint(h[0]) || !isUint(h[1]) || h[1] === 0 || h[0] < end) fail(`${at}: invalid hole`);
        end = h[0] + h[1];
        if (end > n.size) fail(`${at}: hole beyond the end of the file`);
      }
    }
  } else {
    if (n.content !== undefined || n.holes !== undefined) fail(`${at}: content on a ${type}`);
  }
  if (type === 'dir') {
    if (withName && (typeof n.subtree !== 'string' || !ID_RE.test(n.subtree))) fail(`${at}: directory without subtree`);
  } else if (n.subtree !== undefined) fail(`${at}: subtree on a ${type}`);
  if (type === 'symlink') {
    if (typeof n.linkTarget !== 'string' || n.linkTarget.length === 0 || n.linkTarget.includes('\0')) fail(`${at}: invalid symlink target`);
  } else if (n.linkTarget !== undefined) fail(`${at}: linkTarget on a ${type}`);
  if ((type === 'chardev' || type === 'blockdev') && n.rdev === undefined) fail(`${at}: device without rdev`);
  return n as unknown as TreeNode;
}

/** Decode and validate a tree blob. Throws IntegrityError for anything malformed or hostile. */
export function decodeTree(data: Uint8Array | string): Tree {
  let doc: unknown;
  try {
    doc = JSON.parse(typeof data === 'string' ? data : Buffer.from(data.buffer, data.byteOffset, data.byteLength).toString('utf8'));
  } catch (err) {
    throw new IntegrityError('malformed tree: not JSON', { cause: err });
  }
  if (typeof doc !== 'object' || doc === null || !Array.isArray((doc as { nodes?: unknown }).nodes)) fail('no nodes');
  const rawNodes = (doc as { nodes: unknown[] }).nodes;
  const nodes: TreeNode[] = new Array(rawNodes.length);
  for (let i = 0; i < rawNodes.length; i++) {
    const n = validateNode(rawNodes[i], true, `node ${i}`);
    if (i > 0 && compareNames(nodes[i - 1]!.name, n.name) >= 0) fail(`names not strictly sorted at ${JSON.stringify(n.name)}`);
    nodes[i] = n;
  }
  const tree: Tree = { nodes };
  const root = (doc as { root?: unknown }).root;
  if (root !== undefined) {
    const r = validateNode(root, false, 'root');
    if (r.type !== 'dir') fail('root is not a directory');
    tree.root = r;
  }
  return tree;
}

/** Linux dev_t → [major, minor] (glibc encoding). */
export function splitDev(rdev: number): [number, number] {
  const v = BigInt(rdev);
  const major = Number(((v >> 8n) & 0xfffn) | ((v >> 32n) & ~0xfffn));
  const minor = Number((v & 0xffn) | ((v >> 12n) & ~0xffn));
  return [major, minor];
}
