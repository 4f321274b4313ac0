/**
 * ScriptConnector: the generic Connector that runs scripts/<protocol>-attach and
 * scripts/<protocol>-detach (see connector.ts for the contract).
 *
 * Inputs: every data key of connection_info becomes PF_<UPPER_SNAKE> (arrays are
 * joined with commas, objects as JSON), plus PF_READ_ONLY, PF_STATE_DIR (one
 * directory per attachment under the state root) and PF_ATTACH_MODE. Values of
 * secret keys (passwords, secrets, keys, tokens) are registered with the logger
 * and masked in every message and error. Outputs: KEY=VALUE lines; DEVICE is
 * required. Detach gets attach's outputs back as PF_<KEY>.
 */
import { randomUUID } from 'node:crypto';
import { existsSync, statSync } from 'node:fs';
import { mkdir, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadExeca } from '../util/exec.js';
import { DeviceError, InterruptedError } from '../errors.js';
import { log, redact, registerSecret } from '../util/log.js';
import type { ConnectionInfo } from '../volume/provider.js';
import type { AttachedDevice, Connector } from './connector.js';
import { isProcessAlive } from '../util/process.js';

/** How the helper script reaches the storage: decided by the script in `auto`. */
export type AttachMode = 'auto' | 'kernel' | 'userspace';

/** Options shared by every script-based connector. */
export interface ScriptConnectorOptions {
  /** Directory holding the helper scripts; default: the package's scripts/ (or $PERMAFROST_SCRIPTS_DIR). */
  scriptsDir?: string;
  /** Root of the per-attachment state directories; default /var/lib/permafrost/run. */
  stateDir?: string;
  /** PF_ATTACH_MODE; default auto. */
  mode?: AttachMode;
  /** Time allowed to one script run; default 120 s. The whole process group is killed then. */
  timeoutMs?: number;
  /** Grace between SIGTERM and SIGKILL on timeout or abort; default 5 s. */
  killGraceMs?: number;
  /** Extra environment for the scripts (e.g. PF_CEPH_CONF, PF_KEYRING, PF_SYSFS_ROOT). */
  env?: Record<string, string>;
  /** What to check about DEVICE after attach: a block device (default), that it exists, or nothing. */
  verifyDevice?: 'block' | 'exists' | 'none';
}

/** Default root of the per-attachment state directories. */
export const DEFAULT_STATE_DIR = '/var/lib/permafrost/run';
/** Default time allowed to one helper script run. */
export const DEFAULT_SCRIPT_TIMEOUT_MS = 120_000;

const SECRET_KEY = /(password|passwd|secret|token|credential|(^|_)key($|_)|keyring|auth_key)/i;

/** Whether a connection_info key holds a secret (its value is never logged). */
export function isSecretKey(key: string): boolean {
  return SECRET_KEY.test(key);
}

/** `targetPortal`, `target-portal`, `target_portal` → `TARGET_PORTAL`. */
export function toEnvName(key: string): string {
  return key
    .replace(/([a-z0-9])([A-Z])/g, '$1_$2')
    .replace(/[^A-Za-z0-9]+/g, '_')
    .replace(/^_+|_+$/g, '')
    .toUpperCase();
}

function envValue(value: unknown): string | undefined {
  if (value === null || value === undefined) return undefined;
  if (typeof value === 'string') return value;
  if (typeof value === 'number' || typeof value === 'boolean' || typeof value === 'bigint') return String(value);
  if (Array.isArray(value) && value.every((v) => v === null || ['string', 'number', 'boolean'].includes(typeof v))) {
    return value.map((v) => (v === null ? '' : String(v))).join(',');
  }
  return JSON.stringify(value);
}

/**
 * The data of a connection_info, whether Cinder returned it nested under `data`
 * or flat beside `driver_volume_type` (the attachments API does the latter).
 */
export function connectionData(info: ConnectionInfo | Record<string, unknown>): Record<string, unknown> {
  const raw = info as Record<string, unknown>;
  const data = raw.data;
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(raw)) {
    if (k === 'data' || k === 'driver_volume_type') continue;
    out[k] = v;
  }
  if (data && typeof data === 'object' && !Array.isArray(data)) Object.assign(out, data as Record<string, unknown>);
  return out;
}

/** PF_* environment built from a connection_info's data; also returns the secret values in it. */
export function connectionEnv(info: ConnectionInfo | Record<string, unknown>): { env: Record<string, string>; secrets: string[] } {
  const env: Record<string, string> = {};
  const secrets: string[] = [];
  for (const [key, value] of Object.entries(connectionData(info))) {
    const name = toEnvName(key);
    if (!name) continue;
    const v = envValue(value);
    if (v === undefined) continue;
    env[`PF_${name}`] = v;
    if (isSecretKey(key) && v.length > 0) secrets.push(v);
  }
  return { env, secrets };
}

/** Parse KEY=VALUE lines (KEY in upper snake case); other lines are ignored. */
export function parseKeyValues(stdout: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const line of stdout.split(/\r?\n/)) {
    const m = /^([A-Z][A-Z0-9_]*)=(.*)$/.exec(line);
    if (m) out[m[1]!] = m[2]!;
    else if (line.trim()) log.debug(`connector script: ignored output line: ${redact(line)}`);
  }
  return out;
}

/** Mask every occurrence of the given secrets, then apply the logger's redaction. */
export function redactWith(text: string, secrets: string[]): string {
  let out = text;
  for (const s of secrets) if (s) out = out.split(s).join('***');
  return redact(out);
}

/** Find the package's scripts/ directory from this module's location. */
export function defaultScriptsDir(): string {
  const env = process.env.PERMAFROST_SCRIPTS_DIR;
  if (env) return env;
  let dir = path.dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 5; i++) {
    const candidate = path.join(dir, 'scripts');
    if (existsSync(path.join(candidate, 'local-attach'))) return candidate;
    dir = path.dirname(dir);
  }
  return path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../scripts');
}

function tail(text: string, max = 4000): string {
  const t = text.trim();
  return t.length > max ? `…${t.slice(t.length - max)}` : t;
}

/** Result of one helper script run. */
export interface ScriptRun {
  stdout: string;
  stderr: string;
  exitCode: number | undefined;
  timedOut: boolean;
  aborted: boolean;
}

/** Variables of the agent's own environment that helper scripts inherit (no credentials). */
const INHERITED_ENV = ['PATH', 'HOME', 'LANG', 'LC_ALL', 'LC_CTYPE', 'TMPDIR', 'TZ', 'PERMAFROST_LOG_LEVEL'];

/**
 * Run one helper script in its own process group with `env` plus a few
 * variables of this process (PATH, HOME, locale: never the agent's cloud or S3
 * credentials). On timeout or abort the whole group gets SIGTERM, then SIGKILL
 * after `killGraceMs`. Never throws for a non-zero exit.
 */
export async function runScript(
  file: string,
  env: Record<string, string>,
  opts: { timeoutMs: number; killGraceMs: number; signal?: AbortSignal },
): Promise<ScriptRun> {
  const base: Record<string, string> = {};
  for (const k of INHERITED_ENV) {
    const v = process.env[k];
    if (v !== undefined) base[k] = v;
  }
  const { execa } = await loadExeca();
  const child = execa(file, [], {
    env: { ...base, ...env },
    extendEnv: false,
    detached: true,
    reject: false,
    stdin: 'ignore',
    stripFinalNewline: false,
    encoding: 'utf8',
  });
  let timedOut = false;
  let aborted = false;
  let killTimer: NodeJS.Timeout | undefined;
  const killGroup = (signal: NodeJS.Signals): void => {
    if (child.pid === undefined) return;
    try {
      process.kill(-child.pid, signal);
    } catch {
      // already gone
    }
  };
  const stop = (): void => {
    killGroup('SIGTERM');
    killTimer = setTimeout(() => killGroup('SIGKILL'), opts.killGraceMs);
    killTimer.unref();
  };
  const timer = setTimeout(() => {
    timedOut = true;
    stop();
  }, opts.timeoutMs);
  const onAbort = (): void => {
    aborted = true;
    stop();
  };
  if (opts.signal?.aborted) onAbort();
  else opts.signal?.addEventListener('abort', onAbort, { once: true });
  try {
    const r = await child;
    return {
      stdout: String(r.stdout ?? ''),
      stderr: String(r.stderr ?? ''),
      exitCode: r.exitCode,
      timedOut,
      aborted,
    };
  } finally {
    clearTimeout(timer);
    if (killTimer && !timedOut && !aborted) clearTimeout(killTimer);
    opts.signal?.removeEventListener('abort', onAbort);
  }
}

/** A Connector backed by the helper script pair of one protocol. */
export class ScriptConnector implements Connector {
  /** Protocol name: the scripts are scripts/<protocol>-attach and -detach. */
  readonly protocol: string;
  protected readonly opts: Required<Omit<ScriptConnectorOptions, 'env'>> & { env: Record<string, string> };

  constructor(protocol: string, opts: ScriptConnectorOptions = {}) {
    if (!/^[a-z][a-z0-9_-]*$/.test(protocol)) throw new DeviceError(`invalid connector protocol '${protocol}'`);
    this.protocol = protocol;
    this.opts = {
      scriptsDir: opts.scriptsDir ?? defaultScriptsDir(),
      stateDir: opts.stateDir ?? DEFAULT_STATE_DIR,
      mode: opts.mode ?? 'auto',
      timeoutMs: opts.timeoutMs ?? DEFAULT_SCRIPT_TIMEOUT_MS,
      killGraceMs: opts.killGraceMs ?? 5_000,
      env: opts.env ?? {},
      verifyDevice: opts.verifyDevice ?? 'block',
    };
    for (const [k, v] of Object.entries(this.opts.env)) if (isSecretKey(k)) registerSecret(v);
  }

  /** Path of this protocol's attach or detach script. */
  scriptPath(action: 'attach' | 'detach'): string {
    return path.join(this.opts.scriptsDir, `${this.protocol}-${action}`);
  }

  /** Check a connection_info before running the script; subclasses add protocol rules. */
  protected validate(_data: Record<string, unknown>): void {}

  /** Attach; throws DeviceError (script stderr, redacted) on failure or timeout. */
  async attach(info: ConnectionInfo, opts: { readOnly: boolean; signal?: AbortSignal }): Promise<AttachedDevice> {
    if (opts.signal?.aborted) throw new InterruptedError();
    const data = connectionData(info);
    this.validate(data);
    const { env: infoEnv, secrets } = connectionEnv(info);
    for (const s of secrets) registerSecret(s);
    const allSecrets = [...secrets, ...Object.entries(this.opts.env).filter(([k]) => isSecretKey(k)).map(([, v]) => v)];

    // The cloud may export the volume read-only (access_mode 'ro'): never attach it read-write.
    const readOnly = opts.readOnly || data.access_mode === 'ro';
    const script = this.scriptPath('attach');
    if (!existsSync(script)) throw new DeviceError(`connector script ${script} not found`);
    const stateDir = await this.makeStateDir(data);
    const env: Record<string, string> = {
      ...infoEnv,
      ...this.opts.env,
      PF_READ_ONLY: readOnly ? '1' : '0',
      PF_STATE_DIR: stateDir,
      PF_ATTACH_MODE: this.opts.mode,
      PF_PROTOCOL: this.protocol,
    };
    log.debug(`${this.protocol}: running ${script} (${Object.keys(env).filter((k) => k.startsWith('PF_')).sort().join(' ')})`);
    const started = Date.now();
    const run = await this.run(script, env, opts.signal);
    const outputs = parseKeyValues(run.stdout);
    const state: Record<string, string> = { ...outputs, STATE_DIR: stateDir, READ_ONLY: readOnly ? '1' : '0' };

    const fail = async (why: string): Promise<never> => {
      // Undo whatever the script did before it failed: detach reads the state dir.
      await this.detach({ path: outputs.DEVICE ?? '', protocol: this.protocol, state }).catch((err: unknown) => {
        log.warn(`${this.protocol}: cleanup after failed attach: ${redactWith(String((err as Error)?.message ?? err), allSecrets)}`);
      });
      const stderr = redactWith(tail(run.stderr), allSecrets);
      const msg = `${this.protocol} attach ${why}${stderr ? `: ${stderr}` : ''}`;
      if (run.aborted) throw new InterruptedError(msg);
      throw new DeviceError(msg);
    };

    if (run.aborted) return fail('interrupted');
    if (run.timedOut) return fail(`timed out after ${Math.round(this.opts.timeoutMs / 1000)} s`);
    if (run.exitCode !== 0) return fail(`failed (exit ${run.exitCode ?? 'signal'})`);
    const device = outputs.DEVICE;
    if (!device) return fail('printed no DEVICE=');
    const problem = this.checkDevice(device);
    if (problem) return fail(problem);
    log.debug(`${this.protocol}: attached ${device} in ${Date.now() - started} ms`);
    return { path: device, protocol: this.protocol, state };
  }

  /** Detach; idempotent. Removes the attachment's state directory when done. */
  async detach(device: AttachedDevice): Promise<void> {
    const env: Record<string, string> = { ...this.opts.env };
    for (const [k, v] of Object.entries(device.state)) {
      if (/^[A-Z][A-Z0-9_]*$/.test(k)) env[`PF_${k}`] = v;
    }
    const stateDir = device.state.STATE_DIR;
    if (stateDir) env.PF_STATE_DIR = stateDir;
    env.PF_READ_ONLY = device.state.READ_ONLY ?? '0';
    env.PF_PROTOCOL = this.protocol;
    const script = this.scriptPath('detach');
    const started = Date.now();
    const run = await this.run(script, env);
    if (run.timedOut || run.exitCode !== 0) {
      const why = run.timedOut ? `timed out after ${Math.round(this.opts.timeoutMs / 1000)} s` : `failed (exit ${run.exitCode ?? 'signal'})`;
      const stderr = redact(tail(run.stderr));
      throw new DeviceError(`${this.protocol} detach of ${device.path || '(unknown device)'} ${why}${stderr ? `: ${stderr}` : ''}`);
    }
    if (stateDir && this.isOwnStateDir(stateDir)) await rm(stateDir, { recursive: true, force: true });
    log.debug(`${this.protocol}: detached ${device.path} in ${Date.now() - started} ms`);
  }

  private async run(script: string, env: Record<string, string>, signal?: AbortSignal): Promise<ScriptRun> {
    if (!existsSync(script)) throw new DeviceError(`connector script ${script} not found`);
    try {
      return await runScript(script, env, { timeoutMs: this.opts.timeoutMs, killGraceMs: this.opts.killGraceMs, signal });
    } catch (err) {
      throw new DeviceError(`cannot run ${script}: ${redact(String((err as Error)?.message ?? err))}`, { cause: err });
    }
  }

  private checkDevice(device: string): string | undefined {
    if (this.opts.verifyDevice === 'none') return undefined;
    let st;
    try {
      st = statSync(device);
    } catch {
      return `reported DEVICE=${device}, which does not exist`;
    }
    if (this.opts.verifyDevice === 'block' && !st.isBlockDevice()) return `reported DEVICE=${device}, which is not a block device`;
    return undefined;
  }

  /** A state directory this connector may remove: under its root, or one made for this protocol (owner.json). */
  private isOwnStateDir(dir: string): boolean {
    const root = path.resolve(this.opts.stateDir);
    const d = path.resolve(dir);
    if (d.startsWith(root + path.sep)) return true;
    return path.basename(d).startsWith(`${this.protocol}-`) && existsSync(path.join(d, OWNER_FILE));
  }

  private async makeStateDir(data: Record<string, unknown>): Promise<string> {
    await mkdir(this.opts.stateDir, { recursive: true, mode: 0o700 });
    const hint = typeof data.attachment_id === 'string' ? data.attachment_id : typeof data.volume_id === 'string' ? data.volume_id : '';
    const safe = hint.replace(/[^A-Za-z0-9_-]/g, '').slice(0, 64);
    const id = `${this.protocol}-${safe ? `${safe}-` : ''}${randomUUID().slice(0, 8)}`;
    const dir = path.join(this.opts.stateDir, id);
    await mkdir(dir, { recursive: true, mode: 0o700 });
    const owner: StateDirOwner = { protocol: this.protocol, pid: process.pid, host: os.hostname(), createdAt: new Date().toISOString() };
    await writeFile(path.join(dir, OWNER_FILE), JSON.stringify(owner) + '\n', { mode: 0o600 });
    return dir;
  }
}

const OWNER_FILE = 'owner.json';

/** Who made a per-attachment state directory (owner.json in it). */
export interface StateDirOwner {
  protocol: string;
  pid: number;
  host: string;
  createdAt: string;
}

/** An attachment left by a process that is gone: its state directory and what attach recorded. */
export interface OrphanAttachment {
  dir: string;
  owner: StateDirOwner;
  /** attach.env of the directory (what the script recorded as it went). */
  state: Record<string, string>;
}


/**
 * Attachments under the state root whose owning process (same host) no longer
 * runs: what a crashed agent left attached. Directories of live processes, of
 * other hosts, and without owner.json are left out.
 */
export async function findOrphanAttachments(stateRoot: string = DEFAULT_STATE_DIR): Promise<OrphanAttachment[]> {
  let names: string[];
  try {
    names = await readdir(stateRoot);
  } catch {
    return [];
  }
  const out: OrphanAttachment[] = [];
  for (const name of names.sort()) {
    const dir = path.join(stateRoot, name);
    let owner: StateDirOwner;
    try {
      owner = JSON.parse(await readFile(path.join(dir, OWNER_FILE), 'utf8')) as StateDirOwner;
    } catch {
      continue;
    }
    if (owner.host !== os.hostname() || isProcessAlive(owner.pid)) continue;
    let state: Record<string, string> = {};
    try {
      state = parseKeyValues(await readFile(path.join(dir, 'attach.env'), 'utf8'));
    } catch {
      // the script recorded nothing
    }
    out.push({ dir, owner, state });
  }
  return out;
}

/** Detach every orphan attachment (see findOrphanAttachments); errors are collected, not thrown. */
export async function detachOrphans(opts: ScriptConnectorOptions = {}): Promise<{ detached: string[]; failed: { dir: string; error: string }[] }> {
  const root = opts.stateDir ?? DEFAULT_STATE_DIR;
  const detached: string[] = [];
  const failed: { dir: string; error: string }[] = [];
  for (const o of await findOrphanAttachments(root)) {
    try {
      const c = new ScriptConnector(o.owner.protocol, { ...opts, stateDir: root });
      await c.detach({ path: o.state.DEVICE ?? '', protocol: o.owner.protocol, state: { ...o.state, STATE_DIR: o.dir } });
      detached.push(o.dir);
      log.info(`detached ${o.owner.protocol} attachment left by pid ${o.owner.pid} (${o.state.DEVICE ?? 'no device'})`);
    } catch (err) {
      failed.push({ dir: o.dir, error: redact(String((err as Error)?.message ?? err)) });
    }
  }
  return { detached, failed };
}
