// An in-memory Storage, for tests only (restic keeps one for the same reason).
import { AlreadyExistsError, NotFoundError } from '../../src/errors.js';
import type { ObjectInfo, PutOptions, Storage } from '../../src/storage/storage.js';

export class MemStorage implements Storage {
  readonly location = 'memory:';
  readonly objects = new Map<string, { data: Buffer; mtime: Date }>();
  /** Keys whose next put fails with this error (fault injection). */
  failPut?: (key: string) => Error | undefined;

  async put(key: string, data: Uint8Array, options?: PutOptions): Promise<void> {
    const e = this.failPut?.(key);
    if (e) throw e;
    if (options?.ifNoneMatch && this.objects.has(key)) throw new AlreadyExistsError(`${key} exists`);
    this.objects.set(key, { data: Buffer.from(data), mtime: new Date() });
  }
  async get(key: string, range?: { offset: number; length: number }): Promise<Buffer> {
    const o = this.objects.get(key);
    if (!o) throw new NotFoundError(`${key} not found`);
    return range ? Buffer.from(o.data.subarray(range.offset, range.offset + range.length)) : Buffer.from(o.data);
  }
  async stat(key: string): Promise<ObjectInfo | undefined> {
    const o = this.objects.get(key);
    return o ? { key, size: o.data.length, mtime: o.mtime } : undefined;
  }
  async *list(prefix: string): AsyncIterable<ObjectInfo> {
    for (const [key, o] of [...this.objects]) if (key.startsWith(prefix)) yield { key, size: o.data.length, mtime: o.mtime };
  }
  async delete(key: string): Promise<void> {
    this.objects.delete(key);
  }
  async close(): Promise<void> {}
}
