/**
 * What every command needs, built from the global options: the configuration,
 * the output, and (lazily) the repository and the catalog. Commands call
 * `ctx.close()` in finally; the signal aborts on SIGINT/SIGTERM.
 */
import { join } from 'node:path';
import { Catalog } from '../catalog/catalog.js';
import { type Config, loadConfig } from '../config/config.js';
import { ConfigError, IntegrityError, UsageError, fromSystemError } from '../errors.js';
import { Repository } from '../repository/repository.js';
import { openStorage } from '../storage/index.js';
import type { Storage } from '../storage/storage.js';
import { connectorProperties } from '../connectors/properties.js';
import type { ScriptConnectorOptions } from '../connectors/script.js';
import type { VolumeJobOptions } from '../jobs/attach.js';
import { type Level, setLogLevel } from '../util/log.js';
import { openProvider } from '../volume/index.js';
import type { ConnectorProperties, VolumeProvider } from '../volume/provider.js';
import { Output } from './output.js';

export interface GlobalOptions {
  config?: string;
  repo?: string;
  keyFile?: string;
  stateDir?: string;
  json?: boolean;
  quiet?: boolean;
  verbose?: boolean;
}

export class Context {
  readonly config: Config;
  readonly out: Output;
  #repo?: Repository;
  #catalog?: Catalog;
  #provider?: VolumeProvider;

  constructor(
    readonly opts: GlobalOptions,
    readonly signal: AbortSignal,
  ) {
    this.config = loadConfig({
      path: opts.config,
      cli: { 'repository.url': opts.repo, 'repository.key_file': opts.keyFile, 'agent.state_dir': opts.stateDir },
    });
    if (opts.verbose) setLogLevel('debug');
    else setLogLevel(this.config.get('agent', 'log_level') as Level);
    this.out = new Output(Boolean(opts.json), Boolean(opts.quiet));
  }

  get repoUrl(): string {
    const url = this.config.get('repository', 'url');
    if (!url) throw new UsageError('no repository given: use --repo DIR|s3://bucket/prefix, PERMAFROST_REPO, or [repository] url in agent.ini');
    return url;
  }

  /** The storage the repository lives on. */
  storage(): Storage {
    const c = this.config;
    return openStorage(this.repoUrl, {
      endpoint: c.get('s3', 'endpoint'),
      region: c.get('s3', 'region'),
      forcePathStyle: c.bool('s3', 'path_style'),
      accessKeyId: c.get('s3', 'access_key_id'),
      secretAccessKey: c.get('s3', 'secret_access_key'),
      maxAttempts: c.int('s3', 'max_attempts'),
    });
  }

  /** Open the repository (and its index); optionally take its lock. */
  async repository(lock?: { exclusive: boolean; purpose: string }, loadIndex = true): Promise<Repository> {
    if (this.#repo) return this.#repo;
    const repo = await Repository.open(this.storage(), {
      keyFile: this.config.get('repository', 'key_file'),
      compressionLevel: this.config.int('repository', 'compression_level'),
      threads: this.config.int('agent', 'threads'),
      cacheDir: join(this.config.stateDir, 'cache'),
    });
    this.#repo = repo;
    if (lock) await repo.lock(lock.exclusive, lock.purpose);
    if (loadIndex) await repo.loadIndex();
    return repo;
  }

  /** Where this agent's catalog lives. */
  get catalogPath(): string {
    return join(this.config.stateDir, 'catalog.db');
  }

  /**
   * The catalog. A damaged catalog file is an IntegrityError that says how to recover (it is a
   * cache: `catalog rebuild` recreates it from the repository); a state directory this process
   * cannot use is a configuration error naming it.
   */
  catalog(): Catalog {
    if (this.#catalog) return this.#catalog;
    const path = this.catalogPath;
    try {
      this.#catalog = new Catalog(path);
    } catch (err) {
      const code = (err as { code?: unknown }).code;
      const msg = (err as Error).message;
      if (code === 'SQLITE_NOTADB' || code === 'SQLITE_CORRUPT')
        throw new IntegrityError(`catalog ${path} is damaged (${msg}): run "permafrost catalog rebuild" to recreate it from the repository`, { cause: err });
      if (code === 'EACCES' || code === 'EPERM' || code === 'EROFS' || code === 'ENOTDIR' || code === 'SQLITE_CANTOPEN' || code === 'SQLITE_READONLY')
        throw new ConfigError(`cannot use the catalog ${path} (${msg}): check [agent] state_dir / --state-dir (${this.config.where('agent', 'state_dir')})`, { cause: err });
      throw fromSystemError(err, `catalog ${path}`);
    }
    return this.#catalog;
  }

  /** The volume provider (--provider, [volume] provider; local by default). */
  async provider(choice: { provider?: string; osCloud?: string } = {}): Promise<VolumeProvider> {
    this.#provider ??= await openProvider(this.config, choice);
    return this.#provider;
  }

  /** Options for the connector helper scripts. */
  scripts(): ScriptConnectorOptions {
    const c = this.config;
    const env: Record<string, string> = {};
    const conf = c.get('connector', 'ceph_conf');
    const keyring = c.get('connector', 'ceph_keyring');
    if (conf) env.PF_CEPH_CONF = conf;
    if (keyring) env.PF_KEYRING = keyring;
    return {
      stateDir: join(c.stateDir, 'run'),
      mode: c.get('connector', 'attach_mode') as ScriptConnectorOptions['mode'],
      timeoutMs: (c.int('connector', 'timeout') ?? 120) * 1000,
      env,
    };
  }

  /** This node's connector properties, as sent to the cloud. */
  connectorProps(): ConnectorProperties {
    return connectorProperties({ host: this.config.host });
  }

  /** The options of a volume job (backup, restore) that come from the configuration, and the signal. */
  volumeJobOptions(): Omit<VolumeJobOptions, 'progress'> {
    return {
      host: this.config.host,
      stateDir: this.config.stateDir,
      scripts: this.scripts(),
      connector: this.connectorProps(),
      waitTimeout: this.config.int('volume', 'wait_timeout'),
      signal: this.signal,
    };
  }

  async close(): Promise<void> {
    await this.#provider?.close?.();
    this.#provider = undefined;
    const repo = this.#repo;
    this.#repo = undefined;
    await repo?.close();
    this.#catalog?.close();
    this.#catalog = undefined;
  }
}
