/**
 * Tar export of a stored tree, streamed with tar-stream: directories, files,
 * hardlinks ("link" entries to the first exported path of the same
 * dev+inode), symlinks, fifos and device nodes, with mode, numeric uid/gid and
 * mtime. Pax extended headers are added only where ustar cannot say it (long
 * or non-ASCII names and link targets, ids above 262143, times outside
 * 1970–2038, extended attributes as SCHILY.xattr.* when the value is valid
 * UTF-8), so GNU tar extracts the archive faithfully (`tar -x --xattrs` for
 * attributes; `--numeric-owner` is implied since no user/group names are
 * written). Sockets are left out (tar cannot hold them); holes are written as
 * zeros; the backup root's own metadata is not an entry.
 *
 * Blobs are loaded ahead of the writer across entries (a bounded window), and
 * the archive is written with the output's backpressure. `out` is not ended.
 */
import { once } from 'node:events';
import tarStream from 'tar-stream';
import type { Header } from 'tar-stream';
import { IntegrityError, InterruptedError } from '../../src/errors.js';
import type { BlobId, BlobStore } from '../../src/repository/types.js';
import type { EngineContext } from '../engine.js';
import { compileIncludes } from './select.js';
import { splitDev, type TreeNode } from './tree.js';
import { loadTree, walkTree, type WalkEvent } from './walk.js';

/** Options of exportTar. */
export interface ExportTarOptions {
  /** Globs on relative paths; an entry is exported when it or an ancestor matches (its ancestors are exported too). */
  include?: string[];
  /** Also write nanosecond mtime/atime/ctime in pax headers (bigger archive; GNU tar honours mtime). */
  preciseTimes?: boolean;
}

/** What was exported. */
export interface ExportTarResult {
  entries: number;
  files: number;
  /** File content bytes. */
  bytes: number;
  /** Entries tar cannot represent (sockets). */
  skipped: number;
}

const MAX_USTAR_ID = 0o777777;

type TarHeader = Partial<Header> & { name: string; pax?: Record<string, string> };
type Sink = NodeJS.WritableStream & NodeJS.EventEmitter;
const ZEROS = Buffer.alloc(1 << 20);
const LOOKAHEAD_BLOBS = 16;
const LOOKAHEAD_EVENTS = 1024;

/** An entry to write, with the positions of its blobs in the load queue. */
interface Item {
  ev: WalkEvent;
  /** For regular files: first exported path of the same inode, when this is a hardlink to it. */
  linkTo?: string;
  /** Emit the ancestor directories first (lazily created for include filters). */
  ancestors?: TreeNode[];
  ancestorRels?: string[];
}

interface Load {
  id: BlobId;
  p?: Promise<Buffer>;
}

function nsToDate(ns: string): Date {
  return new Date(Number(BigInt(ns) / 1_000_000n));
}

function nsPax(ns: string): string {
  const v = BigInt(ns);
  const neg = v < 0n;
  const a = neg ? -v : v;
  const s = a / 1_000_000_000n;
  const f = (a % 1_000_000_000n).toString().padStart(9, '0');
  return `${neg ? '-' : ''}${s}.${f}`;
}

function isUtf8(b: Buffer): boolean {
  return Buffer.from(b.toString('utf8'), 'utf8').equals(b);
}

class TarExport {
  readonly result: ExportTarResult = { entries: 0, files: 0, bytes: 0, skipped: 0 };
  private readonly pack = tarStream.pack();
  private readonly loads: Load[] = [];
  private loadHead = 0;
  private loadsStarted = 0;
  private readonly links = new Map<string, string>();
  private readonly stack: { rel: string; node: TreeNode; emitted: boolean }[] = [];
  private warnedXattr = false;

  constructor(
    private readonly rootId: BlobId,
    private readonly out: NodeJS.WritableStream,
    private readonly opts: ExportTarOptions,
    private readonly ctx: EngineContext,
  ) {}

  async run(): Promise<ExportTarResult> {
    const pump = this.pumpOut();
    pump.catch(() => {});
    try {
      await this.produce();
      this.pack.finalize();
      await pump;
    } catch (err) {
      this.pack.destroy(err as Error);
      await pump.catch(() => {});
      throw err;
    }
    return this.result;
  }

  /** Copy the archive to `out`, honouring its backpressure. */
  private async pumpOut(): Promise<void> {
    const out = this.out as NodeJS.WritableStream & NodeJS.EventEmitter;
    let outErr: unknown;
    const onErr = (e: unknown) => {
      outErr ??= e;
      this.pack.destroy(e as Error);
    };
    out.on('error', onErr);
    try {
      for await (const chunk of this.pack as AsyncIterable<Buffer>) {
        if (outErr) throw outErr;
        if (!out.write(chunk)) await Promise.race([once(out, 'drain'), once(out, 'error').then(([e]) => Promise.reject(e))]);
      }
      if (outErr) throw outErr;
    } finally {
      out.off('error', onErr);
    }
  }

  // ---- blob lookahead ---------------------------------------------------------

  private fillLoads(): void {
    const repo: BlobStore = this.ctx.repo;
    while (this.loadsStarted < this.loads.length && this.loadsStarted - this.loadHead < LOOKAHEAD_BLOBS) {
      const l = this.loads[this.loadsStarted++]!;
      l.p = repo.loadBlob('data', l.id);
      l.p.catch(() => {});
    }
  }

  private async nextBlob(): Promise<Buffer> {
    const l = this.loads[this.loadHead]!;
    if (!l.p) this.fillLoads();
    const data = await l.p!;
    this.loads[this.loadHead++] = undefined as unknown as Load;
    if (this.loadHead > 4096 && this.loadHead * 2 > this.loads.length) {
      this.loads.splice(0, this.loadHead);
      this.loadsStarted -= this.loadHead;
      this.loadHead = 0;
    }
    this.fillLoads();
    return data;
  }

  // ---- traversal ------------------------------------------------------------------

  private async produce(): Promise<void> {
    const { ctx } = this;
    const sel = compileIncludes(this.opts.include);
    const root = await loadTree(ctx.repo, this.rootId);
    const it = walkTree(ctx.repo, root, sel, ctx.signal)[Symbol.asyncIterator]();
    const queue: Item[] = [];
    let qHead = 0;
    let done = false;
    // Read events ahead (planning hardlinks and blob loads), write them in order.
    const pull = async (): Promise<void> => {
      while (!done && queue.length - qHead < LOOKAHEAD_EVENTS && this.loads.length - this.loadHead < LOOKAHEAD_BLOBS * 4) {
        const r = await it.next();
        if (r.done) {
          done = true;
          break;
        }
        const item = this.plan(r.value);
        if (item) queue.push(item);
      }
      this.fillLoads();
    };
    for (;;) {
      if (ctx.signal.aborted) throw new InterruptedError();
      if (qHead === queue.length) {
        if (done) break;
        queue.length = 0;
        qHead = 0;
        await pull();
        continue;
      }
      const item = queue[qHead++]!;
      await this.write(item);
      if (!done && queue.length - qHead < LOOKAHEAD_EVENTS / 2) await pull();
    }
  }

  /** Decide what an event becomes (in event order): an entry, with its ancestors, or nothing. */
  private plan(ev: WalkEvent): Item | undefined {
    if (ev.kind === 'leave') {
      if (ev.node.type === 'dir') this.stack.pop();
      return undefined;
    }
    const node = ev.node;
    if (node.type === 'dir') this.stack.push({ rel: ev.rel, node, emitted: false });
    if (!ev.selected) return undefined;
    const item: Item = { ev };
    for (const d of this.stack) {
      if (d.emitted) continue;
      d.emitted = true;
      if (d.rel === ev.rel) continue;
      (item.ancestors ??= []).push(d.node);
      (item.ancestorRels ??= []).push(d.rel);
    }
    if (node.type === 'file') {
      if (node.nlink !== undefined && node.nlink > 1) {
        const key = `${node.dev ?? ''}:${node.inode}`;
        const first = this.links.get(key);
        if (first !== undefined) {
          item.linkTo = first;
          return item;
        }
        this.links.set(key, ev.rel);
      }
      for (const id of node.content ?? []) this.loads.push({ id });
    }
    return item;
  }

  private header(rel: string, node: TreeNode): TarHeader {
    const pax: Record<string, string> = {};
    const h: TarHeader = {
      name: node.type === 'dir' ? rel + '/' : rel,
      mode: node.mode,
      uid: node.uid > MAX_USTAR_ID ? 0 : node.uid,
      gid: node.gid > MAX_USTAR_ID ? 0 : node.gid,
      mtime: nsToDate(node.mtimeNs),
    };
    if (node.uid > MAX_USTAR_ID) pax.uid = String(node.uid);
    if (node.gid > MAX_USTAR_ID) pax.gid = String(node.gid);
    const secs = Number(BigInt(node.mtimeNs) / 1_000_000_000n);
    if (this.opts.preciseTimes) {
      pax.mtime = nsPax(node.mtimeNs);
      if (node.atimeNs !== undefined) pax.atime = nsPax(node.atimeNs);
      pax.ctime = nsPax(node.ctimeNs);
    } else if (secs < 0 || secs > 0x7fffffff) {
      pax.mtime = nsPax(node.mtimeNs);
      h.mtime = new Date(0);
    }
    if (node.xattrs) {
      for (const [k, v] of Object.entries(node.xattrs)) {
        const raw = Buffer.from(v, 'base64');
        if (isUtf8(raw) && !k.includes('=') && !k.includes('\n')) pax[`SCHILY.xattr.${k}`] = raw.toString('utf8');
        else if (!this.warnedXattr) {
          this.warnedXattr = true;
          this.ctx.log.warn(`tar export: binary extended attributes (e.g. ${k} on ${rel}) cannot be written by tar-stream and are left out`);
        }
      }
    }
    if (Object.keys(pax).length > 0) h.pax = pax;
    return h;
  }

  private async entry(h: TarHeader, body?: (sink: Sink) => Promise<void>): Promise<void> {
    let sink!: Sink;
    const finished = new Promise<void>((resolve, reject) => {
      sink = this.pack.entry(h, (err) => (err ? reject(err) : resolve())) as unknown as Sink;
      sink.on("error", () => {}); // failures arrive through the entry callback and the pack; never an unhandled event
    });
    finished.catch(() => {});
    if (body) {
      await body(sink);
      sink.end();
    }
    await finished;
    this.result.entries++;
  }

  private async writeTo(sink: Sink, buf: Buffer): Promise<void> {
    if (!sink.write(buf)) await once(sink, 'drain');
  }

  private async write(item: Item): Promise<void> {
    if (item.ancestors) {
      for (let i = 0; i < item.ancestors.length; i++) await this.entry({ ...this.header(item.ancestorRels![i]!, item.ancestors[i]!), type: 'directory' });
    }
    const { rel, node } = item.ev;
    switch (node.type) {
      case 'dir':
        return this.entry({ ...this.header(rel, node), type: 'directory' });
      case 'symlink':
        return this.entry({ ...this.header(rel, node), type: 'symlink', linkname: node.linkTarget });
      case 'fifo':
        return this.entry({ ...this.header(rel, node), type: 'fifo' });
      case 'chardev':
      case 'blockdev': {
        const [devmajor, devminor] = splitDev(node.rdev ?? 0);
        return this.entry({ ...this.header(rel, node), type: node.type === 'chardev' ? 'character-device' : 'block-device', devmajor, devminor });
      }
      case 'socket':
        this.result.skipped++;
        this.ctx.log.debug(`tar export: ${rel} is a socket, left out`);
        return;
      case 'file':
        break;
      default:
        return;
    }
    if (item.linkTo !== undefined) {
      this.result.files++;
      return this.entry({ ...this.header(rel, node), type: 'link', linkname: item.linkTo });
    }
    const size = node.size ?? 0;
    const content = node.content ?? [];
    const holes = node.holes ?? [];
    this.result.files++;
    await this.entry({ ...this.header(rel, node), type: 'file', size }, async (sink) => {
      let pos = 0;
      let hi = 0;
      const zeros = async (n: number) => {
        while (n > 0) {
          const k = Math.min(n, ZEROS.length);
          await this.writeTo(sink, ZEROS.subarray(0, k));
          n -= k;
          pos += k;
        }
      };
      for (let i = 0; i < content.length; i++) {
        while (hi < holes.length && holes[hi]![0] === pos) await zeros(holes[hi++]![1]);
        const data = await this.nextBlob();
        const n = Math.min(data.length, size - pos);
        if (n < data.length) throw new IntegrityError(`${rel}: content is longer than the recorded size`);
        await this.writeTo(sink, data);
        pos += data.length;
        this.ctx.progress.advance(data.length, 0);
      }
      while (hi < holes.length && holes[hi]![0] === pos) await zeros(holes[hi++]![1]);
      if (pos < size) throw new IntegrityError(`${rel}: content is shorter than the recorded size`);
    });
    this.result.bytes += size;
    this.ctx.progress.advance(0, 1);
  }
}

/**
 * Stream the tree `root` as a tar archive into `out` (not ended). Resolves
 * once the last byte was handed to `out`.
 */
export async function exportTar(root: BlobId, out: NodeJS.WritableStream, opts: ExportTarOptions, ctx: EngineContext): Promise<ExportTarResult> {
  return new TarExport(root, out, opts, ctx).run();
}
