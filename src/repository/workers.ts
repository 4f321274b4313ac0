/**
 * A pool of worker threads that compress (zstd) and seal (AES-256-GCM) blobs,
 * so compression — the dominant cost of a backup — uses every core while the
 * main thread reads, chunks and hashes.
 *
 * Blobs are sent in batches (one transferred buffer per batch) so 100k small
 * files do not cost 100k messages.
 */
import { Worker } from 'node:worker_threads';
import { createRequire } from 'node:module';
import { availableParallelism } from 'node:os';

/** Stored form of one blob. flags bit 0: zstd-compressed. */
export interface Packed {
  stored: Buffer;
  flags: number;
}

const workerSource = `
const { parentPort, workerData } = require('node:worker_threads');
const { createCipheriv, randomBytes } = require('node:crypto');
const zstd = require(workerData.zstdPath);
const compressor = new zstd.Compressor();
compressor.setParameters({ compressionLevel: workerData.level });
const encKey = workerData.encKey ? Buffer.from(workerData.encKey) : undefined;
function seal(plain) {
  if (!encKey) return plain;
  const nonce = randomBytes(12);
  const c = createCipheriv('aes-256-gcm', encKey, nonce);
  const a = c.update(plain); const b = c.final();
  return Buffer.concat([nonce, a, b, c.getAuthTag()]);
}
parentPort.on('message', (msg) => {
  const input = Buffer.from(msg.buf);
  const outs = []; const flags = []; let total = 0; let off = 0;
  for (const len of msg.lens) {
    const raw = input.subarray(off, off + len); off += len;
    let body = raw; let f = 0;
    if (len >= 64) {
      const c = compressor.compress(raw);
      if (c.length < len) { body = c; f = 1; }
    }
    const sealed = seal(body);
    outs.push(sealed); flags.push(f); total += sealed.length;
  }
  const out = Buffer.allocUnsafeSlow(total); let p = 0; const lens = [];
  for (const o of outs) { o.copy(out, p); p += o.length; lens.push(o.length); }
  parentPort.postMessage({ id: msg.id, buf: out.buffer, lens, flags }, [out.buffer]);
});
`;

interface Pending {
  data: Buffer;
  resolve: (p: Packed) => void;
  reject: (e: unknown) => void;
}

interface Batch {
  items: Pending[];
  worker: number;
  bytes: number;
}

export class CompressPool {
  #workers: Worker[] = [];
  #busy: number[] = [];
  #inflight = new Map<number, Batch>();
  #nextId = 1;
  #batch: Pending[] = [];
  #batchBytes = 0;
  #scheduled = false;
  #closed = false;

  constructor(level: number, encKey: Buffer | undefined, threads = Math.max(1, availableParallelism())) {
    const zstdPath = createRequire(import.meta.url).resolve('zstd-napi');
    for (let i = 0; i < threads; i++) {
      const w = new Worker(workerSource, {
        eval: true,
        workerData: { zstdPath, level, encKey: encKey ? new Uint8Array(encKey) : undefined },
      });
      w.unref();
      w.on('message', (m: { id: number; buf: ArrayBuffer; lens: number[]; flags: number[] }) => this.#onResult(i, m));
      w.on('error', (err) => this.#failAll(err));
      this.#workers.push(w);
      this.#busy.push(0);
    }
  }

  /** Compress and seal one blob on a worker thread. */
  pack(data: Buffer): Promise<Packed> {
    if (this.#closed) return Promise.reject(new Error('compression pool closed'));
    return new Promise<Packed>((resolve, reject) => {
      this.#batch.push({ data, resolve, reject });
      this.#batchBytes += data.length;
      if (this.#batchBytes >= 4 << 20 || this.#batch.length >= 512) this.#dispatch();
      else if (!this.#scheduled) {
        this.#scheduled = true;
        setImmediate(() => {
          this.#scheduled = false;
          this.#dispatch();
        });
      }
    });
  }

  #dispatch(): void {
    if (this.#batch.length === 0) return;
    const items = this.#batch;
    this.#batch = [];
    this.#batchBytes = 0;
    let total = 0;
    for (const it of items) total += it.data.length;
    const buf = new ArrayBuffer(total);
    const view = new Uint8Array(buf);
    let off = 0;
    const lens: number[] = [];
    for (const it of items) {
      view.set(it.data, off);
      off += it.data.length;
      lens.push(it.data.length);
    }
    let w = 0;
    for (let i = 1; i < this.#workers.length; i++) if (this.#busy[i]! < this.#busy[w]!) w = i;
    const id = this.#nextId++;
    this.#inflight.set(id, { items, worker: w, bytes: total });
    this.#busy[w]! += total;
    this.#workers[w]!.ref();
    this.#workers[w]!.postMessage({ id, buf, lens }, [buf]);
  }

  #onResult(worker: number, m: { id: number; buf: ArrayBuffer; lens: number[]; flags: number[] }): void {
    const batch = this.#inflight.get(m.id);
    if (!batch) return;
    this.#inflight.delete(m.id);
    this.#busy[worker]! -= batch.bytes;
    if (this.#busy[worker] === 0) this.#workers[worker]!.unref();
    const out = Buffer.from(m.buf);
    let off = 0;
    batch.items.forEach((it, i) => {
      const len = m.lens[i]!;
      it.resolve({ stored: out.subarray(off, off + len), flags: m.flags[i]! });
      off += len;
    });
  }

  #failAll(err: unknown): void {
    for (const b of this.#inflight.values()) for (const it of b.items) it.reject(err);
    this.#inflight.clear();
    for (const it of this.#batch) it.reject(err);
    this.#batch = [];
  }

  /** Stop the workers; pending work is rejected. */
  async close(): Promise<void> {
    this.#closed = true;
    this.#failAll(new Error('compression pool closed'));
    await Promise.all(this.#workers.map((w) => w.terminate()));
  }
}
