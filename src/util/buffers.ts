/** The power-of-two size class (at least `minSize`) that holds `n` bytes. */
function sizeClass(n: number, minSize: number): number {
  let size = Math.max(1, minSize);
  while (size < n) size *= 2;
  return size;
}

/**
 * Reusable ArrayBuffers for the big, short-lived buffers of the main thread
 * (packs being filled and written; buffers lent to worker threads come from
 * SharedBufferPool below).
 *
 * Why: a buffer that lives through a few young-generation collections is only
 * freed by a full collection, which V8 starts late (after tens of MiB of
 * external memory have grown), so a stream of fresh multi-MiB buffers keeps
 * hundreds of MiB of garbage resident. Buffers handed back here are used again.
 *
 * Sizes are powers of two (at least `minSize`), so a buffer serves every
 * request of its class; pages of a buffer never written are not resident.
 */
export class BufferPool {
  #free = new Map<number, ArrayBuffer[]>();

  /**
   * @param keep  buffers kept per size class at most (others are left to the GC)
   * @param minSize  smallest buffer handed out
   */
  constructor(
    private readonly keep: number,
    private readonly minSize: number,
  ) {}

  /** A buffer of at least `n` bytes (contents undefined). */
  take(n: number): ArrayBuffer {
    const size = sizeClass(n, this.minSize);
    return this.#free.get(size)?.pop() ?? new ArrayBuffer(size);
  }

  /** Hand a buffer of take() back; nothing may use it afterwards. Detached (transferred) buffers are ignored. */
  give(b: ArrayBuffer): void {
    if (b.byteLength === 0) return;
    let list = this.#free.get(b.byteLength);
    if (list === undefined) this.#free.set(b.byteLength, (list = []));
    if (list.length < this.keep) list.push(b);
  }
}

/** How a message names a shared buffer: its number, and the buffer itself the first time a thread sees it. */
export interface SlabRef {
  slab: number;
  sab?: SharedArrayBuffer;
}

/**
 * Buffers lent to worker threads without transfers: SharedArrayBuffers, each
 * posted to a thread once and named by its number afterwards.
 *
 * Why: every transferred ArrayBuffer becomes a new ArrayBuffer object on the
 * receiving side, and V8 counts its whole size as new external memory. A
 * backup moves gigabytes through its threads, so transfers alone started a
 * full garbage collection every 64 MiB (142 of them on the bench dataset,
 * about 5% of its CPU), each freeing nothing but the shells of buffers in use.
 * A shared buffer posted again would cost the same, hence the numbers.
 *
 * The lending protocol is the one transfers enforced: the main thread does not
 * touch a buffer between lending it and the thread's reply. Buffers are never
 * freed while the pool lives (the threads keep them); they are reused by size
 * class (powers of two, at least `minSize`), and pages never written are not
 * resident.
 */
export class SharedBufferPool {
  #free = new Map<number, SharedArrayBuffer[]>();
  #ids = new Map<SharedArrayBuffer, number>();
  #isFree = new Set<SharedArrayBuffer>();
  /** Per thread, the numbers it has been sent. */
  #seen: Set<number>[] = [];

  constructor(private readonly minSize: number) {}

  /** A buffer of at least `n` bytes (contents undefined). */
  take(n: number): SharedArrayBuffer {
    const size = sizeClass(n, this.minSize);
    const b = this.#free.get(size)?.pop();
    if (b !== undefined) {
      this.#isFree.delete(b);
      return b;
    }
    const fresh = new SharedArrayBuffer(size);
    this.#ids.set(fresh, this.#ids.size);
    return fresh;
  }

  /**
   * Hand a buffer of take() back; nothing may use it afterwards. Anything else
   * (an empty buffer of an error result) and a second give are ignored.
   */
  give(b: SharedArrayBuffer): void {
    if (!this.#ids.has(b) || this.#isFree.has(b)) return;
    this.#isFree.add(b);
    let list = this.#free.get(b.byteLength);
    if (list === undefined) this.#free.set(b.byteLength, (list = []));
    list.push(b);
  }

  /** The message fields that lend `b` to thread `thread` (see slabOf for the thread's side). */
  lend(b: SharedArrayBuffer, thread: number): SlabRef {
    const slab = this.#ids.get(b);
    if (slab === undefined) throw new Error('SharedBufferPool: not a buffer of this pool');
    const seen = (this.#seen[thread] ??= new Set());
    if (seen.has(slab)) return { slab };
    seen.add(slab);
    return { slab, sab: b };
  }

  /** Bytes of all buffers allocated (in use or free). */
  get allocated(): number {
    let n = 0;
    for (const b of this.#ids.keys()) n += b.byteLength;
    return n;
  }
}

/**
 * The thread's side of SharedBufferPool.lend, as source for `eval` workers:
 * `slabOf(m)` is the buffer a message names (remembered the first time).
 */
export const SLAB_SOURCE = `
const SLABS = [];
function slabOf(m) {
  if (m.sab !== undefined) SLABS[m.slab] = m.sab;
  return SLABS[m.slab];
}
`;
