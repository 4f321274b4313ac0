/**
 * Repository locks: locks/<id> objects. Backups take shared locks (several
 * agents may back up into one repository at once: they only add immutable
 * objects); prune and index rebuild take an exclusive one.
 *
 * A lock is refreshed every 5 minutes and is stale after 30 minutes without a
 * refresh, or at once when it names this host and a process that is gone — so
 * a crashed process never holds a repository forever.
 */
import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
import { LockedError, NotFoundError } from '../errors.js';
import type { Storage } from '../storage/storage.js';
import { log } from '../util/log.js';
import { isProcessAlive } from '../util/process.js';

export interface LockInfo {
  host: string;
  pid: number;
  exclusive: boolean;
  createdAt: string;
  refreshedAt: string;
  purpose: string;
}

export const STALE_MS = 30 * 60_000;
const REFRESH_MS = 5 * 60_000;


/** True when nobody holds this lock any more. */
export function isStale(l: LockInfo, now = Date.now()): boolean {
  if (now - Date.parse(l.refreshedAt) > STALE_MS) return true;
  return l.host === hostname() && !isProcessAlive(l.pid);
}

export class RepoLock {
  #timer?: NodeJS.Timeout;
  private constructor(
    readonly storage: Storage,
    readonly key: string,
    readonly info: LockInfo,
  ) {}

  /** Take a lock; LockedError when a conflicting live lock exists. */
  static async acquire(storage: Storage, exclusive: boolean, purpose: string): Promise<RepoLock> {
    const now = new Date().toISOString();
    const info: LockInfo = { host: hostname(), pid: process.pid, exclusive, createdAt: now, refreshedAt: now, purpose };
    const key = `locks/${randomBytes(16).toString('hex')}`;
    // Not durable: a crash makes a lock stale anyway, and an unreadable one counts as stale.
    await storage.put(key, Buffer.from(JSON.stringify(info)), { ifNoneMatch: true, durable: false });
    const lock = new RepoLock(storage, key, info);
    try {
      for (const other of await listLocks(storage)) {
        if (other.key === key) continue;
        if (!exclusive && !other.info.exclusive) continue;
        if (isStale(other.info)) {
          log.warn(`removing stale lock ${other.key} (${other.info.purpose} by pid ${other.info.pid} on ${other.info.host})`);
          await storage.delete(other.key);
          continue;
        }
        throw new LockedError(
          `repository is locked ${other.info.exclusive ? 'exclusively ' : ''}by ${other.info.purpose} (pid ${other.info.pid} on ${other.info.host}, since ${other.info.createdAt})`,
        );
      }
    } catch (err) {
      await storage.delete(key).catch(() => {});
      throw err;
    }
    lock.#timer = setInterval(() => void lock.refresh().catch((e) => log.warn(`cannot refresh lock: ${String(e)}`)), REFRESH_MS);
    lock.#timer.unref();
    return lock;
  }

  async refresh(): Promise<void> {
    this.info.refreshedAt = new Date().toISOString();
    await this.storage.put(this.key, Buffer.from(JSON.stringify(this.info)), { durable: false });
  }

  async release(): Promise<void> {
    if (this.#timer) clearInterval(this.#timer);
    await this.storage.delete(this.key);
  }
}

export async function listLocks(storage: Storage): Promise<{ key: string; info: LockInfo }[]> {
  const out: { key: string; info: LockInfo }[] = [];
  for await (const o of storage.list('locks/')) {
    try {
      out.push({ key: o.key, info: JSON.parse((await storage.get(o.key)).toString()) as LockInfo });
    } catch (err) {
      if (err instanceof NotFoundError) continue; // released meanwhile
      if (err instanceof SyntaxError) {
        // A lock that is not JSON was half-written by nobody (puts are atomic): treat as stale garbage.
        out.push({ key: o.key, info: { host: '?', pid: 0, exclusive: false, createdAt: o.mtime.toISOString(), refreshedAt: new Date(0).toISOString(), purpose: 'unreadable lock' } });
        continue;
      }
      throw err;
    }
  }
  return out;
}

