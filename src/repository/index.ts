/**
 * The index: where each blob lives. The union of all index/<id> files.
 * Each file: {version: 1, packs: [{id, blobs: PackEntry[]}]} (structured, see crypto.ts).
 * Index files are named by the plain BLAKE3 of their bytes and never change;
 * an index can always be rebuilt from the pack headers (rebuild.ts).
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

export class MasterIndex {
  // Compact representation: one small tuple per blob, pack IDs interned.
  #blobs = new Map<string, [packNo: number, type: number, offset: number, length: number, rawLength: number, flags: number]>();
  #packs: string[] = [];
  #packNo = new Map<string, number>();
  /** Per pack number: end of its last indexed blob, and whether it holds data blobs (tree-only packs are read whole). */
  #packEnd: number[] = [];
  #packHasData: boolean[] = [];
  /** Index file IDs merged into this index. */
  readonly files = new Set<string>();

  get size(): number {
    return this.#blobs.size;
  }

  has(id: string): boolean {
    return this.#blobs.has(id);
  }

  get(id: string): BlobLocation | undefined {
    const e = this.#blobs.get(id);
    if (!e) return undefined;
    return { pack: this.#packs[e[0]]!, type: e[1] === 0 ? 'data' : 'tree', offset: e[2], length: e[3], rawLength: e[4], flags: e[5] };
  }

  addPack(packId: string, entries: PackEntry[]): void {
    let no = this.#packNo.get(packId);
    if (no === undefined) {
      no = this.#packs.length;
      this.#packs.push(packId);
      this.#packNo.set(packId, no);
      this.#packEnd.push(0);
      this.#packHasData.push(false);
    }
    let end = this.#packEnd[no]!;
    let hasData = this.#packHasData[no]!;
    for (const [id, t, offset, length, rawLength, flags] of entries) {
      if (offset + length > end) end = offset + length;
      if (t === 'd') hasData = true;
      if (!this.#blobs.has(id)) this.#blobs.set(id, [no, t === 'd' ? 0 : 1, offset, length, rawLength, flags]);
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
      if (typeof p?.id !== 'string' || !/^[0-9a-f]{64}$/.test(p.id)) throw new IntegrityError(`index ${fileId}: malformed pack id`);
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
    for (const id of this.#blobs.keys()) yield [id, this.get(id)!];
  }
}
