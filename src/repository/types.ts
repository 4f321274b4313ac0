/**
 * What the data plane (engines/) sees of a repository: a deduplicating,
 * verifying blob store. The format behind it is in docs/ARCHITECTURE.md.
 */
import type { BlobCodec, StoredBlob, StoredRef } from './decode.js';

export type BlobType = 'data' | 'tree';
/** 64 lowercase hex characters: keyed BLAKE3 of the blob's plaintext. */
export type BlobId = string;

export interface SaveResult {
  id: BlobId;
  /** False when the repository (or this session) already held the blob. */
  isNew: boolean;
  /** Bytes this blob added to the repository after compression/encryption (0 when not new). */
  storedSize: number;
}

export interface BlobStore {
  /** The ID a blob with this plaintext has (keyed hash; the key lives in the repository config). */
  hash(data: Uint8Array): BlobId;
  /** The key of `hash` (keyed BLAKE3), for threads that hash as `hash` does. Optional. */
  hashKey?(): Buffer;
  /** True when the blob is in the index or pending in this session. */
  has(id: BlobId): boolean;
  /**
   * Store a blob unless already present. Compression and encryption run on worker
   * threads; the promise resolves once the blob is queued in a pack. Nothing is
   * durable before the writer's flush(); a manifest must only name blobs after it.
   * `id` may be passed when the caller already hashed the data.
   * `data` is copied (or fully used) before the call returns: the caller may
   * reuse its buffer at once (the file engine recycles its read buffers).
   */
  saveBlob(type: BlobType, data: Buffer, id?: BlobId): Promise<SaveResult>;
  /** Read, decrypt, decompress and verify a blob. Throws IntegrityError on any mismatch, NotFoundError when unknown. */
  loadBlob(type: BlobType, id: BlobId): Promise<Buffer>;
  /**
   * Optional, for decoding on worker threads: a blob as stored (not yet
   * verified) and the codec a thread decodes and verifies it with. Stores
   * without them are read through loadBlob.
   */
  loadStored?(type: BlobType, id: BlobId): Promise<StoredBlob>;
  codec?(): BlobCodec;
  /**
   * Optional: where a data blob lies in a local file, for a thread that
   * reads, decodes and verifies it itself; undefined when it must be loaded
   * (remote storage). NotFoundError when unknown.
   */
  locateStored?(type: BlobType, id: BlobId): StoredRef | undefined;
}

/** Statistics every engine fills; stored in the manifest and the catalog. */
export interface BackupStats {
  files: number;
  dirs: number;
  /** Files (or blocks) whose content was read. */
  filesRead: number;
  /** Files reused from the parent without reading. */
  filesUnchanged: number;
  /** Logical bytes in the backup (file sizes or used blocks). */
  bytesTotal: number;
  /** Bytes actually read from the source. */
  bytesRead: number;
  /** Plaintext bytes of blobs that were new to the repository. */
  bytesNew: number;
  /** Bytes added to the repository (compressed, encrypted). */
  bytesStored: number;
  blobsNew: number;
  errors: number;
}

export function emptyStats(): BackupStats {
  return { files: 0, dirs: 0, filesRead: 0, filesUnchanged: 0, bytesTotal: 0, bytesRead: 0, bytesNew: 0, bytesStored: 0, blobsNew: 0, errors: 0 };
}
