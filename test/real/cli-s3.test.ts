/**
 * The CLI against a real S3 server (radosgw from test/lab): the operator's flow on
 * s3://bucket/prefix with the endpoint in agent.ini and the credentials in AWS_*; bad credentials
 * (exit 12) without the secret ever appearing in the output (human, --json, -v); an unreachable
 * endpoint (exit 15) within a bounded time; a prefix or bucket that holds no repository (exit 10).
 */
import { randomBytes } from 'node:crypto';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { S3Storage } from '../../src/storage/s3.js';
import { ensureLab, isSkip, type LabEnv } from '../setup/lab.js';
import {
  type CliResult,
  Sandbox,
  describeRun,
  diffTrees,
  errorLines,
  jsonError,
  jsonOf,
  makeTree,
  prepareCli,
  snapshotTree,
} from '../helpers/cli.js';

const lab = await ensureLab(['s3']);
if (isSkip(lab)) console.warn(`[cli-s3] skipped: ${lab.skip}`);
const haveLab = !isSkip(lab);
const env = haveLab ? (lab as LabEnv) : undefined;

const run = randomBytes(4).toString('hex');
const prefixes: string[] = [];
const sandboxes: Sandbox[] = [];
/** Every output of every run, to look for secrets in. */
const outputs: CliResult[] = [];

function ini(o: { endpoint?: string; maxAttempts?: number; secret?: string } = {}): string {
  return [
    '[s3]',
    `endpoint = ${o.endpoint ?? env!.s3.endpoint}`,
    `region = ${env!.s3.region}`,
    'path_style = true',
    `max_attempts = ${o.maxAttempts ?? 3}`,
    ...(o.secret ? [`secret_access_key = ${o.secret}`] : []),
    '',
  ].join('\n');
}

function s3Sandbox(o: { encrypted?: boolean; prefix?: string; bucket?: string; ini?: string; env?: Record<string, string | undefined> } = {}): Sandbox {
  const prefix = o.prefix ?? `cli-${run}-${sandboxes.length}`;
  prefixes.push(prefix);
  const s = new Sandbox({
    encrypted: o.encrypted,
    repo: `s3://${o.bucket ?? env!.s3.bucket}/${prefix}`,
    ini: o.ini ?? ini(),
    env: { AWS_ACCESS_KEY_ID: env!.s3.accessKeyId, AWS_SECRET_ACCESS_KEY: env!.s3.secretAccessKey, ...o.env },
  });
  sandboxes.push(s);
  return s;
}

async function ok(s: Sandbox, args: string[]): Promise<CliResult> {
  const r = await s.run(args);
  outputs.push(r);
  expect(r.code, `permafrost ${args.join(' ')}: ${describeRun(r)}`).toBe(0);
  return r;
}

async function fails(s: Sandbox, args: string[], opts: Parameters<Sandbox['run']>[1] = {}): Promise<CliResult> {
  const r = await s.run(args, opts);
  outputs.push(r);
  return r;
}

beforeAll(async () => {
  if (haveLab) await prepareCli();
});

afterAll(async () => {
  if (!haveLab) return;
  const st = new S3Storage({ bucket: env!.s3.bucket, endpoint: env!.s3.endpoint, region: env!.s3.region, forcePathStyle: true, accessKeyId: env!.s3.accessKeyId, secretAccessKey: env!.s3.secretAccessKey });
  for (const p of prefixes) {
    const keys: string[] = [];
    for await (const o of st.list(`${p}/`)) keys.push(o.key);
    for (const k of keys) await st.delete(k);
  }
  await st.close();
  for (const s of sandboxes) s.remove();
});

describe.skipIf(!haveLab).each([
  ['unencrypted', false],
  ['encrypted', true],
])('CLI on radosgw, %s', (_label, encrypted) => {
  let s: Sandbox;
  let src: string;
  let snap1: ReturnType<typeof snapshotTree>;
  let id1 = '';
  let id2 = '';

  beforeAll(() => {
    s = s3Sandbox({ encrypted });
    src = s.path('src');
    makeTree(src, { seed: `s3-${encrypted}`, randomBytes: 3 << 20 });
  });

  it('init, backup, incremental backup, list', async () => {
    const init = jsonOf(await ok(s, ['init', '--json']));
    expect(init).toMatchObject({ encrypted, repository: expect.stringContaining(`s3://${env!.s3.bucket}/`) });
    snap1 = snapshotTree(src);
    id1 = jsonOf(await ok(s, ['-v', 'backup', '--path', src, '--name', 'data', '--json'])).id;
    writeFileSync(join(src, 'added.txt'), 'added\n');
    const b2 = jsonOf(await ok(s, ['backup', '--path', src, '--name', 'data', '--json']));
    id2 = b2.id;
    expect(b2.parent).toBe(id1);
    expect(b2.stats.filesUnchanged).toBeGreaterThan(5);
    const l = jsonOf(await ok(s, ['list', '--json']));
    expect(l.backups.map((b: { id: string; status: string }) => `${b.id}:${b.status}`)).toEqual([`${id1}:complete`, `${id2}:complete`]);
  });

  it('restores into a directory and as a tar stream', async () => {
    await ok(s, ['restore', id1, '--target-dir', s.path('r1')]);
    expect(diffTrees(snap1, snapshotTree(s.path('r1')))).toEqual([]);
    const out = s.path('tar');
    mkdirSync(out);
    const { cli, sink } = await s.piped(['restore', id2, '--tar', '-'], { cmd: 'tar', args: ['-x', '-f', '-', '-C', out, '-p'] });
    expect(cli.code, describeRun(cli)).toBe(0);
    expect(sink.code, sink.stderr).toBe(0);
    expect(diffTrees(snapshotTree(src), snapshotTree(out), { tolMs: 1000 }).filter((d) => !d.startsWith('.:'))).toEqual([]);
  });

  it('check --read-data passes; the catalog is rebuilt from the bucket alone', async () => {
    const c = jsonOf(await ok(s, ['check', '--read-data', '--json']));
    expect(c).toMatchObject({ ok: true, backups: 2 });
    rmSync(s.state, { recursive: true, force: true });
    const rb = jsonOf(await ok(s, ['catalog', 'rebuild', '--json']));
    expect(rb).toMatchObject({ backups: 2, unreadable: [] });
    const l = jsonOf(await ok(s, ['list', '--json']));
    expect(l.backups.map((b: { id: string }) => b.id)).toEqual([id1, id2]);
  });
});

describe.skipIf(!haveLab)('CLI on radosgw: faults', () => {
  const wrongSecret = `WrongSecret${randomBytes(12).toString('hex')}`;

  it('bad credentials → 12, and the secret key is never printed (human, --json, -v)', async () => {
    const good = s3Sandbox();
    await ok(good, ['init']);
    for (const [label, o] of [
      ['wrong secret in AWS_SECRET_ACCESS_KEY', { env: { AWS_SECRET_ACCESS_KEY: wrongSecret } }],
      ['wrong secret in agent.ini', { ini: ini({ secret: wrongSecret }), env: { AWS_SECRET_ACCESS_KEY: undefined } }],
      ['unknown access key', { env: { AWS_ACCESS_KEY_ID: 'NOSUCHACCESSKEY00000', AWS_SECRET_ACCESS_KEY: wrongSecret } }],
    ] as const) {
      const s = s3Sandbox({ prefix: good.repo.split('/').pop()!, ...o });
      for (const flags of [[], ['--json'], ['-v'], ['-v', '--json']]) {
        const r = await fails(s, [...flags, 'list'], {});
        expect(r.code, `${label} ${flags.join(' ')}: ${describeRun(r)}`).toBe(12);
        expect(r.stdout + r.stderr, label).not.toContain(wrongSecret);
        expect(errorLines(r)).toHaveLength(1);
        expect(errorLines(r)[0]).toMatch(/access denied|check the access key/);
        if (flags.includes('--json')) expect(jsonError(r)).toMatchObject({ code: 'auth', exitCode: 12 });
      }
      // A backup with bad credentials fails the same way, before reading anything.
      const b = await fails(s, ['backup', '--path', good.dir]);
      expect(b.code, describeRun(b)).toBe(12);
      expect(b.stdout + b.stderr).not.toContain(wrongSecret);
    }
  });

  it('unreachable endpoint → 15 within a bounded time', async () => {
    const s = s3Sandbox({ ini: ini({ endpoint: 'http://127.0.0.1:1', maxAttempts: 2 }) });
    for (const args of [['list'], ['--json', 'list'], ['init'], ['backup', '--path', s.dir]]) {
      const r = await fails(s, args);
      expect(r.code, describeRun(r)).toBe(15);
      expect(r.ms).toBeLessThan(30_000);
      expect(errorLines(r)).toHaveLength(1);
      expect(errorLines(r)[0]).toMatch(/127\.0\.0\.1:1 unreachable/);
      if (args[0] === '--json') expect(jsonError(r)).toMatchObject({ code: 'unreachable', exitCode: 15 });
    }
  });

  it('a prefix without a repository, or a bucket that does not exist → 10', async () => {
    const s = s3Sandbox({ prefix: `cli-${run}-nothing-here` });
    let r = await fails(s, ['list']);
    expect(r.code, describeRun(r)).toBe(10);
    expect(errorLines(r)[0]).toMatch(/no Permafrost repository at s3:\/\//);
    const nb = s3Sandbox({ bucket: `no-such-bucket-${run}` });
    r = await fails(nb, ['--json', 'list']);
    expect(r.code, describeRun(r)).toBe(10);
    expect(jsonError(r).message).toMatch(/bucket no-such-bucket-.* does not exist/);
  });

  it("the lab's real secret key never appeared in any output", () => {
    expect(outputs.length).toBeGreaterThan(10);
    for (const r of outputs) {
      expect(r.stdout + r.stderr).not.toContain(env!.s3.secretAccessKey);
      expect(r.stdout + r.stderr).not.toContain(wrongSecret);
    }
  });
});
