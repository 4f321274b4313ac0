/**
 * An in-process fake of Keystone v3 and Block Storage v3 (node:http on
 * 127.0.0.1, random port) for contract tests that a real cloud cannot easily
 * produce: token expiry and revocation, 5xx and 429 answers, quota errors,
 * error states with user messages, pagination. Only the calls the Cinder
 * provider makes are modelled, closely enough to Cinder's JSON.
 */
import { randomUUID } from 'node:crypto';
import { type IncomingMessage, type Server, type ServerResponse, createServer } from 'node:http';
import type { AddressInfo } from 'node:net';

/** One user of the fake Keystone. */
export interface FakeUser {
  name: string;
  password: string;
  project: string;
  roles: string[];
}

/** A request the fake received. */
export interface FakeRequestLog {
  method: string;
  path: string;
  query: URLSearchParams;
  headers: IncomingMessage['headers'];
  body: unknown;
}

/** An injected failure: the next `count` requests matching method and path answer `status`. */
export interface FakeFault {
  method: string;
  path: RegExp;
  status: number;
  body?: unknown;
  count: number;
  /** Perform the request anyway, then answer the fault (a lost answer). */
  afterEffect?: boolean;
  headers?: Record<string, string>;
}

type Json = Record<string, unknown>;
type Vol = Json & { id: string; status: string; size: number; metadata: Record<string, string>; project: string; attachments: Json[] };

/** The fake cloud; `start()` it, point OS_AUTH_URL at `authUrl`. */
export class FakeCloud {
  users: FakeUser[] = [
    { name: 'admin', password: 'adminpw', project: 'p-admin', roles: ['admin', 'member'] },
    { name: 'demo', password: 'demopw', project: 'p-demo', roles: ['member'] },
  ];
  /** Token lifetime in seconds. */
  tokenLifetimeS = 3600;
  /** Delay of each authentication in ms. */
  authDelayMs = 0;
  /** Highest microversion announced ('' = no microversions). */
  maxMicroversion = '3.70';
  /** Polls a creating volume / snapshot stays creating. */
  creatingPolls = 1;
  /** Quota in GiB per project. */
  quotaGiB = 1000;
  /** Honour the metadata list filter (false: ignore it, as a misconfigured cloud might). */
  honourMetadataFilter = true;
  authCount = 0;
  requests: FakeRequestLog[] = [];
  faults: FakeFault[] = [];
  volumes = new Map<string, Vol>();
  snapshots = new Map<string, Json & { id: string; status: string; metadata: Record<string, string>; project: string }>();
  attachments = new Map<string, Json & { id: string; volume_id: string; status: string }>();
  messages: Json[] = [];
  tokens = new Map<string, { user: FakeUser; expires: number }>();
  private polls = new Map<string, number>();
  private server?: Server;
  port = 0;

  /** Keystone URL (with /v3). */
  get authUrl(): string {
    return `http://127.0.0.1:${this.port}/identity/v3`;
  }

  /** Start listening on a random loopback port. */
  async start(): Promise<this> {
    this.server = createServer((req, res) => {
      this.handle(req, res).catch((err) => this.send(res, 500, { computeFault: { message: String(err), code: 500 } }));
    });
    await new Promise<void>((r) => this.server!.listen(0, '127.0.0.1', r));
    this.port = (this.server.address() as AddressInfo).port;
    return this;
  }

  /** Stop listening. */
  async stop(): Promise<void> {
    await new Promise<void>((r) => this.server?.close(() => r()) ?? r());
  }

  /** Invalidate every token (Keystone restarted with new keys). */
  revokeAll(): void {
    this.tokens.clear();
  }

  /** Add a volume directly. */
  addVolume(v: Partial<Vol> & { project?: string }): Vol {
    const vol: Vol = {
      id: randomUUID(),
      name: 'vol',
      size: 1,
      status: 'available',
      metadata: {},
      project: 'p-admin',
      attachments: [],
      bootable: 'false',
      created_at: new Date().toISOString().replace('Z', ''),
      ...v,
    } as Vol;
    this.volumes.set(vol.id, vol);
    return vol;
  }

  private send(res: ServerResponse, status: number, body?: unknown, headers: Record<string, string> = {}): void {
    const text = body === undefined ? '' : JSON.stringify(body);
    res.writeHead(status, { 'Content-Type': 'application/json', ...headers });
    res.end(text);
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    const raw = Buffer.concat(chunks).toString('utf8');
    const url = new URL(req.url ?? '/', `http://127.0.0.1:${this.port}`);
    const body = raw ? (JSON.parse(raw) as unknown) : undefined;
    const method = req.method ?? 'GET';
    this.requests.push({ method, path: url.pathname, query: url.searchParams, headers: req.headers, body });

    const fault = this.faults.find((f) => f.count > 0 && f.method === method && f.path.test(url.pathname));
    if (fault) {
      fault.count--;
      if (fault.afterEffect) await this.route(method, url, body, req, { writeHead: () => res, end: () => res } as unknown as ServerResponse);
      return this.send(res, fault.status, fault.body ?? { computeFault: { message: `injected ${fault.status}`, code: fault.status } }, fault.headers);
    }
    await this.route(method, url, body, req, res);
  }

  private async route(method: string, url: URL, body: unknown, req: IncomingMessage, res: ServerResponse): Promise<void> {
    const p = url.pathname;
    if (p === '/identity/v3/auth/tokens' && method === 'POST') return this.auth(body as Json, res);
    if (p === '/volume/' || p === '/volume') {
      return this.send(res, 300, { versions: [this.versionDoc()] });
    }
    const token = req.headers['x-auth-token'];
    const sess = typeof token === 'string' ? this.tokens.get(token) : undefined;
    if (!sess || sess.expires < Date.now()) {
      return this.send(res, 401, { error: { code: 401, title: 'Unauthorized', message: 'The request you have made requires authentication.' } });
    }
    if (p === '/volume/v3/' || p === '/volume/v3') return this.send(res, 200, { versions: [this.versionDoc()] });
    const m = /^\/volume\/v3\/([^/]+)(\/.*)$/.exec(p);
    if (!m || m[1] !== sess.user.project) return this.send(res, 404, { itemNotFound: { message: 'The resource could not be found.', code: 404 } });
    return this.cinder(method, m[2]!, url.searchParams, body as Json, sess.user, res);
  }

  private versionDoc(): Json {
    return { id: 'v3.0', status: 'CURRENT', version: this.maxMicroversion, min_version: this.maxMicroversion ? '3.0' : '' };
  }

  private async auth(body: Json, res: ServerResponse): Promise<void> {
    this.authCount++;
    if (this.authDelayMs) await new Promise((r) => setTimeout(r, this.authDelayMs));
    const pw = ((body.auth as Json)?.identity as Json)?.password as Json | undefined;
    const u = pw?.user as { name?: string; password?: string } | undefined;
    const user = this.users.find((x) => x.name === u?.name && x.password === u?.password);
    if (!user) return this.send(res, 401, { error: { code: 401, title: 'Unauthorized', message: 'The request you have made requires authentication.' } });
    const token = `tok-${randomUUID()}`;
    const now = Date.now();
    const expires = now + this.tokenLifetimeS * 1000;
    this.tokens.set(token, { user, expires });
    const ep = `http://127.0.0.1:${this.port}/volume/v3/${user.project}`;
    const catalog = [
      { type: 'identity', endpoints: [{ interface: 'public', region_id: 'RegionOne', region: 'RegionOne', url: this.authUrl }] },
      {
        type: 'volumev3',
        endpoints: ['public', 'internal'].map((i) => ({ interface: i, region_id: 'RegionOne', region: 'RegionOne', url: ep })),
      },
    ];
    this.send(
      res,
      201,
      {
        token: {
          expires_at: new Date(expires).toISOString().replace('Z', '000Z'),
          issued_at: new Date(now).toISOString().replace('Z', '000Z'),
          user: { id: `u-${user.name}`, name: user.name },
          project: { id: user.project, name: user.project },
          roles: user.roles.map((r) => ({ id: r, name: r })),
          catalog,
        },
      },
      { 'X-Subject-Token': token },
    );
  }

  /** Advance a resource's status on each poll. */
  private tick(r: { id: string; status: string }, from: string, to: string): void {
    if (r.status !== from) return;
    const n = (this.polls.get(r.id) ?? 0) + 1;
    this.polls.set(r.id, n);
    if (n > this.creatingPolls) r.status = to;
  }

  private visible(project: string, user: FakeUser, q: URLSearchParams): boolean {
    const all = q.get('all_tenants') === '1' && user.roles.includes('admin');
    return all || project === user.project;
  }

  private page<T extends { id: string }>(items: T[], q: URLSearchParams, key: string): Json {
    const limit = Number(q.get('limit') ?? 1000);
    const marker = q.get('marker');
    let start = 0;
    if (marker) start = items.findIndex((x) => x.id === marker) + 1;
    const slice = items.slice(start, start + limit);
    const out: Json = { [key]: slice };
    if (start + limit < items.length) out[`${key}_links`] = [{ rel: 'next', href: `x?marker=${slice[slice.length - 1]?.id}` }];
    return out;
  }

  private matches(md: Record<string, string>, q: URLSearchParams): boolean {
    const f = q.get('metadata');
    if (!f || !this.honourMetadataFilter) return true;
    const want = JSON.parse(f) as Record<string, string>;
    return Object.entries(want).every(([k, v]) => md[k] === v);
  }

  private nf(res: ServerResponse, what: string): void {
    this.send(res, 404, { itemNotFound: { message: `${what} could not be found.`, code: 404 } });
  }

  private cinder(method: string, path: string, q: URLSearchParams, body: Json, user: FakeUser, res: ServerResponse): void {
    let m: RegExpExecArray | null;
    if (path === '/volumes/detail' && method === 'GET') {
      const items = [...this.volumes.values()].filter(
        (v) => this.visible(v.project, user, q) && (!q.get('name') || v.name === q.get('name')) && (!q.get('group_id') || v.group_id === q.get('group_id')) && this.matches(v.metadata, q),
      );
      return this.send(res, 200, this.page(items, q, 'volumes'));
    }
    if (path === '/volumes' && method === 'POST') {
      const v = body.volume as Json & { size: number };
      const used = [...this.volumes.values()].filter((x) => x.project === user.project).reduce((a, x) => a + x.size, 0);
      if (used + v.size > this.quotaGiB) {
        return this.send(res, 413, {
          overLimit: {
            code: 413,
            message: `VolumeSizeExceedsAvailableQuota: Requested volume or snapshot exceeds allowed gigabytes quota. Requested ${v.size}G, quota is ${this.quotaGiB}G and ${used}G has been consumed.`,
            retryAfter: '0',
          },
        });
      }
      const vol = this.addVolume({ ...v, metadata: (v.metadata as Record<string, string>) ?? {}, status: 'creating', project: user.project, size: v.size });
      return this.send(res, 202, { volume: this.view(vol) });
    }
    if ((m = /^\/volumes\/([^/]+)$/.exec(path))) {
      const v = this.volumes.get(m[1]!);
      if (!v || v.project !== user.project && !user.roles.includes('admin')) return this.nf(res, `Volume ${m[1]}`);
      if (method === 'GET') {
        this.tick(v, 'creating', 'available');
        if (v.status === 'deleting') {
          this.volumes.delete(v.id);
          return this.nf(res, `Volume ${v.id}`);
        }
        return this.send(res, 200, { volume: this.view(v) });
      }
      if (method === 'DELETE') {
        if (!['available', 'error'].includes(v.status)) {
          return this.send(res, 400, { badRequest: { code: 400, message: `Invalid volume: Volume status must be available or error, but current status is: ${v.status}.` } });
        }
        v.status = 'deleting';
        return this.send(res, 202);
      }
    }
    if ((m = /^\/volumes\/([^/]+)\/metadata$/.exec(path))) {
      const v = this.volumes.get(m[1]!);
      if (!v) return this.nf(res, `Volume ${m[1]}`);
      v.metadata = method === 'PUT' ? { ...(body.metadata as Json) } as Record<string, string> : { ...v.metadata, ...(body.metadata as Record<string, string>) };
      return this.send(res, 200, { metadata: v.metadata });
    }
    if ((m = /^\/volumes\/([^/]+)\/action$/.exec(path)) && method === 'POST') {
      const v = this.volumes.get(m[1]!);
      if (!v) return this.nf(res, `Volume ${m[1]}`);
      if (body['os-set_bootable']) {
        v.bootable = String((body['os-set_bootable'] as Json).bootable);
        return this.send(res, 200);
      }
      return this.send(res, 400, { badRequest: { code: 400, message: 'unsupported action in fake' } });
    }
    if (path === '/snapshots' && method === 'POST') {
      const s = body.snapshot as Json & { volume_id: string };
      const v = this.volumes.get(s.volume_id);
      if (!v) return this.nf(res, `Volume ${s.volume_id}`);
      const snap = { id: randomUUID(), status: 'creating', size: v.size, created_at: new Date().toISOString().replace('Z', ''), metadata: {}, ...s, project: user.project } as Json & {
        id: string;
        status: string;
        metadata: Record<string, string>;
        project: string;
      };
      this.snapshots.set(snap.id, snap);
      return this.send(res, 202, { snapshot: snap });
    }
    if (path === '/snapshots/detail' && method === 'GET') {
      const items = [...this.snapshots.values()].filter((s) => this.visible(s.project, user, q) && this.matches(s.metadata, q));
      return this.send(res, 200, this.page(items, q, 'snapshots'));
    }
    if ((m = /^\/snapshots\/([^/]+)$/.exec(path))) {
      const s = this.snapshots.get(m[1]!);
      if (!s) return this.nf(res, `Snapshot ${m[1]}`);
      if (method === 'GET') {
        this.tick(s, 'creating', 'available');
        return this.send(res, 200, { snapshot: s });
      }
      this.snapshots.delete(s.id);
      return this.send(res, 202);
    }
    if (path === '/attachments' && method === 'POST') {
      const a = body.attachment as Json;
      const v = this.volumes.get(String(a.volume_uuid));
      if (!v) return this.send(res, 400, { badRequest: { code: 400, message: "Invalid input received: 'volume_uuid' is a required property" } });
      const id = randomUUID();
      const att = { id, volume_id: v.id, status: 'reserved', connector: a.connector };
      this.attachments.set(id, att);
      v.status = 'reserved';
      const ci = { driver_volume_type: 'rbd', name: `volumes/volume-${v.id}`, hosts: ['127.0.0.1'], ports: ['6789'], auth_username: 'cinder', auth_password: 'chap-secret-123', attachment_id: id };
      return this.send(res, 200, { attachment: { ...att, connection_info: ci } });
    }
    if (path === '/attachments/detail' && method === 'GET') {
      const items = [...this.attachments.values()].filter((a) => !q.get('volume_id') || a.volume_id === q.get('volume_id'));
      return this.send(res, 200, this.page(items, q, 'attachments'));
    }
    if ((m = /^\/attachments\/([^/]+)\/action$/.exec(path)) && method === 'POST') {
      const a = this.attachments.get(m[1]!);
      if (!a) return this.nf(res, `Attachment ${m[1]}`);
      a.status = 'attached';
      const v = this.volumes.get(a.volume_id)!;
      v.status = 'in-use';
      v.attachments.push({ attachment_id: a.id, host_name: 'fake', server_id: null });
      return this.send(res, 204);
    }
    if ((m = /^\/attachments\/([^/]+)$/.exec(path)) && method === 'GET') {
      const a = this.attachments.get(m[1]!);
      if (!a) return this.nf(res, `Attachment ${m[1]}`);
      const ci = { driver_volume_type: 'rbd', name: `volumes/volume-${a.volume_id}`, hosts: ['127.0.0.1'], ports: ['6789'], auth_username: 'cinder', attachment_id: a.id };
      return this.send(res, 200, { attachment: { ...a, connection_info: ci } });
    }
    if ((m = /^\/attachments\/([^/]+)$/.exec(path)) && method === 'DELETE') {
      const a = this.attachments.get(m[1]!);
      if (!a) return this.nf(res, `Attachment ${m[1]}`);
      this.attachments.delete(a.id);
      const v = this.volumes.get(a.volume_id);
      if (v) {
        v.attachments = v.attachments.filter((x) => x.attachment_id !== a.id);
        v.status = v.attachments.length ? 'in-use' : 'available';
      }
      return this.send(res, 200, { attachments: [] });
    }
    if (path === '/messages' && method === 'GET') {
      return this.send(res, 200, { messages: this.messages.filter((x) => !q.get('resource_uuid') || x.resource_uuid === q.get('resource_uuid')) });
    }
    if (path === '/types' && method === 'GET') return this.send(res, 200, { volume_types: [{ id: 't1', name: '__DEFAULT__', is_public: true }] });
    if (path === '/os-availability-zone') return this.send(res, 200, { availabilityZoneInfo: [{ zoneName: 'nova', zoneState: { available: true } }] });
    this.send(res, 404, { itemNotFound: { message: `fake: no route ${method} ${path}`, code: 404 } });
  }

  private view(v: Vol): Json {
    const { project, ...rest } = v;
    return { ...rest, 'os-vol-tenant-attr:tenant_id': project };
  }
}
