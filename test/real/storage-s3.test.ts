/**
 * S3Storage against a real radosgw (test/lab), plus retries and error mapping through a small
 * fault-injecting HTTP proxy on 127.0.0.1 (forwarding to radosgw, or answering alone).
 */
import { randomBytes } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { DeleteBucketCommand, ListMultipartUploadsCommand, S3Client } from '@aws-sdk/client-s3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  AlreadyExistsError,
  AuthError,
  NoRepositoryError,
  NoSpaceError,
  NotFoundError,
  PermafrostError,
  UnreachableError,
} from '../../src/errors.js';
import { openStorage } from '../../src/storage/index.js';
import { S3Storage, createBucket, type S3StorageOptions } from '../../src/storage/s3.js';
import { ensureLab, isSkip, type LabEnv } from '../setup/lab.js';
import { listAll, mapLimit, storageContract } from '../storage/contract.js';

const MiB = 1024 * 1024;

// ---------------------------------------------------------------------------------------------
// Fault-injecting proxy

type Fault =
  | { status: number; code?: string; retryAfter?: number; body?: boolean }
  | { reset: true };

interface Seen {
  method: string;
  url: string;
}

/** An HTTP server on 127.0.0.1 that answers queued faults, then forwards to `upstream` (or 500s). */
class FaultProxy {
  readonly seen: Seen[] = [];
  faults: Fault[] = [];
  /** Only requests for which this is true consume a fault (default: all). */
  match: (req: http.IncomingMessage) => boolean = () => true;
  #server: http.Server;
  #upstream?: URL;

  constructor(upstream?: string) {
    this.#upstream = upstream ? new URL(upstream) : undefined;
    this.#server = http.createServer((req, res) => this.#handle(req, res));
  }

  async start(): Promise<string> {
    await new Promise<void>((r) => this.#server.listen(0, '127.0.0.1', r));
    return `http://127.0.0.1:${(this.#server.address() as AddressInfo).port}`;
  }

  async stop(): Promise<void> {
    this.#server.closeAllConnections();
    await new Promise<void>((r) => this.#server.close(() => r()));
  }

  count(pred: (s: Seen) => boolean = () => true): number {
    return this.seen.filter(pred).length;
  }

  #handle(req: http.IncomingMessage, res: http.ServerResponse): void {
    this.seen.push({ method: req.method ?? '', url: req.url ?? '' });
    if (this.faults.length > 0 && this.match(req)) {
      const f = this.faults.shift()!;
      if ('reset' in f) {
        req.socket.destroy();
        return;
      }
      req.resume();
      req.on('end', () => {
        const headers: Record<string, string | number> = { 'content-type': 'application/xml', connection: 'close' };
        if (f.retryAfter !== undefined) headers['retry-after'] = f.retryAfter;
        const body =
          f.body === false || !f.code
            ? ''
            : `<?xml version="1.0" encoding="UTF-8"?><Error><Code>${f.code}</Code><Message>injected</Message><RequestId>fault</RequestId></Error>`;
        headers['content-length'] = Buffer.byteLength(body);
        res.writeHead(f.status, headers);
        res.end(req.method === 'HEAD' ? undefined : body);
      });
      return;
    }
    if (!this.#upstream) {
      req.resume();
      req.on('end', () => {
        const body = '<?xml version="1.0" encoding="UTF-8"?><Error><Code>InternalError</Code><Message>no upstream</Message></Error>';
        res.writeHead(500, { 'content-type': 'application/xml', 'content-length': Buffer.byteLength(body) });
        res.end(body);
      });
      return;
    }
    // Forward unchanged (the Host header stays the one the client signed).
    const up = http.request(
      { host: this.#upstream.hostname, port: this.#upstream.port, method: req.method, path: req.url, headers: req.headers },
      (upRes) => {
        res.writeHead(upRes.statusCode ?? 502, upRes.headers);
        upRes.pipe(res);
      },
    );
    up.on('error', () => res.destroy());
    req.pipe(up);
  }
}

// ---------------------------------------------------------------------------------------------
// Without radosgw: failures must be final, mapped and quick.

describe('S3Storage: failures without a backend', () => {
  it('an unreachable endpoint (127.0.0.1:1) gives UnreachableError naming it, quickly', async () => {
    const s = new S3Storage({
      bucket: 'b',
      endpoint: 'http://127.0.0.1:1',
      accessKeyId: 'AKIAUNREACHABLE',
      secretAccessKey: 'unreachable-secret-0000',
      maxAttempts: 2,
      retryBaseDelayMs: 10,
      connectTimeoutMs: 1000,
    });
    const t0 = Date.now();
    const err = await s.get('config').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(UnreachableError);
    expect((err as UnreachableError).exitCode).toBe(15);
    expect((err as Error).message).toContain('127.0.0.1:1');
    expect((err as Error).message).not.toContain('unreachable-secret-0000');
    expect(Date.now() - t0).toBeLessThan(5000);
    await expect(s.put('x', Buffer.from('x'))).rejects.toBeInstanceOf(UnreachableError);
    await expect(listAll(s, '')).rejects.toBeInstanceOf(UnreachableError);
    await s.close();
  });

  /** A storage whose client answers each send with the next of `outcomes` (an Error is thrown). */
  function scripted(outcomes: unknown[], extra: Partial<S3StorageOptions> = {}): { s: S3Storage; calls: () => number } {
    let calls = 0;
    const client = {
      send: async () => {
        const o = outcomes[Math.min(calls++, outcomes.length - 1)];
        if (o instanceof Error) throw o;
        return o;
      },
      destroy: () => undefined,
    } as unknown as S3Client;
    const s = new S3Storage({ bucket: 'b', endpoint: 'http://s3.example.test:7480', client, retryBaseDelayMs: 1, maxAttempts: 4, ...extra });
    return { s, calls: () => calls };
  }
  const sdkError = (name: string, status?: number, extra: Record<string, unknown> = {}): Error =>
    Object.assign(new Error(name), { name, ...(status ? { $metadata: { httpStatusCode: status } } : {}), ...extra });

  it('a host name that does not resolve gives UnreachableError at once', async () => {
    const { s, calls } = scripted([Object.assign(new Error('getaddrinfo ENOTFOUND s3.example.test'), { code: 'ENOTFOUND' })]);
    const err = await s.stat('config').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(UnreachableError);
    expect((err as Error).message).toContain('s3.example.test:7480');
    expect(calls()).toBe(1);
  });

  it('timeouts and resets are retried; what succeeds after them is returned', async () => {
    const { s, calls } = scripted([
      sdkError('TimeoutError'),
      Object.assign(new Error('socket hang up'), { code: 'ECONNRESET' }),
      Object.assign(new Error('write EPIPE'), { code: 'EPIPE' }),
      { ContentLength: 3, LastModified: new Date(0) },
    ]);
    expect((await s.stat('k'))!.size).toBe(3);
    expect(calls()).toBe(4);
  });

  it('missing credentials, quota and unknown errors map to AuthError, NoSpaceError and a plain failure', async () => {
    const cred = scripted([sdkError('CredentialsProviderError')]);
    const e1 = await cred.s.get('k').catch((e: unknown) => e);
    expect(e1).toBeInstanceOf(AuthError);
    expect((e1 as Error).message).toMatch(/AWS_ACCESS_KEY_ID/);
    const quota = scripted([sdkError('QuotaExceeded', 403)]);
    expect(await quota.s.put('k', Buffer.from('x')).catch((e: unknown) => e)).toBeInstanceOf(NoSpaceError);
    const odd = scripted([sdkError('MethodNotAllowed', 405)]);
    const e3 = await odd.s.delete('k').catch((e: unknown) => e);
    expect(e3).toBeInstanceOf(PermafrostError);
    expect((e3 as Error).message).toContain('MethodNotAllowed (HTTP 405)');
    expect(odd.calls()).toBe(1);
  });

  it('persistent 503 SlowDown: exactly maxAttempts requests, then UnreachableError', async () => {
    const proxy = new FaultProxy();
    const endpoint = await proxy.start();
    try {
      proxy.faults = Array.from({ length: 10 }, () => ({ status: 503, code: 'SlowDown' }));
      const s = new S3Storage({ bucket: 'b', endpoint, accessKeyId: 'AKIAX', secretAccessKey: 'secretsecret', maxAttempts: 3, retryBaseDelayMs: 5 });
      const err = await s.put('k', Buffer.from('v')).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(UnreachableError);
      expect((err as Error).message).toMatch(/SlowDown/);
      expect((err as Error).message).toMatch(/3 attempt/);
      expect(proxy.count()).toBe(3);
      await s.close();
    } finally {
      await proxy.stop();
    }
  });

  it('a 400 that is not transient is not retried', async () => {
    const proxy = new FaultProxy();
    const endpoint = await proxy.start();
    try {
      proxy.faults = [{ status: 400, code: 'InvalidArgument' }];
      const s = new S3Storage({ bucket: 'b', endpoint, accessKeyId: 'AKIAX', secretAccessKey: 'secretsecret', maxAttempts: 5, retryBaseDelayMs: 5 });
      const err = await s.put('k', Buffer.from('v')).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(PermafrostError);
      expect(err).not.toBeInstanceOf(UnreachableError);
      expect((err as Error).message).toContain('InvalidArgument');
      expect(proxy.count()).toBe(1);
      await s.close();
    } finally {
      await proxy.stop();
    }
  });
});

// ---------------------------------------------------------------------------------------------
// Against radosgw

const lab = await ensureLab(['s3']);
if (isSkip(lab)) console.warn(`[storage-s3] radosgw suites skipped: ${lab.skip}`);
const haveLab = !isSkip(lab);
const env = haveLab ? (lab as LabEnv) : undefined;
const runId = `${Date.now().toString(36)}-${randomBytes(3).toString('hex')}`;
const prefixes: string[] = [];

function baseOptions(): Omit<S3StorageOptions, 'bucket'> {
  return {
    endpoint: env!.s3.endpoint,
    region: env!.s3.region,
    accessKeyId: env!.s3.accessKeyId,
    secretAccessKey: env!.s3.secretAccessKey,
    forcePathStyle: true,
    retryBaseDelayMs: 20,
  };
}

function storageAt(prefix: string, extra: Partial<S3StorageOptions> = {}): S3Storage {
  prefixes.push(prefix);
  return new S3Storage({ ...baseOptions(), bucket: env!.s3.bucket, prefix, ...extra });
}

describe.skipIf(!haveLab)('S3Storage on radosgw', () => {
  beforeAll(async () => {
    await createBucket({ ...baseOptions(), bucket: env!.s3.bucket });
  });

  afterAll(async () => {
    // leave the lab's bucket as we found it
    const s = new S3Storage({ ...baseOptions(), bucket: env!.s3.bucket });
    for (const p of new Set(prefixes)) {
      const keys = (await listAll(s, `${p}/`)).map((o) => o.key);
      await mapLimit(keys, 32, (k) => s.delete(k));
    }
    await s.close();
  }, 300_000);

  let n = 0;
  storageContract(
    'S3 (radosgw)',
    async () => storageAt(`pf-test/${runId}/contract-${n++}`, { multipartThreshold: 6 * MiB, partSize: 5 * MiB }),
    { largeObjectSize: 7 * MiB + 12345, partSize: 5 * MiB },
  );

  it('location shows bucket, prefix and endpoint, never credentials', () => {
    const s = storageAt(`pf-test/${runId}/loc`);
    expect(s.location).toBe(`s3://${env!.s3.bucket}/pf-test/${runId}/loc (${env!.s3.endpoint})`);
    expect(s.location).not.toContain(env!.s3.secretAccessKey);
    expect(s.location).not.toContain(env!.s3.accessKeyId);
  });

  it('openStorage(s3://…) with the default region works against radosgw', async () => {
    const prefix = `pf-test/${runId}/open`;
    prefixes.push(prefix);
    const s = openStorage(`s3://${env!.s3.bucket}/${prefix}`, {
      endpoint: env!.s3.endpoint,
      accessKeyId: env!.s3.accessKeyId,
      secretAccessKey: env!.s3.secretAccessKey,
    });
    await s.put('config', Buffer.from('{"version":1}'));
    expect((await s.get('config')).toString()).toBe('{"version":1}');
    const s2 = openStorage(`s3:${env!.s3.endpoint}/${env!.s3.bucket}/${prefix}`, {
      accessKeyId: env!.s3.accessKeyId,
      secretAccessKey: env!.s3.secretAccessKey,
    });
    expect((await s2.get('config')).toString()).toBe('{"version":1}');
    await s.close();
    await s2.close();
  });

  it('prefixes isolate repositories in one bucket', async () => {
    const a = storageAt(`pf-test/${runId}/iso-a`);
    const b = storageAt(`pf-test/${runId}/iso-ab`);
    await a.put('config', Buffer.from('a'));
    await b.put('config', Buffer.from('b'));
    expect((await listAll(a, '')).map((o) => o.key)).toEqual(['config']);
    expect((await a.get('config')).toString()).toBe('a');
    await a.close();
    await b.close();
  });

  it('a missing bucket gives NoRepositoryError naming it', async () => {
    const bucket = `pf-missing-${runId}`;
    const s = new S3Storage({ ...baseOptions(), bucket });
    for (const op of [() => s.get('config'), () => s.put('config', Buffer.from('x')), () => listAll(s, '')]) {
      const err = await op().catch((e: unknown) => e);
      expect(err).toBeInstanceOf(NoRepositoryError);
      expect((err as Error).message).toContain(`bucket ${bucket} does not exist`);
    }
    expect(await s.stat('config')).toBeUndefined();
    expect(await s.bucketExists()).toBe(false);
    await s.close();
  });

  it('createBucket is idempotent', async () => {
    const bucket = `pf-create-${runId}`;
    const opts = { ...baseOptions(), bucket };
    await createBucket(opts);
    await createBucket(opts);
    const s = new S3Storage(opts);
    expect(await s.bucketExists()).toBe(true);
    await s.put('config', Buffer.from('x'));
    await s.delete('config');
    await s.close();
    const raw = new S3Client({
      endpoint: env!.s3.endpoint,
      region: env!.s3.region,
      forcePathStyle: true,
      credentials: { accessKeyId: env!.s3.accessKeyId, secretAccessKey: env!.s3.secretAccessKey },
    });
    await raw.send(new DeleteBucketCommand({ Bucket: bucket }));
    raw.destroy();
  });

  it('a wrong secret gives AuthError whose message does not contain the secret', async () => {
    const secret = 'WRONG-secret-value-0123456789abcdef';
    const s = new S3Storage({ ...baseOptions(), bucket: env!.s3.bucket, secretAccessKey: secret });
    for (const op of [() => s.get('config'), () => s.put('x', Buffer.from('x')), () => listAll(s, '')]) {
      const err = await op().catch((e: unknown) => e);
      expect(err).toBeInstanceOf(AuthError);
      expect((err as AuthError).exitCode).toBe(12);
      expect((err as Error).message).toMatch(/SignatureDoesNotMatch|AccessDenied|HTTP 403/);
      expect((err as Error).message).not.toContain(secret);
      expect(String((err as Error).stack)).not.toContain(secret);
      expect(String((err as Error & { cause?: unknown }).cause)).not.toContain(secret);
    }
    await s.close();
  });

  it('an unknown access key gives AuthError', async () => {
    const secret = 'another-secret-value-xyz';
    const s = new S3Storage({ ...baseOptions(), bucket: env!.s3.bucket, accessKeyId: 'NOSUCHKEY0000000', secretAccessKey: secret });
    const err = await s.get('config').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(AuthError);
    expect((err as Error).message).toMatch(/InvalidAccessKeyId|HTTP 403/);
    expect((err as Error).message).not.toContain(secret);
    await s.close();
  });

  describe('retries through a fault-injecting proxy', () => {
    let proxy: FaultProxy;
    let endpoint: string;
    beforeAll(async () => {
      proxy = new FaultProxy(env!.s3.endpoint);
      endpoint = await proxy.start();
    });
    afterAll(async () => {
      await proxy.stop();
    });
    const viaProxy = (name: string, extra: Partial<S3StorageOptions> = {}): S3Storage =>
      storageAt(`pf-test/${runId}/retry-${name}`, { endpoint, maxAttempts: 6, retryBaseDelayMs: 5, ...extra });
    const reset = (faults: Fault[], match: (req: http.IncomingMessage) => boolean = () => true): void => {
      proxy.seen.length = 0;
      proxy.faults = faults;
      proxy.match = match;
    };

    it('503 SlowDown is retried until the put succeeds', async () => {
      const s = viaProxy('slowdown');
      reset([{ status: 503, code: 'SlowDown' }, { status: 503, code: 'SlowDown' }, { status: 503, code: 'SlowDown' }]);
      await s.put('k', Buffer.from('after slowdown'));
      expect(proxy.count((r) => r.method === 'PUT')).toBe(4);
      expect(proxy.faults.length).toBe(0);
      expect((await s.get('k')).toString()).toBe('after slowdown');
      await s.close();
    });

    it('429 (with and without an XML body) is retried', async () => {
      const s = viaProxy('429');
      await s.put('k', Buffer.from('v429'));
      reset([{ status: 429, code: 'TooManyRequests' }, { status: 429, body: false }]);
      expect((await s.get('k')).toString()).toBe('v429');
      expect(proxy.count((r) => r.method === 'GET')).toBe(3);
      await s.close();
    });

    it('500 InternalError and dropped connections are retried for list and stat', async () => {
      const s = viaProxy('500');
      await s.put('a/1', Buffer.from('1'));
      reset([{ status: 500, code: 'InternalError' }, { reset: true }]);
      expect((await listAll(s, 'a/')).map((o) => o.key)).toEqual(['a/1']);
      expect(proxy.count()).toBe(3);
      reset([{ reset: true }, { status: 502, body: false }]);
      expect((await s.stat('a/1'))!.size).toBe(1);
      expect(proxy.count()).toBe(3);
      await s.close();
    });

    it('Retry-After is honoured', async () => {
      const s = viaProxy('retry-after');
      reset([{ status: 503, code: 'SlowDown', retryAfter: 1 }]);
      const t0 = Date.now();
      await s.put('k', Buffer.from('v'));
      expect(Date.now() - t0).toBeGreaterThanOrEqual(950);
      await s.close();
    });

    it('409 ConditionalRequestConflict on a conditional create is retried; 412 then maps to AlreadyExistsError', async () => {
      const s = viaProxy('conflict');
      reset([{ status: 409, code: 'ConditionalRequestConflict' }]);
      await s.put('lock', Buffer.from('mine'), { ifNoneMatch: true });
      expect(proxy.count((r) => r.method === 'PUT')).toBe(2);
      reset([]);
      await expect(s.put('lock', Buffer.from('theirs'), { ifNoneMatch: true })).rejects.toBeInstanceOf(AlreadyExistsError);
      expect((await s.get('lock')).toString()).toBe('mine');
      await s.close();
    });

    it('a conditional create whose answer was lost is recognised as ours', async () => {
      // Emulated: the object is already there with our content (as if an earlier attempt had landed),
      // and the create now sees a 503 first (an outcome it cannot know), then 412 on the retry.
      const s = viaProxy('lost-answer');
      await s.put('lock', Buffer.from('payload-1'), { ifNoneMatch: true });
      reset([{ status: 503, code: 'ServiceUnavailable' }]);
      const same = viaProxy('lost-answer');
      await same.put('lock', Buffer.from('payload-1'), { ifNoneMatch: true });
      // …but not when the content differs (someone else created it).
      reset([{ status: 503, code: 'ServiceUnavailable' }]);
      await expect(same.put('lock', Buffer.from('payload-2'), { ifNoneMatch: true })).rejects.toBeInstanceOf(AlreadyExistsError);
      await s.close();
      await same.close();
    });

    it('a multipart upload retries a failed part and aborts the upload on a final failure', async () => {
      const s = viaProxy('multipart', { multipartThreshold: 6 * MiB, partSize: 5 * MiB, partConcurrency: 2 });
      const data = randomBytes(11 * MiB);
      const isPart2 = (req: http.IncomingMessage) => req.method === 'PUT' && /[?&]partNumber=2(&|$)/.test(req.url ?? '');
      reset([{ status: 503, code: 'SlowDown' }], isPart2);
      await s.put('big', data);
      expect(proxy.count((r) => r.method === 'PUT' && /partNumber=2/.test(r.url))).toBe(2);
      expect(Buffer.compare(await s.get('big'), data)).toBe(0);

      reset([{ status: 400, code: 'InvalidArgument' }], isPart2);
      const err = await s.put('big-fail', data).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(PermafrostError);
      expect(proxy.count((r) => r.method === 'DELETE' && /uploadId=/.test(r.url))).toBe(1);
      expect(await s.stat('big-fail')).toBeUndefined();
      const raw = new S3Client({
        endpoint: env!.s3.endpoint,
        region: env!.s3.region,
        forcePathStyle: true,
        credentials: { accessKeyId: env!.s3.accessKeyId, secretAccessKey: env!.s3.secretAccessKey },
      });
      const uploads = await raw.send(new ListMultipartUploadsCommand({ Bucket: env!.s3.bucket, Prefix: `pf-test/${runId}/retry-multipart/` }));
      expect(uploads.Uploads ?? []).toEqual([]);
      raw.destroy();
      await s.close();
    }, 120_000);

    it('a missing key through the proxy is NotFoundError, not retried', async () => {
      const s = viaProxy('missing');
      reset([]);
      await expect(s.get('nope')).rejects.toBeInstanceOf(NotFoundError);
      expect(proxy.count()).toBe(1);
      await s.close();
    });
  });
});
