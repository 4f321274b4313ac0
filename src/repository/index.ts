/**
 * The index: where each blob lives. The union of all index/<id> files.
 * Each file: {version: 1, packs: [{id, blobs: PackEntry[]}]} (structured, see crypto.ts).
 * Index files are named by the plain BLAKE3 of their bytes and never change;
 * an index can always be rebuilt from the pack headers (rebuild.ts).
 *
 * In memory: an open-addressing hash table on typed arrays, keyed by the 32
 * ID bytes (blob IDs are keyed hashes, so their first word is a uniform hash).
 * Against a Map of hex strings to tuples this takes no object per blob (less
 * heap and GC) and can be saved and loaded as a few flat arrays (index-cache.ts).
 */
import { IntegrityError } from '../errors.js';
import type { BlobType } from './types.js';
import { type PackEntry, validateEntries } from './pack.js';

export interface BlobLocation {
  pack: string;
  type: BlobType;
  offset: number;
  length: number;
  rawLength: number;
  flags: number;
}

export interface IndexFile {
  version: 1;
  packs: { id: string; blobs: PackEntry[] }[];
}

/** The blobs of an index, as flat arrays (one element per blob; keys: 8 words per blob). */
export interface IndexArrays {
  keys: Uint32Array;
  pack: Int32Array;
  type: Uint8Array;
  offset: Float64Array;
  length: Float64Array;
  rawLength: Float64Array;
  flags: Int32Array;
}

const WORDS = 8;
const HEX_ID = /^[0-9a-f]{64}$/;

export class MasterIndex {
  #cap = 0;
  #mask = 0;
  #count = 0;
  #keys = new Uint32Array(0);
  /** Pack number per slot; -1 marks an empty slot. */
  #pack = new Int32Array(0);
  #type = new Uint8Array(0);
  #offset = new Float64Array(0);
  #length = new Float64Array(0);
  #rawLength = new Float64Array(0);
  #flags = new Int32Array(0);
  /** Scratch for the ID being looked up, as bytes and as words (aligned: its own buffer). */
  #idBuf = Buffer.from(new ArrayBuffer(32));
  #idWords = new Uint32Array(this.#idBuf.buffer, 0, WORDS);
  #packs: string[] = [];
  #packNo = new Map<string, number>();
  /** Per pack number: end of its last indexed blob, and whether it holds data blobs (tree-only packs are read whole). */
  #packEnd: number[] = [];
  #packHasData: boolean[] = [];
  /** Index file IDs merged into this index. */
  readonly files = new Set<string>();

  constructor() {
    this.#resize(1024);
  }

  get size(): number {
    return this.#count;
  }

  #resize(cap: number): void {
    const old = { keys: this.#keys, pack: this.#pack, type: this.#type, offset: this.#offset, length: this.#length, rawLength: this.#rawLength, flags: this.#flags };
    const oldCap = this.#cap;
    this.#cap = cap;
    this.#mask = cap - 1;
    this.#keys = new Uint32Array(cap * WORDS);
    this.#pack = new Int32Array(cap).fill(-1);
    this.#type = new Uint8Array(cap);
    this.#offset = new Float64Array(cap);
    this.#length = new Float64Array(cap);
    this.#rawLength = new Float64Array(cap);
    this.#flags = new Int32Array(cap);
    this.#count = 0;
    for (let i = 0; i < oldCap; i++) {
      if (old.pack[i] === -1) continue;
      this.#insert(old.keys, i * WORDS, old.pack[i]!, old.type[i]!, old.offset[i]!, old.length[i]!, old.rawLength[i]!, old.flags[i]!);
    }
  }

  /** The slot holding the ID whose words start at keys[at], or the empty slot where it would go (as ~slot). */
  #find(keys: Uint32Array, at: number): number {
    const k = this.#keys;
    const p = this.#pack;
    let h = keys[at]! & this.#mask;
    for (;;) {
      if (p[h] === -1) return ~h;
      const b = h * WORDS;
      if (
        k[b] === keys[at] &&
        k[b + 1] === keys[at + 1] &&
        k[b + 2] === keys[at + 2] &&
        k[b + 3] === keys[at + 3] &&
        k[b + 4] === keys[at + 4] &&
        k[b + 5] === keys[at + 5] &&
        k[b + 6] === keys[at + 6] &&
        k[b + 7] === keys[at + 7]
      ) {
        return h;
      }
      h = (h + 1) & this.#mask;
    }
  }

  /** Insert unless present (the first location of a blob wins). */
  #insert(keys: Uint32Array, at: number, pack: number, type: number, offset: number, length: number, rawLength: number, flags: number): void {
    if ((this.#count + 1) * 2 > this.#cap) this.#resize(this.#cap * 2);
    const s = this.#find(keys, at);
    if (s >= 0) return;
    const h = ~s;
    const k = this.#keys;
    const b = h * WORDS;
    for (let w = 0; w < WORDS; w++) k[b + w] = keys[at + w]!;
    this.#pack[h] = pack;
    this.#type[h] = type;
    this.#offset[h] = offset;
    this.#length[h] = length;
    this.#rawLength[h] = rawLength;
    this.#flags[h] = flags;
    this.#count++;
  }

  /** The slot of a hex ID, or -1. */
  #slot(id: string): number {
    if (id.length !== 64 || this.#idBuf.write(id, 'hex') !== 32) return -1;
    const s = this.#find(this.#idWords, 0);
    return s >= 0 ? s : -1;
  }

  has(id: string): boolean {
    return this.#slot(id) >= 0;
  }

  get(id: string): BlobLocation | undefined {
    const s = this.#slot(id);
    if (s < 0) return undefined;
    return this.#location(s);
  }

  #location(s: number): BlobLocation {
    return {
      pack: this.#packs[this.#pack[s]!]!,
      type: this.#type[s] === 0 ? 'data' : 'tree',
      offset: this.#offset[s]!,
      length: this.#length[s]!,
      rawLength: this.#rawLength[s]!,
      flags: this.#flags[s]!,
    };
  }

  /** The number of a pack, registered on first use. */
  #packNumber(packId: string): number {
    let no = this.#packNo.get(packId);
    if (no === undefined) {
      no = this.#packs.length;
      this.#packs.push(packId);
      this.#packNo.set(packId, no);
      this.#packEnd.push(0);
      this.#packHasData.push(false);
    }
    return no;
  }

  addPack(packId: string, entries: PackEntry[]): void {
    const no = this.#packNumber(packId);
    let end = this.#packEnd[no]!;
    let hasData = this.#packHasData[no]!;
    for (const [id, t, offset, length, rawLength, flags] of entries) {
      if (offset + length > end) end = offset + length;
      if (t === 'd') hasData = true;
      if (this.#idBuf.write(id, 'hex') !== 32) throw new IntegrityError(`pack ${packId}: malformed blob id`);
      this.#insert(this.#idWords, 0, no, t === 'd' ? 0 : 1, offset, length, rawLength, flags);
    }
    this.#packEnd[no] = end;
    this.#packHasData[no] = hasData;
  }

  /**
   * What the index knows of a pack: the end of its last blob (the header
   * follows) and whether it holds any data blob. Undefined for unknown packs.
   */
  packInfo(packId: string): { blobsEnd: number; hasData: boolean } | undefined {
    const no = this.#packNo.get(packId);
    if (no === undefined) return undefined;
    return { blobsEnd: this.#packEnd[no]!, hasData: this.#packHasData[no]! };
  }

  merge(fileId: string, file: IndexFile): void {
    if (!file || file.version !== 1 || !Array.isArray(file.packs)) throw new IntegrityError(`index ${fileId}: malformed`);
    for (const p of file.packs) {
      if (typeof p?.id !== 'string' || !HEX_ID.test(p.id)) throw new IntegrityError(`index ${fileId}: malformed pack id`);
      this.addPack(p.id, validateEntries(p.blobs, Number.MAX_SAFE_INTEGER, `index ${fileId}`));
    }
    this.files.add(fileId);
  }

  /** Pack IDs referenced by the index. */
  packIds(): string[] {
    return [...this.#packs];
  }

  /** Every blob with its location. */
  *entries(): Generator<[string, BlobLocation]> {
    const keys = Buffer.from(this.#keys.buffer, this.#keys.byteOffset, this.#keys.byteLength);
    for (let s = 0; s < this.#cap; s++) {
      if (this.#pack[s] === -1) continue;
      yield [keys.toString('hex', s * 32, s * 32 + 32), this.#location(s)];
    }
  }

  // ---- flat form (index-cache.ts) -----------------------------------------

  /** The packs (ID, end of blobs, holds data) and the blobs as flat arrays, pack numbers into that list. */
  exportArrays(into?: IndexArrays): { packs: { id: string; end: number; hasData: boolean }[]; blobs: IndexArrays } {
    const n = this.#count;
    const blobs: IndexArrays = into ?? {
      keys: new Uint32Array(n * WORDS),
      pack: new Int32Array(n),
      type: new Uint8Array(n),
      offset: new Float64Array(n),
      length: new Float64Array(n),
      rawLength: new Float64Array(n),
      flags: new Int32Array(n),
    };
    if (blobs.pack.length !== n || blobs.keys.length !== n * WORDS) throw new RangeError(`exportArrays: arrays for ${blobs.pack.length} blobs, the index has ${n}`);
    const { keys, pack, type, offset, length, rawLength, flags } = blobs;
    const k = this.#keys;
    const p = this.#pack;
    let j = 0;
    for (let s = 0; s < this.#cap; s++) {
      if (p[s] === -1) continue;
      // Word by word: a subarray per slot would allocate ~100k views.
      const a = s * WORDS;
      const b = j * WORDS;
      for (let w = 0; w < WORDS; w++) keys[b + w] = k[a + w]!;
      pack[j] = p[s]!;
      type[j] = this.#type[s]!;
      offset[j] = this.#offset[s]!;
      length[j] = this.#length[s]!;
      rawLength[j] = this.#rawLength[s]!;
      flags[j] = this.#flags[s]!;
      j++;
    }
    const packs = this.#packs.map((id, i) => ({ id, end: this.#packEnd[i]!, hasData: this.#packHasData[i]! }));
    return { packs, blobs };
  }

  /** Merge packs and blobs in the flat form (pack numbers index `packs`). The caller has validated them. */
  importArrays(packs: { id: string; end: number; hasData: boolean }[], blobs: IndexArrays): void {
    const nos = packs.map((p) => {
      const no = this.#packNumber(p.id);
      if (p.end > this.#packEnd[no]!) this.#packEnd[no] = p.end;
      if (p.hasData) this.#packHasData[no] = true;
      return no;
    });
    const n = blobs.pack.length;
    let cap = this.#cap;
    while ((this.#count + n) * 2 > cap) cap *= 2;
    if (cap !== this.#cap) this.#resize(cap);
    for (let i = 0; i < n; i++) {
      this.#insert(blobs.keys, i * WORDS, nos[blobs.pack[i]!]!, blobs.type[i]!, blobs.offset[i]!, blobs.length[i]!, blobs.rawLength[i]!, blobs.flags[i]!);
    }
  }
}
