/**
 * Logging to stderr. stdout is reserved for results. Every message passes
 * through redact() so a secret that slipped into an error never gets printed.
 */
export type Level = 'debug' | 'info' | 'warn' | 'error';
const order: Record<Level, number> = { debug: 10, info: 20, warn: 30, error: 40 };

const secrets = new Set<string>();
/** Register a secret value (password, key, token) so that it is masked wherever it appears. */
export function registerSecret(value: string | undefined): void {
  if (value && value.length >= 4) secrets.add(value);
}

const secretPatterns: RegExp[] = [
  /(\b"?(?:password|passwd|secret[a-z_]*|token|[a-z]+_key|credential_secret)"?\s*[:=]\s*"?)([^"\s,}&]+)/gi,
  /(X-Auth-Token:\s*)(\S+)/gi,
  /(X-Subject-Token:\s*)(\S+)/gi,
];

export function redact(text: string): string {
  let out = text;
  for (const s of secrets) out = out.split(s).join('***');
  for (const re of secretPatterns) out = out.replace(re, '$1***');
  return out;
}

export interface Logger {
  debug(msg: string): void;
  info(msg: string): void;
  warn(msg: string): void;
  error(msg: string): void;
}

let threshold: Level = (process.env.PERMAFROST_LOG_LEVEL as Level) in order ? (process.env.PERMAFROST_LOG_LEVEL as Level) : 'info';
/** Hook so a progress bar can clear its line before a log line is written. */
let beforeWrite: (() => void) | undefined;

export function setLogLevel(level: Level): void {
  threshold = level;
}
export function setBeforeLogWrite(fn: (() => void) | undefined): void {
  beforeWrite = fn;
}

function write(level: Level, msg: string): void {
  if (order[level] < order[threshold]) return;
  beforeWrite?.();
  const prefix = level === 'info' ? '' : `${level}: `;
  process.stderr.write(redact(`${prefix}${msg}`) + '\n');
}

export const log: Logger = {
  debug: (m) => write('debug', m),
  info: (m) => write('info', m),
  warn: (m) => write('warn', m),
  error: (m) => write('error', m),
};
