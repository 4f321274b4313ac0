/**
 * Open a Storage from a repository URL:
 *   s3://BUCKET[/PREFIX]                       S3 (endpoint, region, keys from the options or AWS_*)
 *   s3:http(s)://HOST[:PORT]/BUCKET[/PREFIX]   S3 at that endpoint, path-style
 *   file:///PATH, /PATH, ./PATH, PATH          a local directory
 */
import { isAbsolute, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { UsageError } from '../errors.js';
import { LocalStorage, type LocalStorageOptions } from './local.js';
import { S3Storage, type S3StorageOptions } from './s3.js';
import type { Storage } from './storage.js';

export type { ObjectInfo, PutOptions, Storage } from './storage.js';
export { LocalStorage } from './local.js';
export { S3Storage, createBucket } from './s3.js';

/** A parsed repository URL. */
export type RepoUrl =
  | { kind: 'local'; path: string }
  | { kind: 's3'; bucket: string; prefix: string; endpoint?: string };

/** Options for openStorage: S3 settings (endpoint, region, keys, retries…) and local settings. */
export type OpenStorageOptions = Omit<S3StorageOptions, 'bucket' | 'prefix'> & LocalStorageOptions;

const BUCKET_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{1,254}$/;

function parseS3Path(rest: string, original: string): { bucket: string; prefix: string } {
  const trimmed = rest;
  const slash = trimmed.indexOf('/');
  const bucket = slash < 0 ? trimmed : trimmed.slice(0, slash);
  const prefix = slash < 0 ? '' : trimmed.slice(slash + 1).replace(/^\/+|\/+$/g, '');
  if (!BUCKET_RE.test(bucket)) throw new UsageError(`repository URL ${original}: invalid bucket name`);
  if (prefix.split('/').some((p) => p === '.' || p === '..')) throw new UsageError(`repository URL ${original}: invalid prefix`);
  return { bucket, prefix };
}

/**
 * Parse a repository URL (see the module comment). Relative paths resolve against `cwd`. Throws
 * UsageError on an empty or unknown form, and on credentials inside the URL (never echoing them).
 */
export function parseRepoUrl(url: string, cwd: string = process.cwd()): RepoUrl {
  const u = url.trim();
  if (!u) throw new UsageError('repository URL is empty');
  if (u.startsWith('s3:http://') || u.startsWith('s3:https://')) {
    let parsed: URL;
    try {
      parsed = new URL(u.slice(3));
    } catch {
      throw new UsageError('repository URL: invalid S3 endpoint URL');
    }
    if (parsed.username || parsed.password) throw new UsageError('repository URL must not contain credentials');
    const shown = `s3:${parsed.protocol}//${parsed.host}${parsed.pathname}`;
    const { bucket, prefix } = parseS3Path(decodeURIComponent(parsed.pathname).slice(1), shown);
    return { kind: 's3', bucket, prefix, endpoint: `${parsed.protocol}//${parsed.host}` };
  }
  if (u.startsWith('s3://')) {
    const rest = u.slice(5);
    const authority = rest.split('/')[0] ?? '';
    if (authority.includes('@')) throw new UsageError('repository URL must not contain credentials');
    const { bucket, prefix } = parseS3Path(rest, u);
    return { kind: 's3', bucket, prefix };
  }
  if (u.startsWith('file:')) {
    let path: string;
    try {
      path = fileURLToPath(u);
    } catch {
      throw new UsageError(`repository URL ${u}: invalid file URL`);
    }
    return { kind: 'local', path };
  }
  if (/^[A-Za-z][A-Za-z0-9+.-]*:\/\//.test(u)) {
    const scheme = u.slice(0, u.indexOf(':'));
    throw new UsageError(`repository URL: unsupported scheme ${scheme}: (use s3://bucket/prefix or a directory)`);
  }
  return { kind: 'local', path: isAbsolute(u) ? resolve(u) : resolve(cwd, u) };
}

/** Open the Storage a repository URL names; nothing is contacted or created until the first operation. */
export function openStorage(url: string, options: OpenStorageOptions = {}): Storage {
  const r = parseRepoUrl(url);
  if (r.kind === 'local') {
    return new LocalStorage(r.path, { fileMode: options.fileMode, dirMode: options.dirMode });
  }
  const { fileMode: _f, dirMode: _d, ...s3 } = options;
  return new S3Storage({
    ...s3,
    bucket: r.bucket,
    prefix: r.prefix,
    ...(r.endpoint ? { endpoint: r.endpoint, forcePathStyle: s3.forcePathStyle ?? true } : {}),
  });
}
