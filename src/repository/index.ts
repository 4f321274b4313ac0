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
    }
    for (const [id, t, offset, length, rawLength, flags] of entries) {
      if (!this.#blobs.has(id)) this.#blobs.set(id, [no, t === 'd' ? 0 : 1, offset, length, rawLength, flags]);
    }
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
