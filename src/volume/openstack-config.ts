/**
 * OpenStack credentials resolved the way the `openstack` client does it:
 * clouds.yaml (+ secure.yaml) selected by --os-cloud / OS_CLOUD, the standard
 * OS_* environment variables, and explicit settings (agent.ini [cinder]).
 * Precedence: explicit > environment > clouds.yaml.
 */
import { readFile } from 'node:fs/promises';
import { homedir } from 'node:os';
import { join, resolve } from 'node:path';
import { ConfigError } from '../errors.js';
import { registerSecret } from '../util/log.js';

/** Keystone v3 authentication methods we support. */
export type OpenStackAuthType = 'v3password' | 'v3applicationcredential';
/** Endpoint interface of the service catalog. */
export type EndpointInterface = 'public' | 'internal' | 'admin';

/** Fully resolved settings for one cloud. */
export interface OpenStackAuthConfig {
  authUrl: string;
  authType: OpenStackAuthType;
  username?: string;
  userId?: string;
  password?: string;
  userDomainName?: string;
  userDomainId?: string;
  projectName?: string;
  projectId?: string;
  projectDomainName?: string;
  projectDomainId?: string;
  applicationCredentialId?: string;
  applicationCredentialName?: string;
  applicationCredentialSecret?: string;
  regionName?: string;
  interface: EndpointInterface;
  /** PEM file of the CA bundle to trust. */
  cacert?: string;
  /** Skip TLS verification. */
  insecure: boolean;
  /** Block storage endpoint to use instead of the catalog's. */
  blockStorageEndpointOverride?: string;
  /** The clouds.yaml entry used, if any. */
  cloud?: string;
  /** Where the settings came from, for diagnostics (never values). */
  sources: string[];
}

/** Explicit settings as an agent.ini section gives them: snake_case (auth_url) or camelCase, optional os_ prefix. */
export type ExplicitOpenStackSettings = Record<string, string | boolean | number | undefined | null>;

/** Inputs of {@link resolveOpenStackConfig}; everything defaults to the process's environment. */
export interface ResolveOptions {
  /** --os-cloud; overrides OS_CLOUD and explicit.cloud. */
  cloud?: string;
  explicit?: ExplicitOpenStackSettings;
  env?: Record<string, string | undefined>;
  cwd?: string;
  home?: string;
  /** Directories searched for clouds.yaml / secure.yaml, in order (default: cwd, ~/.config/openstack, /etc/openstack). */
  searchDirs?: string[];
}

/** Our canonical field names, keyed by every alias accepted (normalized: lowercase, no os_ prefix, '-' → '_'). */
const FIELD_ALIASES: Record<string, keyof OpenStackAuthConfig> = {
  auth_url: 'authUrl',
  auth_type: 'authType',
  username: 'username',
  user_name: 'username',
  user_id: 'userId',
  password: 'password',
  user_domain_name: 'userDomainName',
  user_domain_id: 'userDomainId',
  project_name: 'projectName',
  tenant_name: 'projectName',
  project_id: 'projectId',
  tenant_id: 'projectId',
  project_domain_name: 'projectDomainName',
  project_domain_id: 'projectDomainId',
  application_credential_id: 'applicationCredentialId',
  application_credential_name: 'applicationCredentialName',
  application_credential_secret: 'applicationCredentialSecret',
  region_name: 'regionName',
  region: 'regionName',
  interface: 'interface',
  endpoint_type: 'interface',
  cacert: 'cacert',
  ca_cert: 'cacert',
  insecure: 'insecure',
  block_storage_endpoint_override: 'blockStorageEndpointOverride',
  volume_endpoint_override: 'blockStorageEndpointOverride',
  endpoint_override: 'blockStorageEndpointOverride',
};

type Layer = Partial<Record<keyof OpenStackAuthConfig, string>> & { domainName?: string; domainId?: string; verify?: string };

function normalizeKey(k: string): string {
  const snake = k.replace(/([a-z0-9])([A-Z])/g, '$1_$2').replace(/-/g, '_').toLowerCase();
  return snake.startsWith('os_') ? snake.slice(3) : snake;
}

function str(v: unknown): string | undefined {
  if (v === undefined || v === null) return undefined;
  const s = String(v).trim();
  return s === '' ? undefined : s;
}

/** Turn a flat key/value map (env without OS_, agent.ini, clouds.yaml auth) into a layer. */
function layerFrom(map: Record<string, unknown>): Layer {
  const out: Layer = {};
  for (const [rawKey, rawVal] of Object.entries(map)) {
    const v = str(rawVal);
    if (v === undefined || typeof rawVal === 'object') continue;
    const k = normalizeKey(rawKey);
    if (k === 'domain_name' || k === 'default_domain_name') out.domainName = v;
    else if (k === 'domain_id' || k === 'default_domain_id' || k === 'default_domain') out.domainId = v;
    else if (k === 'verify') out.verify = v;
    else if (k in FIELD_ALIASES) out[FIELD_ALIASES[k]!] = v;
  }
  return out;
}

function envLayer(env: Record<string, string | undefined>): Layer {
  const flat: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(env)) {
    if (!k.startsWith('OS_') || k === 'OS_CLOUD') continue;
    flat[k] = v;
  }
  return layerFrom(flat);
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function deepMerge(base: Record<string, unknown>, over: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = { ...base };
  for (const [k, v] of Object.entries(over)) {
    out[k] = isPlainObject(v) && isPlainObject(out[k]) ? deepMerge(out[k] as Record<string, unknown>, v) : v;
  }
  return out;
}

async function readYamlFile(path: string): Promise<Record<string, unknown> | undefined> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR') return undefined;
    throw new ConfigError(`cannot read ${path}: ${(err as Error).message}`, { cause: err });
  }
  // yaml (70 modules) is loaded only when a clouds.yaml is read.
  const { parse: parseYaml } = await import('yaml');
  try {
    const doc = parseYaml(text) as unknown;
    if (doc === null || doc === undefined) return {};
    if (!isPlainObject(doc)) throw new Error('top level is not a mapping');
    return doc;
  } catch (err) {
    throw new ConfigError(`${path}: malformed YAML: ${(err as Error).message}`, { cause: err });
  }
}

/** First existing file of `name` in the search directories. */
async function findYaml(dirs: string[], name: string, explicitPath?: string): Promise<{ path: string; doc: Record<string, unknown> } | undefined> {
  const candidates = explicitPath ? [explicitPath] : dirs.map((d) => join(d, name));
  for (const p of candidates) {
    const doc = await readYamlFile(p);
    if (doc) return { path: p, doc };
  }
  return undefined;
}

/** The clouds.yaml entry `cloud`, merged with secure.yaml, flattened into a layer. */
async function cloudLayer(cloud: string, opts: Required<Pick<ResolveOptions, 'searchDirs'>> & { env: Record<string, string | undefined> }): Promise<{ layer: Layer; path: string }> {
  const clouds = await findYaml(opts.searchDirs, 'clouds.yaml', str(opts.env.OS_CLIENT_CONFIG_FILE));
  const secure = await findYaml(opts.searchDirs, 'secure.yaml', str(opts.env.OS_CLIENT_SECURE_FILE));
  const known = isPlainObject(clouds?.doc.clouds) ? (clouds!.doc.clouds as Record<string, unknown>) : {};
  const secureClouds = isPlainObject(secure?.doc.clouds) ? (secure!.doc.clouds as Record<string, unknown>) : {};
  if (!clouds) {
    throw new ConfigError(`cloud "${cloud}" requested but no clouds.yaml found (searched ${opts.searchDirs.map((d) => join(d, 'clouds.yaml')).join(', ')})`);
  }
  let entry = known[cloud];
  if (!isPlainObject(entry)) {
    const names = Object.keys(known);
    throw new ConfigError(`cloud "${cloud}" not found in ${clouds.path}; known clouds: ${names.length ? names.join(', ') : '(none)'}`);
  }
  if (isPlainObject(secureClouds[cloud])) entry = deepMerge(entry, secureClouds[cloud] as Record<string, unknown>);
  const e = entry as Record<string, unknown>;
  const flat: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(e)) if (!isPlainObject(v) && !Array.isArray(v)) flat[k] = v;
  if (isPlainObject(e.auth)) Object.assign(flat, e.auth);
  const layer = layerFrom(flat);
  // `regions: [RegionOne, ...]` without region_name: take the first, as openstacksdk does.
  if (!layer.regionName && Array.isArray(e.regions) && e.regions.length) {
    const first = e.regions[0];
    layer.regionName = str(isPlainObject(first) ? first.name : first);
  }
  return { layer, path: clouds.path };
}

function bool(v: string | undefined, what: string): boolean | undefined {
  if (v === undefined) return undefined;
  const s = v.toLowerCase();
  if (['1', 'true', 'yes', 'on'].includes(s)) return true;
  if (['0', 'false', 'no', 'off'].includes(s)) return false;
  throw new ConfigError(`${what}: expected a boolean, got "${v}"`);
}

function authTypeOf(v: string | undefined, merged: Layer): OpenStackAuthType {
  if (v === undefined) {
    return merged.applicationCredentialSecret || merged.applicationCredentialId ? 'v3applicationcredential' : 'v3password';
  }
  const s = v.toLowerCase().replace(/-/g, '_');
  if (s === 'password' || s === 'v3password') return 'v3password';
  if (s === 'v3applicationcredential' || s === 'application_credential' || s === 'applicationcredential') return 'v3applicationcredential';
  throw new ConfigError(`unsupported auth_type "${v}" (supported: v3password, v3applicationcredential)`);
}

function interfaceOf(v: string | undefined): EndpointInterface {
  if (v === undefined) return 'public';
  const s = v.toLowerCase().replace(/url$/, '');
  if (s === 'public' || s === 'internal' || s === 'admin') return s;
  throw new ConfigError(`invalid interface "${v}" (expected public, internal or admin)`);
}

/**
 * Resolve the credentials of one cloud. Throws ConfigError for an unknown cloud
 * (listing the known ones) or missing settings. Registers every secret found.
 */
export async function resolveOpenStackConfig(opts: ResolveOptions = {}): Promise<OpenStackAuthConfig> {
  const env = opts.env ?? process.env;
  const cwd = opts.cwd ?? process.cwd();
  const home = opts.home ?? homedir();
  const searchDirs = opts.searchDirs ?? [cwd, join(home, '.config', 'openstack'), '/etc/openstack'];
  const explicit = layerFrom(opts.explicit ?? {});
  const explicitCloud = str(opts.explicit?.cloud) ?? str(opts.explicit?.os_cloud);
  const cloud = str(opts.cloud) ?? explicitCloud ?? str(env.OS_CLOUD);

  const sources: string[] = [];
  let base: Layer = {};
  if (cloud) {
    const c = await cloudLayer(cloud, { searchDirs: searchDirs.map((d) => resolve(cwd, d)), env });
    base = c.layer;
    sources.push(`clouds.yaml:${c.path}#${cloud}`);
  }
  const fromEnv = envLayer(env);
  if (Object.keys(fromEnv).length) sources.push('env');
  if (Object.keys(explicit).length) sources.push('explicit');

  // Later layers win, field by field.
  const m: Layer = { ...base };
  for (const layer of [fromEnv, explicit]) for (const [k, v] of Object.entries(layer)) if (v !== undefined) (m as Record<string, string>)[k] = v;

  // domain_name / domain_id fill in the user and project domains (openstacksdk does the same).
  const userDomainName = m.userDomainName ?? (m.userDomainId ? undefined : m.domainName);
  const userDomainId = m.userDomainId ?? (m.userDomainName ? undefined : m.domainId);
  const projectDomainName = m.projectDomainName ?? (m.projectDomainId ? undefined : m.domainName);
  const projectDomainId = m.projectDomainId ?? (m.projectDomainName ? undefined : m.domainId);

  let insecure = bool(m.insecure, 'insecure') ?? false;
  const verify = m.verify;
  if (verify !== undefined && m.insecure === undefined) {
    const vb = ['0', 'false', 'no', 'off'].includes(verify.toLowerCase()) ? false : ['1', 'true', 'yes', 'on'].includes(verify.toLowerCase()) ? true : undefined;
    if (vb === false) insecure = true;
  }
  const cacert = m.cacert ?? (verify && !['0', '1', 'true', 'false', 'yes', 'no', 'on', 'off'].includes(verify.toLowerCase()) ? verify : undefined);

  const cfg: OpenStackAuthConfig = {
    authUrl: m.authUrl ?? '',
    authType: authTypeOf(m.authType, m),
    username: m.username,
    userId: m.userId,
    password: m.password,
    userDomainName,
    userDomainId,
    projectName: m.projectName,
    projectId: m.projectId,
    projectDomainName,
    projectDomainId,
    applicationCredentialId: m.applicationCredentialId,
    applicationCredentialName: m.applicationCredentialName,
    applicationCredentialSecret: m.applicationCredentialSecret,
    regionName: m.regionName,
    interface: interfaceOf(m.interface),
    cacert,
    insecure,
    blockStorageEndpointOverride: m.blockStorageEndpointOverride,
    cloud,
    sources,
  };
  registerSecret(cfg.password);
  registerSecret(cfg.applicationCredentialSecret);
  validate(cfg);
  // Keystone needs a domain whenever a user or project is named rather than identified.
  if (cfg.authType === 'v3password' && cfg.username && !cfg.userId && !cfg.userDomainName && !cfg.userDomainId) cfg.userDomainName = 'Default';
  if (cfg.projectName && !cfg.projectId && !cfg.projectDomainName && !cfg.projectDomainId) cfg.projectDomainName = 'Default';
  if (cfg.authType === 'v3applicationcredential' && cfg.applicationCredentialName && cfg.username && !cfg.userId && !cfg.userDomainName && !cfg.userDomainId) {
    cfg.userDomainName = 'Default';
  }
  return cfg;
}

function validate(cfg: OpenStackAuthConfig): void {
  const where = cfg.sources.length ? ` (from ${cfg.sources.join(', ')})` : ' (no clouds.yaml entry selected, no OS_* variables, no [cinder] settings)';
  const missing: string[] = [];
  if (!cfg.authUrl) missing.push('auth_url (OS_AUTH_URL)');
  if (cfg.authType === 'v3password') {
    if (!cfg.username && !cfg.userId) missing.push('username or user_id (OS_USERNAME)');
    if (!cfg.password) missing.push('password (OS_PASSWORD)');
    if (!cfg.projectName && !cfg.projectId) missing.push('project_name or project_id (OS_PROJECT_NAME)');
  } else {
    if (!cfg.applicationCredentialSecret) missing.push('application_credential_secret (OS_APPLICATION_CREDENTIAL_SECRET)');
    if (!cfg.applicationCredentialId && !cfg.applicationCredentialName) missing.push('application_credential_id or application_credential_name');
    if (!cfg.applicationCredentialId && cfg.applicationCredentialName && !cfg.username && !cfg.userId) {
      missing.push('username or user_id (an application credential given by name needs its user)');
    }
  }
  if (missing.length) throw new ConfigError(`OpenStack credentials incomplete${where}: missing ${missing.join(', ')}`);
  try {
    const u = new URL(cfg.authUrl);
    if (u.protocol !== 'http:' && u.protocol !== 'https:') throw new Error('not http(s)');
  } catch {
    throw new ConfigError(`invalid auth_url "${cfg.authUrl}"`);
  }
}

/** List the cloud names of the first clouds.yaml found (for --help and error messages). */
export async function listCloudNames(opts: Pick<ResolveOptions, 'cwd' | 'home' | 'searchDirs' | 'env'> = {}): Promise<string[]> {
  const cwd = opts.cwd ?? process.cwd();
  const home = opts.home ?? homedir();
  const dirs = opts.searchDirs ?? [cwd, join(home, '.config', 'openstack'), '/etc/openstack'];
  const env = opts.env ?? process.env;
  const clouds = await findYaml(dirs.map((d) => resolve(cwd, d)), 'clouds.yaml', str(env.OS_CLIENT_CONFIG_FILE));
  return clouds && isPlainObject(clouds.doc.clouds) ? Object.keys(clouds.doc.clouds as object) : [];
}
