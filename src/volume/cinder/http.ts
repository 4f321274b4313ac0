/**
 * HTTP plumbing for the OpenStack clients: Node's global fetch with timeouts,
 * optional custom CA / insecure TLS, retry with backoff, and mapping of
 * OpenStack error bodies to the agent's error hierarchy.
 */
import { readFile } from 'node:fs/promises';
import { AuthError, CloudError, ConfigError, NotFoundError, PermafrostError, UnreachableError } from '../../errors.js';
import { redact } from '../../util/log.js';

/** One request. `body` is sent as JSON when it is not undefined. */
export interface HttpRequest {
  method: string;
  url: string;
  headers?: Record<string, string>;
  body?: unknown;
  timeoutMs?: number;
  signal?: AbortSignal;
}

/** A response, fully read. `json` is the parsed body when it is JSON. */
export interface HttpResponse {
  status: number;
  headers: Headers;
  text: string;
  json?: unknown;
}

/** TLS and timeout settings of an {@link HttpClient}. */
export interface HttpClientOptions {
  /** PEM file with the CA bundle to trust (OS_CACERT). */
  cacert?: string;
  /** Skip certificate verification (OS_INSECURE). */
  insecure?: boolean;
  /** Per request timeout (default 60 s). */
  timeoutMs?: number;
  userAgent?: string;
}

/** A request that never got an answer: `sent` is false when it surely never reached the server. */
export class TransportError extends UnreachableError {
  readonly sent: boolean;
  constructor(message: string, sent: boolean, options?: { cause?: unknown }) {
    super(message, options);
    this.sent = sent;
  }
}

const NOT_SENT_CODES = new Set(['ECONNREFUSED', 'ENOTFOUND', 'EAI_AGAIN', 'EHOSTUNREACH', 'ENETUNREACH', 'UND_ERR_CONNECT_TIMEOUT', 'CERT_HAS_EXPIRED', 'DEPTH_ZERO_SELF_SIGNED_CERT', 'SELF_SIGNED_CERT_IN_CHAIN', 'UNABLE_TO_VERIFY_LEAF_SIGNATURE', 'ERR_TLS_CERT_ALTNAME_INVALID']);
const TLS_CODES = new Set(['CERT_HAS_EXPIRED', 'DEPTH_ZERO_SELF_SIGNED_CERT', 'SELF_SIGNED_CERT_IN_CHAIN', 'UNABLE_TO_VERIFY_LEAF_SIGNATURE', 'ERR_TLS_CERT_ALTNAME_INVALID', 'UNABLE_TO_GET_ISSUER_CERT_LOCALLY']);

function errCode(err: unknown): string | undefined {
  let e: unknown = err;
  for (let i = 0; i < 4 && e; i++) {
    const code = (e as { code?: unknown }).code;
    if (typeof code === 'string') return code;
    e = (e as { cause?: unknown }).cause;
  }
  return undefined;
}

type Dispatcher = object;
let agentCtor: (new (opts: unknown) => Dispatcher) | undefined;

/** The undici Agent class behind Node's fetch (Node does not export it; it is the global dispatcher's class). */
async function undiciAgent(): Promise<new (opts: unknown) => Dispatcher> {
  if (agentCtor) return agentCtor;
  const key = Symbol.for('undici.globalDispatcher.1');
  if (!(globalThis as Record<symbol, unknown>)[key]) await fetch('data:,').catch(() => undefined);
  const d = (globalThis as Record<symbol, unknown>)[key] as { constructor?: new (opts: unknown) => Dispatcher } | undefined;
  if (!d?.constructor) throw new ConfigError('this Node.js does not allow a custom CA or insecure TLS for fetch; use NODE_EXTRA_CA_CERTS instead');
  agentCtor = d.constructor;
  return agentCtor;
}

/** Minimal HTTP client over the global fetch. Never throws on an HTTP status; throws TransportError when no answer came. */
export class HttpClient {
  private readonly opts: HttpClientOptions;
  private dispatcher?: Promise<Dispatcher | undefined>;

  constructor(opts: HttpClientOptions = {}) {
    this.opts = opts;
  }

  private getDispatcher(): Promise<Dispatcher | undefined> {
    if (!this.opts.cacert && !this.opts.insecure) return Promise.resolve(undefined);
    this.dispatcher ??= (async () => {
      const Agent = await undiciAgent();
      let ca: string | undefined;
      if (this.opts.cacert) {
        try {
          ca = await readFile(this.opts.cacert, 'utf8');
        } catch (err) {
          throw new ConfigError(`cannot read CA bundle ${this.opts.cacert}: ${(err as Error).message}`, { cause: err });
        }
      }
      return new Agent({ connect: { ca, rejectUnauthorized: !this.opts.insecure } });
    })();
    return this.dispatcher;
  }

  /** Send one request and read the whole answer. */
  async send(req: HttpRequest): Promise<HttpResponse> {
    const headers: Record<string, string> = { Accept: 'application/json', 'User-Agent': this.opts.userAgent ?? 'permafrost', ...req.headers };
    let body: string | undefined;
    if (req.body !== undefined) {
      body = JSON.stringify(req.body);
      headers['Content-Type'] ??= 'application/json';
    }
    const timeoutMs = req.timeoutMs ?? this.opts.timeoutMs ?? 60_000;
    const timeout = AbortSignal.timeout(timeoutMs);
    const signal = req.signal ? AbortSignal.any([req.signal, timeout]) : timeout;
    const dispatcher = await this.getDispatcher();
    const init: RequestInit & { dispatcher?: Dispatcher } = { method: req.method, headers, body, signal };
    if (dispatcher) init.dispatcher = dispatcher;
    const what = `${req.method} ${stripQuery(req.url)}`;
    let res: Response;
    try {
      res = await fetch(req.url, init);
    } catch (err) {
      if (req.signal?.aborted) throw err;
      const code = errCode(err);
      if (timeout.aborted) throw new TransportError(`${what}: no answer within ${Math.round(timeoutMs / 1000)} s`, true, { cause: err });
      if (code && TLS_CODES.has(code)) {
        throw new TransportError(`${what}: TLS verification failed (${code}); set cacert (OS_CACERT) or insecure`, false, { cause: err });
      }
      const detail = code ?? ((err as Error).cause as Error | undefined)?.message ?? (err as Error).message;
      throw new TransportError(`${what}: ${detail}`, code !== undefined && NOT_SENT_CODES.has(code), { cause: err });
    }
    let text: string;
    try {
      text = await res.text();
    } catch (err) {
      throw new TransportError(`${what}: connection lost while reading the answer (${errCode(err) ?? (err as Error).message})`, true, { cause: err });
    }
    let json: unknown;
    if (text && (res.headers.get('content-type') ?? '').includes('json')) {
      try {
        json = JSON.parse(text);
      } catch {
        json = undefined;
      }
    }
    return { status: res.status, headers: res.headers, text, json };
  }
}

/** The URL without its query string, for messages. */
export function stripQuery(url: string): string {
  const i = url.indexOf('?');
  return i < 0 ? url : url.slice(0, i);
}

/** The message of an OpenStack error body: {"itemNotFound":{"message":..}}, {"error":{"message":..}}, {"NeutronError":..}, text. */
export function faultMessage(res: HttpResponse): string {
  const j = res.json as Record<string, unknown> | undefined;
  if (j && typeof j === 'object') {
    for (const v of Object.values(j)) {
      if (v && typeof v === 'object' && typeof (v as { message?: unknown }).message === 'string') return (v as { message: string }).message;
    }
    if (typeof j.message === 'string') return j.message;
  }
  const t = res.text
    .replace(/<[^>]*>/g, ' ')
    .replace(/\s+/g, ' ')
    .trim();
  return t.length > 300 ? `${t.slice(0, 300)}…` : t || `HTTP ${res.status}`;
}

/** The key of an OpenStack error body (itemNotFound, overLimit, badRequest, ...). */
export function faultKind(res: HttpResponse): string | undefined {
  const j = res.json as Record<string, unknown> | undefined;
  if (!j || typeof j !== 'object') return undefined;
  const k = Object.keys(j)[0];
  return k;
}

/** Map a non-2xx answer to our error hierarchy. `what` names the operation ("show volume 1234"). */
export function errorFromResponse(res: HttpResponse, what: string): PermafrostError {
  const msg = redact(faultMessage(res));
  const s = res.status;
  if (s === 404) return new NotFoundError(`${what}: not found (${msg})`);
  if (s === 401) return new AuthError(`${what}: authentication failed (${msg})`);
  if (s === 403) return new AuthError(`${what}: forbidden by policy (${msg})`);
  if (s === 413 || faultKind(res) === 'overLimit') return new CloudError(`${what}: quota exceeded: ${msg}`, s);
  if (s === 429) return new CloudError(`${what}: rate limited: ${msg}`, s);
  if (s >= 500) return new CloudError(`${what}: server error HTTP ${s}: ${msg}`, s);
  return new CloudError(`${what}: HTTP ${s}: ${msg}`, s);
}

/** Backoff settings; delays grow geometrically with jitter up to maxDelayMs. */
export interface RetryPolicy {
  attempts: number;
  baseDelayMs: number;
  maxDelayMs: number;
}

/** Default: 5 attempts, 0.5 s doubling up to 8 s. */
export const defaultRetry: RetryPolicy = { attempts: 5, baseDelayMs: 500, maxDelayMs: 8000 };

/** Statuses worth retrying: the server may answer differently next time. */
export function isTransientStatus(status: number): boolean {
  return status === 429 || status === 500 || status === 502 || status === 503 || status === 504;
}

/** Delay before attempt `n` (1-based retry count), honouring Retry-After when given. */
export function backoffDelay(policy: RetryPolicy, n: number, retryAfter?: string | null): number {
  if (retryAfter) {
    const secs = Number(retryAfter);
    if (Number.isFinite(secs) && secs >= 0) return Math.min(secs * 1000, 60_000);
  }
  const exp = Math.min(policy.maxDelayMs, policy.baseDelayMs * 2 ** (n - 1));
  return Math.round(exp / 2 + Math.random() * (exp / 2));
}


/** Parse an OpenStack timestamp; those without a zone are UTC. */
export function parseOsTime(s: string | null | undefined): number | undefined {
  if (!s) return undefined;
  const withZone = /[zZ]|[+-]\d\d:?\d\d$/.test(s) ? s : `${s}Z`;
  const t = Date.parse(withZone);
  return Number.isNaN(t) ? undefined : t;
}
