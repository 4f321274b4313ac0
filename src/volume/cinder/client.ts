/**
 * Block Storage v3 client: endpoint from the catalog, microversion
 * negotiation, JSON calls with retries and error mapping, volumes and
 * snapshots. Attachments, groups, types, zones and messages live in
 * sibling modules that take a CinderClient.
 */
import { CloudError, UnreachableError, pause } from '../../errors.js';
import { log } from '../../util/log.js';
import type { EndpointInterface } from '../openstack-config.js';
import {
  type HttpResponse,
  type RetryPolicy,
  TransportError,
  backoffDelay,
  defaultRetry,
  errorFromResponse,
  isTransientStatus,
  parseOsTime,
} from './http.js';
import type { KeystoneSession } from './keystone.js';
import type { CinderSnapshot, CinderVolume, CinderVolumeCreate } from './types.js';

/** The newest microversion this client knows how to speak. */
export const WANTED_MICROVERSION = '3.71';
/** Catalog service types of Block Storage v3, in order of preference. */
export const BLOCK_STORAGE_TYPES = ['block-storage', 'volumev3', 'volume'];

/** Parse "3.44" → [3, 44]; undefined when malformed. */
export function parseMicroversion(v: string | undefined | null): [number, number] | undefined {
  const m = /^(\d+)\.(\d+)$/.exec((v ?? '').trim());
  return m ? [Number(m[1]), Number(m[2])] : undefined;
}

/** Compare two microversions: <0, 0, >0. */
export function compareMicroversion(a: string, b: string): number {
  const pa = parseMicroversion(a) ?? [0, 0];
  const pb = parseMicroversion(b) ?? [0, 0];
  return pa[0] - pb[0] || pa[1] - pb[1];
}

/** Options of a {@link CinderClient}. */
export interface CinderClientOptions {
  /** Use this URL (with the project ID) instead of the catalog's. */
  endpointOverride?: string;
  interface?: EndpointInterface;
  region?: string;
  /** Highest microversion to use (default {@link WANTED_MICROVERSION}). */
  microversion?: string;
  /** Page size for list calls (default 500). */
  pageSize?: number;
  retry?: RetryPolicy;
  /** How far back (ms) a resource's creation time may lie for a retried create to adopt it (default 10 min). */
  adoptWindowMs?: number;
}

/** One call to Cinder. `path` is relative to the project endpoint ("/volumes/ID"). */
export interface CallOptions {
  body?: unknown;
  query?: Record<string, string | number | boolean | undefined>;
  /** Human name of the operation for errors ("show volume X"). */
  what: string;
  retry?: 'idempotent' | 'safe' | 'none';
  /** Statuses that are not errors (default 2xx). */
  ok?: number[];
}

/** Query string from a map, skipping undefined values. */
export function queryString(q: CallOptions['query']): string {
  if (!q) return '';
  const parts = Object.entries(q)
    .filter(([, v]) => v !== undefined)
    .map(([k, v]) => `${encodeURIComponent(k)}=${encodeURIComponent(String(v))}`);
  return parts.length ? `?${parts.join('&')}` : '';
}

/** List filters understood by Cinder (plus client-side verification of name and metadata). */
export interface ListFilter {
  allTenants?: boolean;
  /** Plain key=value filters (name, status, group_id, volume_id, ...). */
  filters?: Record<string, string>;
  metadata?: Record<string, string>;
}

/** True when `md` contains every pair of `want`. */
export function metadataMatches(md: Record<string, string> | undefined, want: Record<string, string> | undefined): boolean {
  if (!want) return true;
  return Object.entries(want).every(([k, v]) => md?.[k] === v);
}

/** Block Storage v3 API client bound to one Keystone session. */
export class CinderClient {
  readonly session: KeystoneSession;
  private readonly opts: CinderClientOptions;
  private readonly retry: RetryPolicy;
  private ready?: Promise<void>;
  /** Project endpoint, e.g. http://host:8776/v3/<project>. Set by init(). */
  endpoint = '';
  /** Microversion sent with every request; '3.0' when the server has none. */
  microversion = '3.0';
  /** The server's maximum microversion, undefined when it announces none. */
  maxMicroversion?: string;

  constructor(session: KeystoneSession, opts: CinderClientOptions = {}) {
    this.session = session;
    this.opts = opts;
    this.retry = opts.retry ?? defaultRetry;
  }

  /** Find the endpoint and negotiate the microversion (once; later calls share the result). */
  init(): Promise<void> {
    this.ready ??= this.discover().catch((err) => {
      this.ready = undefined;
      throw err;
    });
    return this.ready;
  }

  /** True when the negotiated microversion is at least `v` (call after init()). */
  atLeast(v: string): boolean {
    return compareMicroversion(this.microversion, v) >= 0;
  }

  private async discover(): Promise<void> {
    const override = this.opts.endpointOverride ?? this.session.config.blockStorageEndpointOverride;
    let ep = override
      ? override.replace(/\/+$/, '')
      : await this.session.endpoint(BLOCK_STORAGE_TYPES, this.opts.interface ?? this.session.config.interface, this.opts.region ?? this.session.config.regionName);
    if (override && ep.includes('%(project_id)s')) ep = ep.replace('%(project_id)s', (await this.session.getToken()).projectId ?? '');
    // An old `volume` entry may point at v1/v2: the v3 API lives beside it.
    ep = ep.replace(/\/v[12](\.\d+)?(?=\/|$)/, '/v3');
    this.endpoint = ep;
    const max = await this.discoverMaxVersion(ep);
    this.maxMicroversion = max;
    const want = this.opts.microversion ?? WANTED_MICROVERSION;
    this.microversion = max ? (compareMicroversion(max, want) < 0 ? max : want) : '3.0';
    log.debug(`cinder: endpoint ${ep}, server max microversion ${max ?? 'none'}, using ${this.microversion}`);
  }

  /** GET the version document at the service root (then the v3 root); the max microversion it announces. */
  private async discoverMaxVersion(ep: string): Promise<string | undefined> {
    const u = new URL(ep);
    const path = u.pathname.replace(/\/+$/, '');
    const i = path.search(/\/v3(\/|$)/);
    const candidates: string[] = [];
    // The service root answers without validating the token (cheap); /v3/ needs a validated token.
    if (i >= 0) candidates.push(`${u.origin}${path.slice(0, i)}/`, `${u.origin}${path.slice(0, i)}/v3/`);
    else candidates.push(`${u.origin}${path}/`, `${u.origin}/`);
    for (const url of candidates) {
      let res: HttpResponse;
      try {
        res = await this.session.request({ method: 'GET', url }, { retry: 'idempotent' });
      } catch (err) {
        if (err instanceof TransportError) throw new UnreachableError(`cannot reach Block Storage at ${ep}: ${err.message}`, { cause: err });
        throw err;
      }
      if (res.status !== 200 && res.status !== 300) continue;
      const doc = res.json as { version?: VersionDoc; versions?: VersionDoc[] } | undefined;
      const versions = doc?.version ? [doc.version] : (doc?.versions ?? []);
      const v3 = versions.find((v) => /^v3(\.|$)/.test(v.id ?? '')) ?? (versions.length === 1 ? versions[0] : undefined);
      if (v3) return parseMicroversion(v3.version) ? v3.version : undefined;
    }
    return undefined;
  }

  /** Send a call; returns the raw answer whatever its status. */
  async raw(method: string, path: string, o: CallOptions): Promise<HttpResponse> {
    await this.init();
    const url = path.startsWith('http') ? path : `${this.endpoint}${path}${queryString(o.query)}`;
    const headers: Record<string, string> = {};
    if (this.maxMicroversion) headers['OpenStack-API-Version'] = `volume ${this.microversion}`;
    try {
      return await this.session.request({ method, url, headers, body: o.body }, { retry: o.retry ?? (method === 'GET' ? 'idempotent' : 'safe') });
    } catch (err) {
      if (err instanceof TransportError) throw new TransportError(`${o.what}: ${err.message}`, err.sent, { cause: err });
      throw err;
    }
  }

  /** Send a call; throws the mapped error unless the status is 2xx or in `ok`. Returns the parsed body. */
  async call<T = unknown>(method: string, path: string, o: CallOptions): Promise<T> {
    const res = await this.raw(method, path, o);
    if ((res.status >= 200 && res.status < 300) || o.ok?.includes(res.status)) return res.json as T;
    throw errorFromResponse(res, o.what);
  }

  /** Every item of a paginated list (marker/limit), following pages until a short or link-less page. */
  async listAll<T extends { id: string }>(path: string, key: string, query: Record<string, string | undefined>, what: string): Promise<T[]> {
    const limit = this.opts.pageSize ?? 500;
    const out: T[] = [];
    let marker: string | undefined;
    for (;;) {
      const body = await this.call<Record<string, unknown>>('GET', path, { query: { ...query, limit, marker }, what });
      const page = (body?.[key] as T[] | undefined) ?? [];
      out.push(...page);
      const links = (body?.[`${key}_links`] as { rel: string }[] | undefined) ?? [];
      const next = links.some((l) => l.rel === 'next');
      if (!page.length || (!next && page.length < limit)) return out;
      const last = page[page.length - 1]!.id;
      if (last === marker) return out;
      marker = last;
    }
  }

  /**
   * POST a create without ever creating twice: on an answer that leaves the
   * outcome unknown (5xx, lost connection) look for what we asked for with
   * `find` before trying again.
   */
  async createOnce<T>(what: string, post: () => Promise<HttpResponse>, find: (() => Promise<T | undefined>) | undefined, pick: (res: HttpResponse) => T): Promise<T> {
    for (let n = 1; ; n++) {
      let res: HttpResponse | undefined;
      let err: unknown;
      try {
        res = await post();
      } catch (e) {
        if (!(e instanceof TransportError)) throw e;
        err = e;
      }
      if (res && res.status >= 200 && res.status < 300) return pick(res);
      const ambiguous = res ? isTransientStatus(res.status) && res.status !== 429 : true;
      if (!ambiguous || !find || n >= this.retry.attempts) {
        if (res) throw errorFromResponse(res, what);
        throw err;
      }
      await pause(backoffDelay(this.retry, n, res?.headers.get('retry-after')));
      const found = await find();
      if (found) {
        log.warn(`${what}: the first attempt failed (${res ? `HTTP ${res.status}` : (err as Error).message}) but had created it; using it`);
        return found;
      }
      log.debug(`${what}: ${res ? `HTTP ${res.status}` : (err as Error).message}; nothing was created, retry ${n}`);
    }
  }

  private listQuery(f: ListFilter | undefined): Record<string, string | undefined> {
    const q: Record<string, string | undefined> = { ...f?.filters };
    if (f?.allTenants) q.all_tenants = '1';
    if (f?.metadata && Object.keys(f.metadata).length) q.metadata = JSON.stringify(f.metadata);
    return q;
  }

  // ---- volumes --------------------------------------------------------------

  /** GET /volumes/{id}. NotFoundError when absent. */
  async getVolume(id: string): Promise<CinderVolume> {
    const b = await this.call<{ volume: CinderVolume }>('GET', `/volumes/${encodeURIComponent(id)}`, { what: `show volume ${id}` });
    return b.volume;
  }

  /** GET /volumes/detail, every page; name and metadata are checked again here. */
  async listVolumes(f?: ListFilter): Promise<CinderVolume[]> {
    const all = await this.listAll<CinderVolume>('/volumes/detail', 'volumes', this.listQuery(f), 'list volumes');
    return all.filter((v) => metadataMatches(v.metadata, f?.metadata) && (f?.filters?.name === undefined || v.name === f.filters.name));
  }

  /** POST /volumes; a retried create adopts the volume the lost attempt made (same name and metadata). */
  async createVolume(v: CinderVolumeCreate): Promise<CinderVolume> {
    const started = Date.now();
    const what = `create volume ${v.name ?? ''}`.trim();
    const find = v.name
      ? async () => {
          const window = this.opts.adoptWindowMs ?? 600_000;
          const found = (await this.listVolumes({ filters: { name: v.name! }, metadata: v.metadata })).filter(
            (x) => (parseOsTime(x.created_at) ?? 0) >= started - window && x.size === v.size,
          );
          return found.length === 1 ? found[0] : undefined;
        }
      : undefined;
    return this.createOnce(what, () => this.raw('POST', '/volumes', { body: { volume: v }, what, retry: 'safe' }), find, (res) => (res.json as { volume: CinderVolume }).volume);
  }

  /** DELETE /volumes/{id}; a missing volume is success. */
  async deleteVolume(id: string, opts: { cascade?: boolean } = {}): Promise<void> {
    await this.call('DELETE', `/volumes/${encodeURIComponent(id)}`, {
      what: `delete volume ${id}`,
      query: opts.cascade ? { cascade: 'true' } : undefined,
      retry: 'idempotent',
      ok: [404],
    });
  }

  /** Merge (POST) or replace (PUT) a volume's metadata. */
  async setVolumeMetadata(id: string, metadata: Record<string, string>, replace = false): Promise<Record<string, string>> {
    const b = await this.call<{ metadata: Record<string, string> }>(replace ? 'PUT' : 'POST', `/volumes/${encodeURIComponent(id)}/metadata`, {
      body: { metadata },
      what: `update metadata of volume ${id}`,
      retry: 'idempotent',
    });
    return b?.metadata ?? {};
  }

  /** DELETE one metadata key; a missing key is success. */
  async deleteVolumeMetadataKey(id: string, key: string): Promise<void> {
    await this.call('DELETE', `/volumes/${encodeURIComponent(id)}/metadata/${encodeURIComponent(key)}`, {
      what: `delete metadata ${key} of volume ${id}`,
      retry: 'idempotent',
      ok: [404],
    });
  }

  /** POST /volumes/{id}/action with one action. Actions we use are idempotent in effect unless `retry` says otherwise. */
  async volumeAction<T = unknown>(id: string, action: string, args: unknown, retry: 'idempotent' | 'safe' | 'none' = 'idempotent'): Promise<T> {
    return this.call<T>('POST', `/volumes/${encodeURIComponent(id)}/action`, { body: { [action]: args }, what: `${action} on volume ${id}`, retry });
  }

  /** os-set_bootable. */
  async setBootable(id: string, bootable: boolean): Promise<void> {
    await this.volumeAction(id, 'os-set_bootable', { bootable });
  }

  // ---- snapshots ------------------------------------------------------------

  /** GET /snapshots/{id}. */
  async getSnapshot(id: string): Promise<CinderSnapshot> {
    const b = await this.call<{ snapshot: CinderSnapshot }>('GET', `/snapshots/${encodeURIComponent(id)}`, { what: `show snapshot ${id}` });
    return b.snapshot;
  }

  /** GET /snapshots/detail, every page; metadata is checked again here. */
  async listSnapshots(f?: ListFilter): Promise<CinderSnapshot[]> {
    const all = await this.listAll<CinderSnapshot>('/snapshots/detail', 'snapshots', this.listQuery(f), 'list snapshots');
    return all.filter((s) => metadataMatches(s.metadata, f?.metadata) && (f?.filters?.name === undefined || s.name === f.filters.name));
  }

  /**
   * POST /snapshots. `force` (snapshot of an in-use volume) is sent below
   * microversion 3.66 only: from 3.66 Cinder snapshots in-use volumes without
   * it and rejects force=false.
   */
  async createSnapshot(s: { volumeId: string; name: string; description?: string; metadata?: Record<string, string>; force: boolean }): Promise<CinderSnapshot> {
    await this.init();
    const body: Record<string, unknown> = { volume_id: s.volumeId, name: s.name };
    if (s.description !== undefined) body.description = s.description;
    if (s.metadata && Object.keys(s.metadata).length) body.metadata = s.metadata;
    if (!this.atLeast('3.66') && s.force) body.force = true;
    const started = Date.now();
    const what = `create snapshot ${s.name} of volume ${s.volumeId}`;
    const find = async () => {
      const window = this.opts.adoptWindowMs ?? 600_000;
      const found = (await this.listSnapshots({ filters: { name: s.name, volume_id: s.volumeId }, metadata: s.metadata })).filter(
        (x) => x.volume_id === s.volumeId && (parseOsTime(x.created_at) ?? 0) >= started - window,
      );
      return found.length === 1 ? found[0] : undefined;
    };
    return this.createOnce(what, () => this.raw('POST', '/snapshots', { body: { snapshot: body }, what, retry: 'safe' }), find, (res) => (res.json as { snapshot: CinderSnapshot }).snapshot);
  }

  /** DELETE /snapshots/{id}; a missing snapshot is success. */
  async deleteSnapshot(id: string): Promise<void> {
    await this.call('DELETE', `/snapshots/${encodeURIComponent(id)}`, { what: `delete snapshot ${id}`, retry: 'idempotent', ok: [404] });
  }

  /** Merge (POST) or replace (PUT) a snapshot's metadata. */
  async setSnapshotMetadata(id: string, metadata: Record<string, string>, replace = false): Promise<void> {
    await this.call(replace ? 'PUT' : 'POST', `/snapshots/${encodeURIComponent(id)}/metadata`, {
      body: { metadata },
      what: `update metadata of snapshot ${id}`,
      retry: 'idempotent',
    });
  }

  /** Throw a CloudError unless the server speaks at least microversion `v` (for `feature`). */
  requireMicroversion(v: string, feature: string): void {
    if (!this.atLeast(v)) {
      throw new CloudError(`${feature} needs Block Storage microversion ${v}; ${this.endpoint} offers ${this.maxMicroversion ?? 'no microversions'}`);
    }
  }
}

interface VersionDoc {
  id?: string;
  version?: string;
  min_version?: string;
  status?: string;
}
