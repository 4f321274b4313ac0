/**
 * Reusable ArrayBuffers for the big, short-lived buffers of a backup (batches
 * sent to worker threads and back, packs being filled and written).
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
    let size = Math.max(1, this.minSize);
    while (size < n) size *= 2;
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
