/**
 * A pool of worker threads that compress (zstd) and seal (AES-256-GCM) blobs,
 * so compression — the dominant cost of a backup — uses every core while the
 * main thread reads, chunks and hashes.
 *
 * Blobs are copied into a batch buffer as they come (so the caller's buffer is
 * free once pack() returns) and sent in batches: 100k small files do not cost
 * 100k messages. The main thread owns every big buffer: it lends a batch's
 * input and an output buffer sized for the worst case to the worker (shared
 * buffers named by number, see SharedBufferPool), which writes the stored
 * forms into it and replies with their lengths; the results are handed to the
 * caller's sink synchronously and the buffers are reused. Memory freed
 * on another thread than the one that allocated it stays in that thread's
 * malloc arena, and fresh multi-MiB buffers wait for a full GC: reuse keeps
 * the resident size flat.
 */
import { Worker } from 'node:worker_threads';
import { createRequire } from 'node:module';
import { availableParallelism } from 'node:os';
import { SLAB_SOURCE, SharedBufferPool } from '../util/buffers.js';
import { addonPath, copyInto } from '../util/native.js';

/**
 * Receives one blob's stored form (flags bit 0: zstd-compressed). `stored` is
 * only valid during the call: copy what must be kept.
 */
export type PackSink = (stored: Buffer, flags: number) => void;

/** A batch is sent once it holds this many bytes or blobs. */
const BATCH_BYTES = 4 << 20;
const BATCH_BLOBS = 512;
/** Nonce and tag of a sealed blob. */
const SEAL_OVERHEAD = 28;
/** Buffer size that holds a full batch's input and its worst-case output. */
const BUFFER_SIZE = BATCH_BYTES + (128 << 10);
/**
 * Batches in flight per worker before a partial batch waits to grow: a stream
 * of tiny batches would otherwise tie up two buffers each.
 */
const BATCHES_PER_WORKER = 2;
/**
 * How long a partial batch waits for more blobs before it is sent (when a worker has room). An
 * incremental backup saves a few thousand small trees and files one by one; sent at the next
 * turn of the event loop each was a batch of its own (a message and a worker wake-up each).
 */
const PARTIAL_WAIT_MS = 2;
/** Young-generation cap of a worker's V8 heap: the workers allocate little JavaScript. */
const WORKER_YOUNG_MB = 4;

const workerSource = `
const { parentPort, workerData } = require('node:worker_threads');
const { createCipheriv, randomFillSync } = require('node:crypto');
const binding = require(workerData.bindingPath);
const cctx = new binding.CCtx();
cctx.setParameter(binding.CParameter.compressionLevel, workerData.level);
const encKey = workerData.encKey ? Buffer.from(workerData.encKey) : undefined;
${SLAB_SOURCE}
// Copies into the shared output buffer: memcpy through the addon when it is there.
const addon = workerData.addonPath ? require(workerData.addonPath) : null;
function put(out, at, src) {
  if (addon) addon.copy(out, at, src); else src.copy(out, at);
  return src.length;
}
let scratch = Buffer.alloc(0);
const SLICE = 64 << 10;
parentPort.on('message', (msg) => {
  const input = Buffer.from(slabOf(msg.input));
  const out = Buffer.from(slabOf(msg.out));
  const lens = []; const flags = [];
  let off = 0; let p = 0;
  for (const len of msg.lens) {
    const raw = input.subarray(off, off + len); off += len;
    let f = 0; let n = len;
    if (!encKey) {
      // Straight into the output; kept raw when compression does not pay.
      if (len >= 64) {
        n = cctx.compress2(out.subarray(p), raw);
        if (n < len) f = 1;
      }
      if (f === 0) n = put(out, p, raw);
    } else {
      let body = raw;
      if (len >= 64) {
        const bound = binding.compressBound(len);
        if (scratch.length < bound) scratch = Buffer.allocUnsafeSlow(Math.max(bound, 1 << 20));
        const c = cctx.compress2(scratch, raw);
        if (c < len) { body = scratch.subarray(0, c); f = 1; }
      }
      randomFillSync(out, p, 12);
      const cipher = createCipheriv('aes-256-gcm', encKey, out.subarray(p, p + 12));
      let q = p + 12;
      // In slices: update() returns a new buffer, and small short-lived ones are
      // reused by this thread's allocator instead of piling up multi-MiB garbage.
      for (let i = 0; i < body.length; i += SLICE) q += put(out, q, cipher.update(body.subarray(i, i + SLICE)));
      q += put(out, q, cipher.final());
      q += put(out, q, cipher.getAuthTag());
      n = q - p;
    }
    p += n; lens.push(n); flags.push(f);
  }
  parentPort.postMessage({ id: msg.id, lens, flags });
});
`;

interface Item {
  len: number;
  sink: PackSink;
  resolve: (storedLength: number) => void;
  reject: (e: unknown) => void;
}

interface Batch {
  input: SharedArrayBuffer;
  view: Uint8Array;
  /** The output buffer, once dispatched. */
  out?: SharedArrayBuffer;
  used: number;
  bound: number;
  items: Item[];
}

interface Result {
  id: number;
  lens: number[];
  flags: number[];
}

export class CompressPool {
  #workers: Worker[] = [];
  #busy: number[] = [];
  #inflight = new Map<number, { batch: Batch; worker: number }>();
  #nextId = 1;
  #batch?: Batch;
  #scheduled = false;
  #closed = false;
  #buffers: SharedBufferPool;
  #compressBound: (n: number) => number;

  constructor(level: number, encKey: Buffer | undefined, threads = Math.max(1, availableParallelism())) {
    const require = createRequire(import.meta.url);
    const bindingPath = require.resolve('zstd-napi/binding');
    this.#compressBound = (require(bindingPath) as { compressBound(n: number): number }).compressBound;
    // Two per batch in flight (input and output, lent to the worker without transfers);
    // the bytes in flight are bounded by the callers (the file engine: 16 MiB of
    // plaintext), so the pool stays about that small.
    this.#buffers = new SharedBufferPool(BUFFER_SIZE);
    for (let i = 0; i < threads; i++) {
      const w = new Worker(workerSource, {
        eval: true,
        workerData: { bindingPath, addonPath, level, encKey: encKey ? new Uint8Array(encKey) : undefined },
        resourceLimits: { maxYoungGenerationSizeMb: WORKER_YOUNG_MB },
      });
      w.unref();
      w.on('message', (m: Result) => this.#onResult(i, m));
      w.on('error', (err) => this.#failAll(err));
      this.#workers.push(w);
      this.#busy.push(0);
    }
  }

  /**
   * Compress and seal one blob on a worker thread. `data` is copied before
   * this returns (the caller may reuse it). `sink` gets the stored form; the
   * promise then resolves with its length (or rejects with what sink threw).
   */
  pack(data: Buffer, sink: PackSink): Promise<number> {
    if (this.#closed) return Promise.reject(new Error('compression pool closed'));
    const len = data.length;
    let b = this.#batch;
    if (b !== undefined && b.used + len > BATCH_BYTES) {
      this.#dispatch();
      b = undefined;
    }
    if (b === undefined) {
      const input = this.#buffers.take(len);
      b = this.#batch = { input, view: new Uint8Array(input), used: 0, bound: 0, items: [] };
    }
    copyInto(b.view, b.used, data);
    b.used += len;
    b.bound += this.#compressBound(len) + SEAL_OVERHEAD;
    const done = new Promise<number>((resolve, reject) => b.items.push({ len, sink, resolve, reject }));
    if (b.used >= BATCH_BYTES || b.items.length >= BATCH_BLOBS) this.#dispatch();
    else if (!this.#scheduled) {
      this.#scheduled = true;
      setTimeout(() => {
        this.#scheduled = false;
        this.#dispatchIfRoom();
      }, PARTIAL_WAIT_MS);
    }
    return done;
  }

  /** Send a partial batch when a worker has room (else it grows until a result comes back). */
  #dispatchIfRoom(): void {
    if (this.#inflight.size < BATCHES_PER_WORKER * this.#workers.length) this.#dispatch();
  }

  #dispatch(): void {
    const b = this.#batch;
    if (b === undefined || this.#closed) return;
    this.#batch = undefined;
    let w = 0;
    for (let i = 1; i < this.#workers.length; i++) if (this.#busy[i]! < this.#busy[w]!) w = i;
    const id = this.#nextId++;
    this.#inflight.set(id, { batch: b, worker: w });
    this.#busy[w]! += b.used;
    this.#workers[w]!.ref();
    const out = (b.out = this.#buffers.take(b.bound));
    const buffers = this.#buffers;
    this.#workers[w]!.postMessage({ id, input: buffers.lend(b.input, w), out: buffers.lend(out, w), lens: b.items.map((it) => it.len) });
  }

  #onResult(worker: number, m: Result): void {
    const entry = this.#inflight.get(m.id);
    if (!entry) return;
    this.#inflight.delete(m.id);
    this.#busy[worker]! -= entry.batch.used;
    if (this.#busy[worker] === 0) this.#workers[worker]!.unref();
    const out = Buffer.from(entry.batch.out!);
    let off = 0;
    entry.batch.items.forEach((it, i) => {
      const len = m.lens[i]!;
      try {
        it.sink(out.subarray(off, off + len), m.flags[i]!);
        it.resolve(len);
      } catch (err) {
        it.reject(err);
      }
      off += len;
    });
    // Every sink has copied what it keeps.
    this.#buffers.give(entry.batch.input);
    this.#buffers.give(entry.batch.out!);
    this.#dispatchIfRoom();
  }

  #failAll(err: unknown): void {
    for (const { batch } of this.#inflight.values()) for (const it of batch.items) it.reject(err);
    this.#inflight.clear();
    for (const it of this.#batch?.items ?? []) it.reject(err);
    this.#batch = undefined;
  }

  /** Stop the workers; pending work is rejected. */
  async close(): Promise<void> {
    this.#closed = true;
    this.#failAll(new Error('compression pool closed'));
    await Promise.all(this.#workers.map((w) => w.terminate()));
  }
}
