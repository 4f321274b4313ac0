/**
 * S3Storage: the Storage interface over an S3 bucket (AWS S3, Ceph radosgw, or any S3-compatible
 * endpoint), with @aws-sdk/client-s3.
 *
 * - Retries are ours, not the SDK's (the client runs with maxAttempts 1): exponential backoff with full
 *   jitter on 5xx, 429, SlowDown, RequestTimeout, 409 ConditionalRequestConflict and network errors,
 *   honouring Retry-After. What escapes is final and mapped to the error hierarchy.
 * - Conditional create sends `If-None-Match: *` (412 → AlreadyExistsError).
 * - Objects above `multipartThreshold` go up as a multipart upload (aborted on failure).
 * - Every PUT carries Content-MD5, so the endpoint rejects a body damaged in transit.
 * - Credentials never appear in `location`, in error messages or in logs.
 */
import { createHash } from 'node:crypto';
// The SDK costs about half a second of start-up: it is loaded on the first request, so commands
// on local repositories never load it.
import type * as Sdk from '@aws-sdk/client-s3';
import type { CompletedPart, S3Client, S3ClientConfig } from '@aws-sdk/client-s3';

let sdk: typeof Sdk;
let sdkLoading: Promise<typeof Sdk> | undefined;
async function loadSdk(): Promise<typeof Sdk> {
  sdkLoading ??= import('@aws-sdk/client-s3').then((m) => (sdk = m));
  return sdkLoading;
}
import {
  AlreadyExistsError,
  AuthError,
  ConfigError,
  ExitCode,
  NoRepositoryError,
  NoSpaceError,
  NotFoundError,
  PermafrostError,
  UnreachableError,
  UsageError,
  pause,
} from '../errors.js';
import { log, registerSecret } from '../util/log.js';
import { checkKey } from './local.js';
import type { ObjectInfo, PutOptions, Storage } from './storage.js';

const MiB = 1024 * 1024;
/** Largest object S3 accepts in one PUT. */
const MAX_SINGLE_PUT = 5 * 1024 * MiB;
const MAX_PARTS = 10_000;

/** Options of S3Storage (and of createBucket). */
export interface S3StorageOptions {
  /** Bucket name. */
  bucket: string;
  /** Key prefix inside the bucket ("" or "a/b"; slashes at either end are ignored). */
  prefix?: string;
  /** Endpoint URL (radosgw, MinIO…); AWS S3 when absent. */
  endpoint?: string;
  /** Signing region (default 'us-east-1'). */
  region?: string;
  /** Path-style addressing (default: true when an endpoint is given, false for AWS). */
  forcePathStyle?: boolean;
  /** Access key; with secretAccessKey. Absent: the SDK's default chain (AWS_* environment, profiles). */
  accessKeyId?: string;
  /** Secret key; registered with the logger so that it is masked wherever it would appear. */
  secretAccessKey?: string;
  /** Session token for temporary credentials. */
  sessionToken?: string;
  /** Attempts per request including the first (default 8). */
  maxAttempts?: number;
  /** First backoff ceiling in ms (default 250); doubles per attempt. */
  retryBaseDelayMs?: number;
  /** Largest backoff in ms (default 20000). */
  retryMaxDelayMs?: number;
  /** TCP connect timeout in ms (default 10000). */
  connectTimeoutMs?: number;
  /** Socket idle timeout in ms (default 120000). */
  socketTimeoutMs?: number;
  /** Objects larger than this go up as multipart uploads (default 64 MiB). */
  multipartThreshold?: number;
  /** Part size of multipart uploads (default 16 MiB; S3 needs at least 5 MiB for all but the last). */
  partSize?: number;
  /** Parts uploaded at once (default 4). */
  partConcurrency?: number;
  /** A ready client (tests, shared pools). It is not destroyed by close(). */
  client?: S3Client;
}

interface ErrInfo {
  name: string;
  status?: number;
  sysCode?: string;
  message: string;
  retryAfterMs?: number;
}

const NETWORK_CODES = new Set([
  'ECONNRESET',
  'ECONNREFUSED',
  'ETIMEDOUT',
  'EPIPE',
  'EAI_AGAIN',
  'ENETUNREACH',
  'EHOSTUNREACH',
  'ENETDOWN',
  'ECONNABORTED',
  'EPROTO',
  'UND_ERR_SOCKET',
]);
const RETRY_NAMES = new Set([
  'SlowDown',
  'Throttling',
  'ThrottlingException',
  'TooManyRequests',
  'TooManyRequestsException',
  'RequestTimeout',
  'RequestTimeoutException',
  'InternalError',
  'ServiceUnavailable',
  'ConditionalRequestConflict',
  'BadDigest',
  'XAmzContentSHA256Mismatch',
  'TimeoutError',
  'RequestTimeTooSkewed',
]);
const AUTH_NAMES = new Set([
  'InvalidAccessKeyId',
  'SignatureDoesNotMatch',
  'AccessDenied',
  'InvalidToken',
  'ExpiredToken',
  'TokenRefreshRequired',
  'AuthorizationHeaderMalformed',
  'CredentialsProviderError',
]);

function info(err: unknown): ErrInfo {
  const e = err as {
    name?: string;
    Code?: string;
    code?: string;
    message?: string;
    errors?: Array<{ code?: string }>;
    $metadata?: { httpStatusCode?: number };
    $response?: { statusCode?: number; headers?: Record<string, string> };
  } | null;
  const status = e?.$metadata?.httpStatusCode ?? e?.$response?.statusCode;
  let sysCode = typeof e?.code === 'string' ? e.code : undefined;
  if (!sysCode && Array.isArray(e?.errors)) sysCode = e.errors.find((x) => typeof x?.code === 'string')?.code;
  let name = e?.Code ?? e?.name ?? 'Error';
  if (name === 'Error' && sysCode) name = sysCode;
  let retryAfterMs: number | undefined;
  const ra = e?.$response?.headers?.['retry-after'];
  if (ra !== undefined) {
    const secs = Number(ra);
    if (Number.isFinite(secs) && secs >= 0) retryAfterMs = secs * 1000;
  }
  return { name, status, sysCode, message: String(e?.message ?? err), retryAfterMs };
}

function isNetwork(i: ErrInfo): boolean {
  return (
    (i.sysCode !== undefined && NETWORK_CODES.has(i.sysCode)) ||
    NETWORK_CODES.has(i.name) ||
    i.name === 'TimeoutError' ||
    /socket hang up|ECONNRESET|network|timed out/i.test(i.message)
  ) && !(i.status !== undefined && i.status < 500 && i.status !== 429 && i.status !== 408);
}

function isRetryable(i: ErrInfo): boolean {
  if (AUTH_NAMES.has(i.name)) return false;
  if (RETRY_NAMES.has(i.name)) return true;
  if (i.status !== undefined) {
    if (i.status >= 500 || i.status === 429 || i.status === 408) return true;
    if (i.status === 409 && i.name === 'ConditionalRequestConflict') return true;
  }
  return isNetwork(i);
}

/** Split "a/b/" style prefixes into a clean form without leading or trailing slashes. */
function cleanPrefix(prefix: string | undefined): string {
  return (prefix ?? '').replace(/^\/+|\/+$/g, '');
}

/** The endpoint for messages: URL without user info, query or fragment. */
export function displayEndpoint(endpoint: string | undefined, region: string): string {
  if (!endpoint) return `AWS S3 ${region}`;
  try {
    const u = new URL(endpoint);
    return `${u.protocol}//${u.host}${u.pathname === '/' ? '' : u.pathname}`;
  } catch {
    return '<invalid endpoint>';
  }
}

/** S3-backed Storage. Guarantees: those of Storage; retries inside, final errors mapped, secrets never shown. */
export class S3Storage implements Storage {
  /** `s3://bucket/prefix (endpoint)`, without credentials. */
  readonly location: string;
  /** The bucket. */
  readonly bucket: string;
  /** The clean key prefix ("" for the bucket root). */
  readonly prefix: string;
  #client: S3Client | undefined;
  readonly #clientConfig: S3ClientConfig | undefined;
  readonly #ownsClient: boolean;
  readonly #endpointLabel: string;
  readonly #secret: string | undefined;
  readonly #maxAttempts: number;
  readonly #baseDelay: number;
  readonly #maxDelay: number;
  readonly #threshold: number;
  readonly #partSize: number;
  readonly #partConcurrency: number;
  readonly #region: string;
  readonly #isAws: boolean;

  /** Build the client (or adopt options.client); no request is sent until the first operation. */
  constructor(options: S3StorageOptions) {
    if (!options.bucket) throw new UsageError('S3 storage needs a bucket name');
    this.bucket = options.bucket;
    this.prefix = cleanPrefix(options.prefix);
    this.#region = options.region ?? 'us-east-1';
    this.#isAws = !options.endpoint;
    this.#endpointLabel = displayEndpoint(options.endpoint, this.#region);
    this.location = `s3://${this.bucket}${this.prefix ? '/' + this.prefix : ''} (${this.#endpointLabel})`;
    this.#secret = options.secretAccessKey;
    registerSecret(options.secretAccessKey);
    registerSecret(options.sessionToken);
    this.#maxAttempts = Math.max(1, options.maxAttempts ?? 8);
    this.#baseDelay = Math.max(0, options.retryBaseDelayMs ?? 250);
    this.#maxDelay = Math.max(this.#baseDelay, options.retryMaxDelayMs ?? 20_000);
    this.#threshold = options.multipartThreshold ?? 64 * MiB;
    this.#partSize = options.partSize ?? 16 * MiB;
    this.#partConcurrency = Math.max(1, options.partConcurrency ?? 4);
    if (this.#partSize < 1) throw new UsageError('S3 partSize must be positive');
    // The SDK warns on stderr about Node < 22 once per process; Node 20 is a supported target here
    // and library code must not print. An operator's explicit setting wins.
    process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';
    if (options.client) {
      this.#client = options.client;
      this.#ownsClient = false;
    } else {
      this.#clientConfig = clientConfig(options, this.#region);
      this.#ownsClient = true;
    }
  }

  /** The client (built on first use, once the SDK is loaded). */
  async #c(): Promise<S3Client> {
    if (sdk === undefined) await loadSdk();
    this.#client ??= new sdk.S3Client(this.#clientConfig!);
    return this.#client;
  }

  #key(key: string): string {
    checkKey(key); // the same rules as every driver, so code tested on one behaves alike on the other
    return this.prefix ? `${this.prefix}/${key}` : key;
  }

  /** Mask the secret in any text (belt and braces: our messages never include it). */
  #safe(text: string): string {
    return this.#secret && this.#secret.length >= 4 ? text.split(this.#secret).join('***') : text;
  }

  /** Turn a final SDK/network error into our hierarchy. */
  #mapError(err: unknown, what: string, attempts: number): unknown {
    if (err instanceof PermafrostError) return err;
    const i = info(err);
    const detail = this.#safe(`${i.name}${i.status ? ` (HTTP ${i.status})` : ''}`);
    if (i.name === 'NoSuchBucket') {
      return new NoRepositoryError(`bucket ${this.bucket} does not exist at ${this.#endpointLabel}`, { cause: err });
    }
    if (i.name === 'NoSuchKey' || (i.status === 404 && (i.name === 'NotFound' || i.name === 'Unknown'))) {
      return new NotFoundError(`${this.location}: ${what}: not found`, { cause: err });
    }
    if (i.name === 'QuotaExceeded' || i.name === 'EntityTooLarge') {
      return new NoSpaceError(`${this.location}: ${what}: ${detail}: quota or size limit of the bucket`, { cause: err });
    }
    if (i.name === 'CredentialsProviderError') {
      return new AuthError(
        `${this.location}: no S3 credentials: give an access key and secret, or set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY`,
        { cause: err },
      );
    }
    if (AUTH_NAMES.has(i.name) || i.status === 403 || i.status === 401) {
      return new AuthError(`${this.location}: ${what}: access denied by ${this.#endpointLabel}: ${detail}; check the access key and secret`, {
        cause: err,
      });
    }
    if (i.name === 'PreconditionFailed' || i.status === 412) {
      return new AlreadyExistsError(`${this.location}: ${what}: already exists`, { cause: err });
    }
    if (i.status === undefined && (i.sysCode === 'ENOTFOUND' || i.name === 'ENOTFOUND')) {
      return new UnreachableError(`S3 endpoint ${this.#endpointLabel} unreachable: its host name does not resolve (ENOTFOUND): ${what}`, {
        cause: err,
      });
    }
    if (isNetwork(i) && i.status === undefined) {
      return new UnreachableError(
        `S3 endpoint ${this.#endpointLabel} unreachable (${i.sysCode ?? i.name}) after ${attempts} attempt(s): ${what}`,
        { cause: err },
      );
    }
    if (isRetryable(i)) {
      return new UnreachableError(`${this.location}: ${what} failed after ${attempts} attempt(s): ${detail}`, { cause: err });
    }
    return new PermafrostError(`${this.location}: ${what}: ${detail}`, 's3', ExitCode.failure, { cause: err });
  }

  /**
   * Run fn with retries on transient errors. `onFinal` may turn a final error into a result (used
   * to resolve ambiguous conditional writes); it gets whether an earlier attempt failed ambiguously.
   */
  async #retry<T>(
    what: string,
    fn: () => Promise<T>,
    onFinal?: (err: unknown, ambiguous: boolean) => Promise<{ value: T } | undefined>,
  ): Promise<T> {
    let ambiguous = false;
    for (let attempt = 1; ; attempt++) {
      try {
        return await fn();
      } catch (err) {
        const i = info(err);
        const retry = isRetryable(i) && attempt < this.#maxAttempts;
        if (!retry) {
          if (onFinal) {
            const r = await onFinal(err, ambiguous);
            if (r !== undefined) return r.value;
          }
          throw this.#mapError(err, what, attempt);
        }
        // A network error or 5xx may hide a request the server did carry out.
        if (isNetwork(i) || (i.status !== undefined && i.status >= 500)) ambiguous = true;
        const ceiling = Math.min(this.#maxDelay, this.#baseDelay * 2 ** (attempt - 1));
        let delay = Math.random() * ceiling;
        if (i.retryAfterMs !== undefined) delay = Math.max(delay, Math.min(i.retryAfterMs, this.#maxDelay));
        log.debug(this.#safe(`${this.location}: ${what}: ${i.name}${i.status ? ` ${i.status}` : ''}, retry ${attempt}/${this.#maxAttempts - 1} in ${Math.round(delay)} ms`));
        await pause(delay);
      }
    }
  }

  /** Store the object (overwrite unless ifNoneMatch, then AlreadyExistsError when present). */
  async put(key: string, data: Uint8Array, options: PutOptions = {}): Promise<void> {
    const Key = this.#key(key);
    const ifNoneMatch = options.ifNoneMatch === true;
    // A conditional create goes up in one PUT (race-safe on every endpoint that knows If-None-Match).
    if (data.length > this.#threshold && !(ifNoneMatch && data.length <= MAX_SINGLE_PUT)) {
      if (ifNoneMatch && (await this.stat(key))) throw new AlreadyExistsError(`${this.location}: put ${key}: already exists`);
      await this.#multipart(key, Key, data, ifNoneMatch);
      return;
    }
    const md5 = createHash('md5').update(data).digest();
    await this.#retry(
      `put ${key}`,
      async () => {
        await (await this.#c()).send(
          new sdk.PutObjectCommand({
            Bucket: this.bucket,
            Key,
            Body: data,
            ContentLength: data.length,
            ContentMD5: md5.toString('base64'),
            ContentType: 'application/octet-stream',
            ...(ifNoneMatch ? { IfNoneMatch: '*' } : {}),
          }),
        );
      },
      ifNoneMatch
        ? async (err, ambiguous) => {
            // 412 after an attempt whose outcome we never saw: maybe that attempt created it.
            const i = info(err);
            if (!ambiguous || !(i.status === 412 || i.name === 'PreconditionFailed')) return undefined;
            const etag = await this.#etag(Key);
            return etag === md5.toString('hex') ? { value: undefined } : undefined;
          }
        : undefined,
    );
  }

  async #etag(Key: string): Promise<string | undefined> {
    try {
      const h = await (await this.#c()).send(new sdk.HeadObjectCommand({ Bucket: this.bucket, Key }));
      return h.ETag?.replace(/"/g, '').toLowerCase();
    } catch {
      return undefined;
    }
  }

  async #multipart(key: string, Key: string, data: Uint8Array, ifNoneMatch: boolean): Promise<void> {
    const partSize = Math.max(this.#partSize, Math.ceil(data.length / MAX_PARTS));
    const count = Math.ceil(data.length / partSize);
    const created = await this.#retry(`put ${key}: create multipart upload`, async () =>
      (await this.#c()).send(new sdk.CreateMultipartUploadCommand({ Bucket: this.bucket, Key, ContentType: 'application/octet-stream' })),
    );
    const UploadId = created.UploadId;
    if (!UploadId) throw new PermafrostError(`${this.location}: put ${key}: no upload id from the endpoint`, 's3', ExitCode.failure);
    try {
      const parts: CompletedPart[] = new Array(count);
      let next = 0;
      let failed = false;
      const worker = async (): Promise<void> => {
        while (next < count && !failed) {
          const n = next++;
          const body = data.subarray(n * partSize, Math.min(data.length, (n + 1) * partSize));
          const md5 = createHash('md5').update(body).digest('base64');
          const res = await this.#retry(`put ${key}: part ${n + 1}/${count}`, async () =>
            (await this.#c()).send(
              new sdk.UploadPartCommand({
                Bucket: this.bucket,
                Key,
                UploadId,
                PartNumber: n + 1,
                Body: body,
                ContentLength: body.length,
                ContentMD5: md5,
              }),
            ),
          );
          parts[n] = { PartNumber: n + 1, ETag: res.ETag };
        }
      };
      // Wait for every worker before aborting: no part may still be in flight after the abort.
      const settled = await Promise.allSettled(
        Array.from({ length: Math.min(this.#partConcurrency, count) }, () =>
          worker().catch((e: unknown) => {
            failed = true;
            throw e;
          }),
        ),
      );
      const firstFailure = settled.find((r): r is PromiseRejectedResult => r.status === 'rejected');
      if (firstFailure) throw firstFailure.reason;
      await this.#retry(
        `put ${key}: complete multipart upload`,
        async () => {
          await (await this.#c()).send(
            new sdk.CompleteMultipartUploadCommand({
              Bucket: this.bucket,
              Key,
              UploadId,
              MultipartUpload: { Parts: parts },
              ...(ifNoneMatch ? { IfNoneMatch: '*' } : {}),
            }),
          );
        },
        async (err, ambiguous) => {
          // An earlier complete may have succeeded without us seeing the answer.
          if (ambiguous && info(err).name === 'NoSuchUpload') {
            const st = await this.stat(key).catch(() => undefined);
            if (st && st.size === data.length) return { value: undefined };
          }
          return undefined;
        },
      );
    } catch (err) {
      try {
        await (await this.#c()).send(new sdk.AbortMultipartUploadCommand({ Bucket: this.bucket, Key, UploadId }));
      } catch (abortErr) {
        log.warn(this.#safe(`${this.location}: could not abort multipart upload of ${key}: ${info(abortErr).name}`));
      }
      throw err;
    }
  }

  /** Read the object or a range of it (a range past the end is cut at the end). NotFoundError when absent. */
  async get(key: string, range?: { offset: number; length: number }): Promise<Buffer> {
    const Key = this.#key(key);
    if (range) {
      if (!Number.isSafeInteger(range.offset) || range.offset < 0 || !Number.isSafeInteger(range.length) || range.length < 0) {
        throw new UsageError(`invalid range offset=${range.offset} length=${range.length}`);
      }
      if (range.length === 0) {
        if (!(await this.stat(key))) throw new NotFoundError(`${this.location}: get ${key}: not found`);
        return Buffer.alloc(0);
      }
    }
    return this.#retry(
      `get ${key}`,
      async () => {
        const res = await (await this.#c()).send(
          new sdk.GetObjectCommand({
            Bucket: this.bucket,
            Key,
            ...(range ? { Range: `bytes=${range.offset}-${range.offset + range.length - 1}` } : {}),
          }),
        );
        if (!res.Body) return Buffer.alloc(0);
        const bytes = await res.Body.transformToByteArray();
        const buf = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
        if (res.ContentLength !== undefined && buf.length !== res.ContentLength) {
          // A truncated body: let the retry loop fetch it again.
          throw Object.assign(new Error(`short read: ${buf.length} of ${res.ContentLength} bytes`), { code: 'ECONNRESET' });
        }
        return buf;
      },
      async (err) => {
        const i = info(err);
        // A range starting at or past the end: the object exists, the slice is empty.
        if (range && (i.status === 416 || i.name === 'InvalidRange')) return { value: Buffer.alloc(0) };
        return undefined;
      },
    );
  }

  /** Size and mtime, or undefined when absent. */
  async stat(key: string): Promise<ObjectInfo | undefined> {
    const Key = this.#key(key);
    return this.#retry(
      `stat ${key}`,
      async (): Promise<ObjectInfo | undefined> => {
        const h = await (await this.#c()).send(new sdk.HeadObjectCommand({ Bucket: this.bucket, Key }));
        return { key, size: h.ContentLength ?? 0, mtime: h.LastModified ?? new Date(0) };
      },
      async (err) => {
        const i = info(err);
        if (i.status === 404 || i.name === 'NotFound' || i.name === 'NoSuchKey') return { value: undefined };
        return undefined;
      },
    );
  }

  /** Every object whose key starts with prefix (ListObjectsV2, all pages). */
  async *list(prefix: string): AsyncIterable<ObjectInfo> {
    const full = this.prefix ? `${this.prefix}/${prefix}` : prefix;
    const strip = this.prefix ? this.prefix.length + 1 : 0;
    let token: string | undefined;
    do {
      const page = await this.#retry(`list ${prefix}`, async () =>
        (await this.#c()).send(new sdk.ListObjectsV2Command({ Bucket: this.bucket, Prefix: full, ContinuationToken: token, MaxKeys: 1000 })),
      );
      for (const o of page.Contents ?? []) {
        if (!o.Key || o.Key.length <= strip) continue;
        yield { key: o.Key.slice(strip), size: o.Size ?? 0, mtime: o.LastModified ?? new Date(0) };
      }
      token = page.IsTruncated ? page.NextContinuationToken : undefined;
    } while (token);
  }

  /** Remove the object; succeeds when it is already absent. */
  async delete(key: string): Promise<void> {
    const Key = this.#key(key);
    await this.#retry(
      `delete ${key}`,
      async () => {
        await (await this.#c()).send(new sdk.DeleteObjectCommand({ Bucket: this.bucket, Key }));
      },
      async (err) => {
        const i = info(err);
        if (i.name === 'NoSuchKey' || (i.status === 404 && i.name !== 'NoSuchBucket')) return { value: undefined };
        return undefined;
      },
    );
  }

  /**
   * Create the bucket. Idempotent: a bucket we already own is success; a name taken by another
   * account is a ConfigError.
   */
  async createBucket(): Promise<void> {
    try {
      await this.#retry(`create bucket ${this.bucket}`, async () => {
        await (await this.#c()).send(
          new sdk.CreateBucketCommand({
            Bucket: this.bucket,
            ...(this.#isAws && this.#region !== 'us-east-1'
              ? { CreateBucketConfiguration: { LocationConstraint: this.#region as never } }
              : {}),
          }),
        );
      });
    } catch (err) {
      const name = info((err as { cause?: unknown }).cause ?? err).name;
      if (name === 'BucketAlreadyOwnedByYou') return;
      if (name === 'BucketAlreadyExists') {
        // radosgw answers so for a bucket of the same user too: ask whether we can use it.
        if (await this.bucketExists()) return;
        throw new ConfigError(`bucket ${this.bucket} already exists and belongs to another account (${this.#endpointLabel})`, { cause: err });
      }
      throw err;
    }
  }

  /** True when the bucket exists and these credentials may use it; false when it does not exist. */
  async bucketExists(): Promise<boolean> {
    const r = await this.#retry(
      `head bucket ${this.bucket}`,
      async () => {
        await (await this.#c()).send(new sdk.HeadBucketCommand({ Bucket: this.bucket }));
        return true;
      },
      async (err) => {
        const i = info(err);
        if (i.status === 404 || i.name === 'NotFound' || i.name === 'NoSuchBucket') return { value: false };
        return undefined;
      },
    );
    return r;
  }

  /** Release the client's sockets (only when this storage built the client). */
  async close(): Promise<void> {
    if (this.#ownsClient) this.#client?.destroy();
  }
}

function clientConfig(o: S3StorageOptions, region: string): S3ClientConfig {
  const sdkLog = {
    debug: (..._a: unknown[]) => undefined,
    info: (..._a: unknown[]) => undefined,
    warn: (...a: unknown[]) => log.debug(`s3 client: ${a.map(String).join(' ')}`),
    error: (...a: unknown[]) => log.debug(`s3 client: ${a.map(String).join(' ')}`),
  };
  const cfg: S3ClientConfig = {
    region,
    maxAttempts: 1, // retries are ours (#retry)
    forcePathStyle: o.forcePathStyle ?? Boolean(o.endpoint),
    requestChecksumCalculation: 'WHEN_REQUIRED', // Content-MD5 is ours; many S3-compatible stores refuse CRC trailers
    responseChecksumValidation: 'WHEN_REQUIRED',
    logger: sdkLog,
    requestHandler: {
      connectionTimeout: o.connectTimeoutMs ?? 10_000,
      socketTimeout: o.socketTimeoutMs ?? 120_000,
      httpAgent: { keepAlive: true, maxSockets: 32 },
      httpsAgent: { keepAlive: true, maxSockets: 32 },
      logger: sdkLog,
    },
  };
  if (o.endpoint) cfg.endpoint = o.endpoint;
  if (o.accessKeyId || o.secretAccessKey) {
    if (!o.accessKeyId || !o.secretAccessKey) throw new ConfigError('S3 credentials need both an access key id and a secret access key');
    cfg.credentials = { accessKeyId: o.accessKeyId, secretAccessKey: o.secretAccessKey, ...(o.sessionToken ? { sessionToken: o.sessionToken } : {}) };
  }
  return cfg;
}

/** Create the bucket of these options (idempotent; for `permafrost init`). */
export async function createBucket(options: S3StorageOptions): Promise<void> {
  const s = new S3Storage(options);
  try {
    await s.createBucket();
  } finally {
    await s.close();
  }
}
