/**
 * Storage: the dumb object store under a repository. Keys are slash-separated
 * relative paths ("data/ab/abcd…", "index/…", "snapshots/…", "locks/…", "config").
 *
 * Guarantees every driver gives (checked by test/storage/contract.ts):
 * - put is atomic: a reader sees the whole object or nothing, never a partial one,
 *   also when the writer is killed mid-write.
 * - read after write: once put resolves, get/stat/list see the object.
 * - put with `ifNoneMatch` is a conditional create: it throws AlreadyExistsError
 *   when the key exists, and exactly one of two racing creators wins.
 * - get/stat of a missing key: get throws NotFoundError, stat returns undefined.
 * - delete is idempotent: deleting a missing key succeeds.
 * - Transient backend errors are retried inside the driver; what escapes is final
 *   (UnreachableError, AuthError, NoSpaceError, NotFoundError, AlreadyExistsError).
 */
export interface ObjectInfo {
  key: string;
  size: number;
  mtime: Date;
}

export interface PutOptions {
  /** Conditional create: fail with AlreadyExistsError when the key exists. */
  ifNoneMatch?: boolean;
  /**
   * false: the object need not survive a crash of the machine (still atomic: readers see all of
   * it or nothing). For locks, which a crash makes stale anyway: local storage skips its two
   * fsyncs. Default true.
   */
  durable?: boolean;
}

export interface Storage {
  /** Human-readable location with credentials redacted, for logs and errors. */
  readonly location: string;
  /** Store an object atomically (overwrite unless ifNoneMatch). */
  put(key: string, data: Uint8Array, options?: PutOptions): Promise<void>;
  /** Read an object, or `length` bytes from `offset`. Throws NotFoundError when absent. */
  get(key: string, range?: { offset: number; length: number }): Promise<Buffer>;
  /** Size and modification time, or undefined when absent. */
  stat(key: string): Promise<ObjectInfo | undefined>;
  /** Every object whose key starts with prefix, in no particular order. */
  list(prefix: string): AsyncIterable<ObjectInfo>;
  /** Remove an object; succeeds when it is already gone. */
  delete(key: string): Promise<void>;
  /** Release connections and handles. */
  close(): Promise<void>;
  /**
   * Optional: a new object written in pieces and named when complete, so a
   * writer need not hold it whole in memory (local storage: a temporary file).
   * Drivers without it get whole objects through put().
   */
  stage?(): StagedObject;
  /**
   * Optional (local directories): the file that holds an object, for readers
   * on other threads that read it themselves. Objects are immutable, so the
   * file's content at a key never changes.
   */
  localPath?(key: string): string;
  /** Optional: remove temporary files of killed writers older than `maxAgeMs` (default one hour); returns how many. */
  removeStaleTemp?(maxAgeMs?: number): Promise<number>;
}

/** An object being written by pieces (see Storage.stage). */
export interface StagedObject {
  /** Append bytes (synchronously: the buffer may be reused once it returns). */
  append(data: Uint8Array): void;
  /** Store what was appended under `key`, atomically and durably, as put() does; the staged object is gone afterwards. */
  commit(key: string, options?: PutOptions): Promise<void>;
  /** Drop what was appended. */
  discard(): Promise<void>;
}
