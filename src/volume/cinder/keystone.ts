/**
 * Keystone v3: authentication (password or application credential), the
 * service catalog, and a session that caches its token. The session renews
 * the token shortly before it expires and once after a 401, and concurrent
 * requests during a renewal share one authentication call (Keystone takes
 * most of a second per call on small clouds).
 */
import { AuthError, ConfigError, UnreachableError, pause } from '../../errors.js';
import { log, redact, registerSecret } from '../../util/log.js';
import type { EndpointInterface, OpenStackAuthConfig } from '../openstack-config.js';
import {
  HttpClient,
  type HttpRequest,
  type HttpResponse,
  type RetryPolicy,
  TransportError,
  backoffDelay,
  defaultRetry,
  errorFromResponse,
  faultMessage,
  isTransientStatus,
  parseOsTime,
  stripQuery,
} from './http.js';

/** One endpoint of a catalog entry. */
export interface CatalogEndpoint {
  interface: string;
  region?: string | null;
  region_id?: string | null;
  url: string;
}

/** One service of the catalog. */
export interface CatalogService {
  type: string;
  name?: string;
  endpoints: CatalogEndpoint[];
}

/** What a token tells us. `expiresAt` is on this host's clock (skew-free). */
export interface TokenInfo {
  token: string;
  expiresAt: number;
  /** Expiry as Keystone wrote it. */
  expiresAtText: string;
  userId?: string;
  userName?: string;
  projectId?: string;
  projectName?: string;
  roles: string[];
  catalog: CatalogService[];
}

/** Options of a {@link KeystoneSession}. */
export interface KeystoneSessionOptions {
  http?: HttpClient;
  /** Renew this long before expiry (default 5 min, at most half the token's lifetime). */
  renewBeforeMs?: number;
  retry?: RetryPolicy;
  /** Clock, for tests. */
  now?: () => number;
}

/** Extra options of {@link KeystoneSession.request}. */
export interface SessionRequestOptions {
  /**
   * 'idempotent': retry on transport errors, 429 and 5xx (GET, PUT, DELETE, harmless POSTs);
   * 'safe': retry only when the request surely had no effect (connection refused, 429);
   * 'none': never retry.
   */
  retry?: 'idempotent' | 'safe' | 'none';
}

/** The Keystone v3 base URL for an auth_url given with or without its version. */
export function identityV3Url(authUrl: string): string {
  const u = authUrl.replace(/\/+$/, '');
  if (/\/v3$/.test(u)) return u;
  if (/\/v2\.0$/.test(u)) return u.replace(/\/v2\.0$/, '/v3');
  return `${u}/v3`;
}

/** The body of POST /v3/auth/tokens for these credentials. */
export function authRequestBody(cfg: OpenStackAuthConfig): unknown {
  const domain = (name?: string, id?: string) => (id ? { id } : name ? { name } : undefined);
  const user = () => (cfg.userId ? { id: cfg.userId } : { name: cfg.username, domain: domain(cfg.userDomainName, cfg.userDomainId) });
  if (cfg.authType === 'v3applicationcredential') {
    const ac: Record<string, unknown> = { secret: cfg.applicationCredentialSecret };
    if (cfg.applicationCredentialId) ac.id = cfg.applicationCredentialId;
    else {
      ac.name = cfg.applicationCredentialName;
      ac.user = user();
    }
    // An application credential carries its own project scope.
    return { auth: { identity: { methods: ['application_credential'], application_credential: ac } } };
  }
  const body: Record<string, unknown> = {
    identity: { methods: ['password'], password: { user: { ...user(), password: cfg.password } } },
  };
  if (cfg.projectId) body.scope = { project: { id: cfg.projectId } };
  else if (cfg.projectName) body.scope = { project: { name: cfg.projectName, domain: domain(cfg.projectDomainName, cfg.projectDomainId) } };
  return { auth: body };
}

/** Who is authenticating, for messages (never the secret). */
function principal(cfg: OpenStackAuthConfig): string {
  if (cfg.authType === 'v3applicationcredential') return `application credential ${cfg.applicationCredentialId ?? cfg.applicationCredentialName}`;
  const user = cfg.userId ?? `${cfg.username}${cfg.userDomainName ? `@${cfg.userDomainName}` : ''}`;
  const project = cfg.projectId ?? cfg.projectName;
  return `user ${user}${project ? ` (project ${project})` : ''}`;
}

/** Pick an endpoint from a catalog; undefined when none matches. Service types are tried in order. */
export function findEndpoint(catalog: CatalogService[], serviceTypes: string[], iface: EndpointInterface, region?: string): string | undefined {
  for (const type of serviceTypes) {
    for (const svc of catalog.filter((s) => s.type === type)) {
      const ep = svc.endpoints.find(
        (e) => e.interface.replace(/URL$/, '') === iface && (!region || e.region_id === region || e.region === region),
      );
      if (ep) return ep.url;
    }
  }
  return undefined;
}

function describeCatalog(catalog: CatalogService[]): string {
  if (!catalog.length) return 'the catalog is empty (is the token scoped to a project?)';
  return `catalog has: ${catalog
    .map((s) => `${s.type}[${[...new Set(s.endpoints.map((e) => `${e.interface}@${e.region_id ?? e.region ?? '-'}`))].join(',')}]`)
    .join(' ')}`;
}

/** A Keystone session: one cached token, renewed when needed, shared by all requests. */
export class KeystoneSession {
  readonly config: OpenStackAuthConfig;
  readonly http: HttpClient;
  readonly identityUrl: string;
  private readonly renewBeforeMs: number;
  private readonly retry: RetryPolicy;
  private readonly now: () => number;
  private current?: TokenInfo;
  private pending?: Promise<TokenInfo>;
  /** Number of POST /auth/tokens calls made (for tests and --debug). */
  authCount = 0;
  /** Duration of the last authentication, in ms. */
  lastAuthMs = 0;

  constructor(config: OpenStackAuthConfig, opts: KeystoneSessionOptions = {}) {
    this.config = config;
    this.http = opts.http ?? new HttpClient({ cacert: config.cacert, insecure: config.insecure });
    this.identityUrl = identityV3Url(config.authUrl);
    this.renewBeforeMs = opts.renewBeforeMs ?? 5 * 60_000;
    this.retry = opts.retry ?? defaultRetry;
    this.now = opts.now ?? Date.now;
    registerSecret(config.password);
    registerSecret(config.applicationCredentialSecret);
  }

  /** A valid token, authenticating only when there is none or it is about to expire. */
  async getToken(): Promise<TokenInfo> {
    const t = this.current;
    if (t && !this.needsRenewal(t)) return t;
    return this.renew(t?.token);
  }

  /** The roles of the current token (authenticating if needed). */
  async roles(): Promise<string[]> {
    return (await this.getToken()).roles;
  }

  /** True when the token carries the admin role. */
  async isAdmin(): Promise<boolean> {
    return (await this.roles()).some((r) => r.toLowerCase() === 'admin');
  }

  /** Forget the token `stale` (or any) so that the next call authenticates again. */
  invalidate(stale?: string): void {
    if (!stale || this.current?.token === stale) this.current = undefined;
  }

  private needsRenewal(t: TokenInfo): boolean {
    return this.now() >= t.expiresAt;
  }

  /** Authenticate once for every caller waiting; `stale` is the token the caller saw fail or expire. */
  private renew(stale?: string): Promise<TokenInfo> {
    if (this.current && this.current.token !== stale && !this.needsRenewal(this.current)) return Promise.resolve(this.current);
    this.pending ??= this.authenticate().finally(() => {
      this.pending = undefined;
    });
    return this.pending;
  }

  /** POST /v3/auth/tokens. Errors: AuthError (401/403), UnreachableError, CloudError. */
  async authenticate(): Promise<TokenInfo> {
    const url = `${this.identityUrl}/auth/tokens`;
    const started = this.now();
    this.authCount++;
    let res: HttpResponse;
    try {
      res = await this.sendWithRetry({ method: 'POST', url, body: authRequestBody(this.config), headers: {} }, 'idempotent');
    } catch (err) {
      if (err instanceof UnreachableError) {
        throw new UnreachableError(`cannot reach Keystone at ${this.identityUrl}: ${err.message}`, { cause: err });
      }
      throw err;
    }
    this.lastAuthMs = this.now() - started;
    if (res.status === 401 || res.status === 403) {
      throw new AuthError(`Keystone at ${this.identityUrl} rejected the credentials of ${principal(this.config)}: ${redact(faultMessage(res))}`);
    }
    if (res.status === 404 && !res.json) {
      throw new ConfigError(`no Keystone v3 API at ${this.identityUrl} (HTTP 404); check auth_url`);
    }
    if (res.status !== 201 && res.status !== 200) throw errorFromResponse(res, `authenticate at ${this.identityUrl}`);
    const token = res.headers.get('x-subject-token');
    if (!token) throw new AuthError(`Keystone at ${this.identityUrl} answered without X-Subject-Token`);
    registerSecret(token);
    const body = (res.json as { token?: Record<string, unknown> } | undefined)?.token ?? {};
    const expiresAtText = String(body.expires_at ?? '');
    const exp = parseOsTime(expiresAtText);
    const issued = parseOsTime(body.issued_at as string | undefined);
    // Expiry on our clock: lifetime as Keystone counts it, from when we asked.
    const lifetime = exp !== undefined ? exp - (issued ?? Date.now()) : 3600_000;
    const renewBefore = Math.min(this.renewBeforeMs, lifetime / 2);
    const info: TokenInfo = {
      token,
      expiresAt: started + lifetime - renewBefore,
      expiresAtText,
      userId: (body.user as { id?: string } | undefined)?.id,
      userName: (body.user as { name?: string } | undefined)?.name,
      projectId: (body.project as { id?: string } | undefined)?.id,
      projectName: (body.project as { name?: string } | undefined)?.name,
      roles: ((body.roles as { name: string }[] | undefined) ?? []).map((r) => r.name),
      catalog: (body.catalog as CatalogService[] | undefined) ?? [],
    };
    this.current = info;
    log.debug(`keystone: authenticated ${principal(this.config)} in ${this.lastAuthMs} ms, token expires ${expiresAtText}`);
    return info;
  }

  /**
   * The URL of a service from the catalog. ConfigError naming the service
   * types, interface and region when the catalog has none.
   */
  async endpoint(serviceTypes: string[], iface: EndpointInterface = this.config.interface, region: string | undefined = this.config.regionName): Promise<string> {
    const t = await this.getToken();
    const url = findEndpoint(t.catalog, serviceTypes, iface, region);
    if (!url) {
      throw new ConfigError(
        `no ${serviceTypes.join('/')} endpoint in the service catalog for interface ${iface}${region ? ` in region ${region}` : ' (any region)'}; ${describeCatalog(t.catalog)}`,
      );
    }
    return url.replace(/\/+$/, '');
  }

  /**
   * Send an authenticated request. Renews the token once on a 401; retries
   * per `opts.retry`. Returns the answer whatever its status (the caller maps
   * errors), except a 401 after renewal, which is an AuthError.
   */
  async request(req: HttpRequest, opts: SessionRequestOptions = {}): Promise<HttpResponse> {
    let tok = await this.getToken();
    let res = await this.sendWithRetry({ ...req, headers: { ...req.headers, 'X-Auth-Token': tok.token } }, opts.retry ?? 'idempotent');
    if (res.status === 401) {
      log.debug(`keystone: 401 on ${req.method} ${stripQuery(req.url)}, renewing the token`);
      this.invalidate(tok.token);
      tok = await this.renew(tok.token);
      res = await this.sendWithRetry({ ...req, headers: { ...req.headers, 'X-Auth-Token': tok.token } }, opts.retry ?? 'idempotent');
      if (res.status === 401) {
        throw new AuthError(`${req.method} ${stripQuery(req.url)}: token refused even after renewal: ${redact(faultMessage(res))}`);
      }
    }
    return res;
  }

  /** Send with retries; throws TransportError after the last attempt. */
  private async sendWithRetry(req: HttpRequest, mode: 'idempotent' | 'safe' | 'none'): Promise<HttpResponse> {
    const attempts = mode === 'none' ? 1 : this.retry.attempts;
    for (let n = 1; ; n++) {
      let res: HttpResponse | undefined;
      let err: unknown;
      try {
        res = await this.http.send(req);
      } catch (e) {
        if (!(e instanceof TransportError)) throw e;
        err = e;
      }
      const retriable = res
        ? mode === 'idempotent'
          ? isTransientStatus(res.status)
          : res.status === 429
        : mode === 'idempotent' || !(err as TransportError).sent;
      if (!retriable || n >= attempts) {
        if (res) return res;
        throw err;
      }
      const delay = backoffDelay(this.retry, n, res?.headers.get('retry-after'));
      log.debug(`${req.method} ${stripQuery(req.url)}: ${res ? `HTTP ${res.status}` : (err as Error).message}; retry ${n}/${attempts - 1} in ${delay} ms`);
      await pause(delay, req.signal);
    }
  }
}
