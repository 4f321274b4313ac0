/**
 * Configuration: command line, then environment, then agent.ini, then defaults.
 *
 * agent.ini is parsed strictly (line numbers in every error): an unknown
 * section or key, a line that is not `key = value`, or a value of the wrong
 * type is a ConfigError (exit 2), never silently ignored.
 */
import { readFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { ConfigError } from '../errors.js';
import { registerSecret } from '../util/log.js';
import { type KeySpec, SCHEMA } from './schema.js';

export const DEFAULT_CONFIG_PATH = '/etc/permafrost/agent.ini';

type Source = 'cli' | 'env' | 'file' | 'default';

export interface ParsedIni {
  [section: string]: { [key: string]: { value: string; line: number } };
}

/** Parse INI text strictly. `;` and `#` start comment lines. */
export function parseIni(text: string, path: string): ParsedIni {
  const out: ParsedIni = {};
  let section: string | undefined;
  text.split(/\r?\n/).forEach((raw, i) => {
    const line = raw.trim();
    const at = `${path}:${i + 1}`;
    if (line === '' || line.startsWith(';') || line.startsWith('#')) return;
    const sec = /^\[([A-Za-z0-9_.-]+)\]$/.exec(line);
    if (sec) {
      section = sec[1]!;
      out[section] ??= {};
      return;
    }
    const kv = /^([A-Za-z0-9_.-]+)\s*=\s*(.*)$/.exec(line);
    if (!kv) throw new ConfigError(`${at}: expected "key = value" or "[section]", got "${line.slice(0, 60)}"`);
    if (!section) throw new ConfigError(`${at}: key "${kv[1]}" is outside any [section]`);
    let value = kv[2]!;
    if (/^".*"$/.test(value) || /^'.*'$/.test(value)) value = value.slice(1, -1);
    out[section]![kv[1]!] = { value, line: i + 1 };
  });
  return out;
}

export function parseSize(text: string, what: string): number {
  const m = /^(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b?)?$/i.exec(text.trim());
  if (!m) throw new ConfigError(`${what}: "${text}" is not a size (e.g. 512K, 16M, 2G)`);
  const mult = { '': 1, k: 1 << 10, m: 1 << 20, g: 1 << 30, t: 2 ** 40 }[m[2]!.toLowerCase() as '' | 'k' | 'm' | 'g' | 't'];
  return Math.round(Number(m[1]) * mult);
}

function specOf(section: string, name: string): KeySpec | undefined {
  return SCHEMA.find((k) => k.section === section && k.name === name);
}

export class Config {
  #values = new Map<string, { value: string; source: Source; where: string }>();

  constructor(
    readonly path: string | undefined,
    file: ParsedIni,
    env: NodeJS.ProcessEnv,
    cli: Record<string, string | undefined>,
  ) {
    for (const [section, keys] of Object.entries(file)) {
      if (!SCHEMA.some((k) => k.section === section)) throw new ConfigError(`${path}: unknown section [${section}]`);
      for (const [name, { value, line }] of Object.entries(keys)) {
        if (!specOf(section, name)) throw new ConfigError(`${path}:${line}: unknown key "${name}" in [${section}]`);
        this.#set(section, name, value, 'file', `${path}:${line}`);
      }
    }
    for (const k of SCHEMA) {
      const v = k.env ? env[k.env] : undefined;
      if (v !== undefined && v !== '') this.#set(k.section, k.name, v, 'env', `environment ${k.env}`);
    }
    for (const [key, v] of Object.entries(cli)) {
      if (v === undefined) continue;
      const [section, name] = key.split('.') as [string, string];
      if (!specOf(section, name)) throw new Error(`internal: unknown config key ${key}`);
      this.#set(section, name, v, 'cli', 'command line');
    }
    for (const k of SCHEMA) if (k.secret) registerSecret(this.get(k.section, k.name));
  }

  #set(section: string, name: string, value: string, source: Source, where: string): void {
    const spec = specOf(section, name)!;
    if (spec.type === 'enum' && !spec.values!.includes(value))
      throw new ConfigError(`${where}: ${section}.${name} must be one of ${spec.values!.join(', ')}, not "${value}"`);
    if (spec.type === 'int' && !/^-?\d+$/.test(value.trim())) throw new ConfigError(`${where}: ${section}.${name} must be an integer, not "${value}"`);
    if (spec.type === 'bool' && !/^(true|false|yes|no|1|0|on|off)$/i.test(value.trim()))
      throw new ConfigError(`${where}: ${section}.${name} must be true or false, not "${value}"`);
    if (spec.type === 'size') parseSize(value, `${where}: ${section}.${name}`);
    this.#values.set(`${section}.${name}`, { value, source, where });
  }

  /** The value, or the default, or undefined. */
  get(section: string, name: string): string | undefined {
    const v = this.#values.get(`${section}.${name}`);
    if (v) return v.value;
    return specOf(section, name)?.default;
  }

  /** Where the value came from, for error messages. */
  where(section: string, name: string): string {
    return this.#values.get(`${section}.${name}`)?.where ?? 'default';
  }

  int(section: string, name: string): number | undefined {
    const v = this.get(section, name);
    return v === undefined ? undefined : Number.parseInt(v, 10);
  }

  bool(section: string, name: string): boolean | undefined {
    const v = this.get(section, name);
    return v === undefined ? undefined : /^(true|yes|1|on)$/i.test(v.trim());
  }

  size(section: string, name: string): number | undefined {
    const v = this.get(section, name);
    return v === undefined ? undefined : parseSize(v, `${section}.${name}`);
  }

  get host(): string {
    return this.get('agent', 'host') ?? hostname();
  }
  get stateDir(): string {
    return this.get('agent', 'state_dir')!;
  }
}

/**
 * Load the configuration. An explicitly named file (--config or PERMAFROST_CONFIG)
 * must exist; the default path may be absent.
 */
export function loadConfig(opts: { path?: string; env?: NodeJS.ProcessEnv; cli?: Record<string, string | undefined> }): Config {
  const env = opts.env ?? process.env;
  const explicit = opts.path ?? env.PERMAFROST_CONFIG;
  const path = explicit ?? DEFAULT_CONFIG_PATH;
  let text: string | undefined;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (explicit || code !== 'ENOENT') throw new ConfigError(`cannot read config file ${path}: ${(err as Error).message}`, { cause: err });
  }
  return new Config(text === undefined ? undefined : path, text === undefined ? {} : parseIni(text, path), env, opts.cli ?? {});
}

/** agent.ini.example, generated from the schema (kept in the repository and checked by a test). */
export function renderExample(): string {
  const lines = [
    '; Permafrost agent configuration — /etc/permafrost/agent.ini (or --config FILE, PERMAFROST_CONFIG).',
    '; Precedence: command line, then environment, then this file, then the defaults shown.',
    '; Every key is listed with its default; a commented-out key means "no default".',
    '',
  ];
  let section = '';
  for (const k of SCHEMA) {
    if (k.section !== section) {
      if (section) lines.push('');
      lines.push(`[${k.section}]`);
      section = k.section;
    }
    lines.push(`; ${k.doc}`);
    const meta = [k.env ? `env ${k.env}` : '', k.values ? `one of ${k.values.join('|')}` : ''].filter(Boolean).join('; ');
    if (meta) lines.push(`; (${meta})`);
    lines.push(k.default !== undefined ? `${k.name} = ${k.default}` : `;${k.name} =`);
  }
  return lines.join('\n') + '\n';
}
