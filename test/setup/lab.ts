/**
 * The test lab (test/lab/up.sh) seen from the tests: which parts to bring up, bringing them up, and
 * reading the environment up.sh writes to $LAB/env.sh.
 *
 * The vitest globalSetup (test/setup/global.ts) brings the lab up once per run and provides the
 * result under the key `permafrostLab`; a suite calls ensureLab(parts) and gets either the lab's
 * environment or a reason to skip (which the suite must print).
 *
 * Environment:
 *   PERMAFROST_TEST_LAB  off | all | a comma list of parts (s3, ceph, cinder, iscsi); default all
 *   LAB                  lab state directory (default /tmp/oslab)
 */
import { execFile, spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

/** A part of the lab up.sh can bring up on its own. */
export type LabPart = 'ceph' | 's3' | 'cinder' | 'iscsi';
export const ALL_PARTS: readonly LabPart[] = ['s3', 'cinder', 'iscsi'];

/** What a suite gets from the lab: every variable of env.sh, and typed views of the common ones. */
export interface LabEnv {
  /** $LAB, the lab's state directory. */
  dir: string;
  /** Parts up.sh found running when it last wrote env.sh. */
  parts: LabPart[];
  /** Every `export NAME=value` of $LAB/env.sh. */
  vars: Record<string, string>;
  /** radosgw S3 (from S3_ENDPOINT, S3_REGION, S3_BUCKET, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY). */
  s3: { endpoint: string; region: string; bucket: string; accessKeyId: string; secretAccessKey: string };
  /** Keystone v3 admin credentials (OS_* variables). */
  openstack: {
    authUrl: string;
    username: string;
    password: string;
    projectName: string;
    userDomainName: string;
    projectDomainName: string;
    regionName: string;
  };
}

/** A reason to skip, to be printed by the suite. */
export interface LabSkip {
  skip: string;
}

/** What globalSetup provides to the workers under `permafrostLab`. */
export type LabProvided = LabEnv | LabSkip;

declare module 'vitest' {
  export interface ProvidedContext {
    permafrostLab: LabProvided;
  }
}

const here = dirname(fileURLToPath(import.meta.url));
/** test/lab/up.sh of this checkout. */
export const UP_SH = resolve(here, '../lab/up.sh');

/** $LAB (default /tmp/oslab, as in test/lab/up.sh). */
export function labDir(): string {
  return process.env.LAB || '/tmp/oslab';
}

/** True when a value is a skip reason rather than a lab. */
export function isSkip(v: LabProvided | undefined): v is LabSkip {
  return typeof v === 'object' && v !== null && 'skip' in v;
}

/** The parts PERMAFROST_TEST_LAB asks for, or 'off'. Unknown names throw. */
export function requestedParts(spec: string | undefined = process.env.PERMAFROST_TEST_LAB): LabPart[] | 'off' {
  const s = (spec ?? '').trim().toLowerCase();
  if (s === 'off' || s === '0' || s === 'no' || s === 'false') return 'off';
  if (s === '' || s === 'all' || s === 'on' || s === '1') return [...ALL_PARTS];
  const parts = s.split(/[\s,]+/).filter(Boolean);
  for (const p of parts) {
    if (!['ceph', 's3', 'cinder', 'iscsi'].includes(p)) throw new Error(`PERMAFROST_TEST_LAB: unknown lab part '${p}' (use off, all, s3, ceph, cinder, iscsi)`);
  }
  return parts as LabPart[];
}

/** Why the lab cannot run here, or undefined when it can (root, not disabled). */
export function labUnavailable(): string | undefined {
  if (typeof process.getuid === 'function' && process.getuid() !== 0) {
    return 'the lab (Ceph, radosgw, Keystone, Cinder) needs root; run the tests as root to include these suites';
  }
  if (requestedParts() === 'off') return 'PERMAFROST_TEST_LAB=off';
  return undefined;
}

/** Parse an env.sh of `export NAME=value` lines (values optionally in single or double quotes). */
export function parseEnvSh(text: string): Record<string, string> {
  const vars: Record<string, string> = {};
  for (const line of text.split('\n')) {
    const m = /^\s*export\s+([A-Za-z_][A-Za-z0-9_]*)=(.*)$/.exec(line);
    if (!m) continue;
    let v = m[2]!.trim();
    if ((v.startsWith('"') && v.endsWith('"')) || (v.startsWith("'") && v.endsWith("'"))) v = v.slice(1, -1);
    vars[m[1]!] = v;
  }
  return vars;
}

/** Read $LAB/env.sh into a LabEnv, or undefined when there is none. */
export function readLabEnv(dir: string = labDir()): LabEnv | undefined {
  const file = join(dir, 'env.sh');
  if (!existsSync(file)) return undefined;
  const vars = parseEnvSh(readFileSync(file, 'utf8'));
  const v = (k: string, d = ''): string => vars[k] ?? d;
  return {
    dir,
    parts: v('LAB_PARTS').split(/\s+/).filter(Boolean) as LabPart[],
    vars,
    s3: {
      endpoint: v('S3_ENDPOINT', 'http://127.0.0.1:7480'),
      region: v('S3_REGION', 'default'),
      bucket: v('S3_BUCKET', 'permafrost-test'),
      accessKeyId: v('AWS_ACCESS_KEY_ID'),
      secretAccessKey: v('AWS_SECRET_ACCESS_KEY'),
    },
    openstack: {
      authUrl: v('OS_AUTH_URL'),
      username: v('OS_USERNAME'),
      password: v('OS_PASSWORD'),
      projectName: v('OS_PROJECT_NAME'),
      userDomainName: v('OS_USER_DOMAIN_NAME', 'Default'),
      projectDomainName: v('OS_PROJECT_DOMAIN_NAME', 'Default'),
      regionName: v('OS_REGION_NAME', 'RegionOne'),
    },
  };
}

/** Parts a LabEnv lacks among `parts` (s3 and cinder imply ceph). */
export function missingParts(env: LabEnv, parts: readonly LabPart[]): LabPart[] {
  return parts.filter((p) => !env.parts.includes(p));
}

/**
 * Run test/lab/up.sh for these parts (idempotent, serialised by a lock in up.sh) and return the
 * lab's environment. Progress lines go to `onLine`; the full output is kept in $LAB/logs/up-tests.log
 * by the caller's choice. Rejects with the tail of the output when up.sh fails.
 */
export function runUp(parts: readonly LabPart[], onLine: (line: string) => void = () => undefined): Promise<LabEnv> {
  return new Promise((resolvePromise, reject) => {
    const child = spawn('bash', [UP_SH, ...parts], { env: { ...process.env, LAB: labDir() }, stdio: ['ignore', 'pipe', 'pipe'] });
    const tail: string[] = [];
    const onData = (buf: Buffer): void => {
      for (const line of buf.toString('utf8').split('\n')) {
        if (!line) continue;
        tail.push(line);
        if (tail.length > 40) tail.shift();
        onLine(line);
      }
    };
    child.stdout.on('data', onData);
    child.stderr.on('data', onData);
    child.on('error', reject);
    child.on('close', (code) => {
      if (code !== 0) {
        reject(new Error(`test/lab/up.sh ${parts.join(' ')} exited with ${code}:\n${tail.join('\n')}`));
        return;
      }
      const env = readLabEnv();
      if (!env) reject(new Error(`test/lab/up.sh succeeded but ${join(labDir(), 'env.sh')} is missing`));
      else resolvePromise(env);
    });
  });
}

/** Quick liveness probe of radosgw (any HTTP answer counts). */
export async function s3Reachable(endpoint: string, timeoutMs = 3000): Promise<boolean> {
  try {
    await fetch(endpoint, { signal: AbortSignal.timeout(timeoutMs) });
    return true;
  } catch {
    return false;
  }
}

async function injected(): Promise<LabProvided | undefined> {
  try {
    const { inject } = await import('vitest');
    return inject('permafrostLab');
  } catch {
    return undefined; // not inside a vitest worker, or no globalSetup
  }
}

/**
 * The lab for a suite that needs `parts` (default s3): the environment, or a reason to skip.
 * Uses what globalSetup brought up; brings up missing parts itself (up.sh is idempotent and locked,
 * so parallel workers are safe). Never throws for "lab not possible here" (skip instead); throws
 * when a bring-up that should work fails.
 */
export async function ensureLab(parts: readonly LabPart[] = ['s3']): Promise<LabEnv | LabSkip> {
  const why = labUnavailable();
  if (why) return { skip: why };
  const wanted = requestedParts();
  if (wanted !== 'off') {
    const notAllowed = parts.filter((p) => !wanted.includes(p) && !(p === 'ceph' && (wanted.includes('s3') || wanted.includes('cinder'))));
    if (notAllowed.length > 0) return { skip: `PERMAFROST_TEST_LAB=${process.env.PERMAFROST_TEST_LAB} leaves out ${notAllowed.join(', ')}` };
  }
  const provided = await injected();
  if (isSkip(provided)) return provided;
  let env = provided ?? readLabEnv();
  if (env && missingParts(env, parts).length === 0) {
    if (!parts.includes('s3') || (await s3Reachable(env.s3.endpoint))) return env;
  }
  env = await runUp(parts);
  const still = missingParts(env, parts);
  if (still.length > 0) throw new Error(`lab parts ${still.join(', ')} are not up after test/lab/up.sh; see ${env.dir}/logs`);
  return env;
}

/** Run a command and resolve with its stdout (helper for suites that poke at lab daemons). */
export function run(cmd: string, args: string[]): Promise<string> {
  return new Promise((res, rej) => {
    execFile(cmd, args, { maxBuffer: 16 * 1024 * 1024 }, (err, stdout, stderr) => {
      if (err) rej(new Error(`${cmd} ${args.join(' ')}: ${err.message}\n${stderr}`));
      else res(stdout);
    });
  });
}
