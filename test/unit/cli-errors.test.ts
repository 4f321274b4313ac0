/**
 * What an operator (or a script) gets from the CLI under bad input and faults: one clear error
 * line on stderr, the documented exit code, with --json exactly one JSON document on stdout
 * (`{"error": {code, message, exitCode}}`), and nothing already stored lost or damaged.
 *
 * Exit codes (README): 2 usage/config, 10 no repository, 11 locked, 12 wrong key, 13 not found,
 * 14 integrity, 16 no space.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { cpSync, existsSync, mkdirSync, readFileSync, readdirSync, truncateSync, writeFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { encodeStructured, newMasterKeyHex } from '../../src/repository/crypto.js';
import { Repository } from '../../src/repository/repository.js';
import { emptyStats } from '../../src/repository/types.js';
import { LocalStorage } from '../../src/storage/local.js';
import {
  BIN,
  type CliResult,
  Sandbox,
  cleanEnv,
  describeRun,
  diffTrees,
  errorLines,
  isRoot,
  jsonError,
  jsonOf,
  makeTree,
  prepareCli,
  repoFiles,
  snapshotTree,
} from '../helpers/cli.js';

const sandboxes: Sandbox[] = [];
function sandbox(o: ConstructorParameters<typeof Sandbox>[0] = {}): Sandbox {
  const s = new Sandbox(o);
  sandboxes.push(s);
  return s;
}

/** A repository with one backup (plain), one with one backup (encrypted), their source trees. */
let base: Sandbox;
let baseId = '';
let enc: Sandbox;
let encId = '';

/** A sandbox whose repository is a copy of the base repository (own catalog). */
function copyOfBase(): Sandbox {
  const s = sandbox();
  cpSync(base.repo, s.repo, { recursive: true });
  return s;
}

beforeAll(async () => {
  await prepareCli();
  base = sandbox();
  makeTree(base.path('src'), { seed: 'errors', randomBytes: 600_000 });
  await base.ok(['init']);
  baseId = jsonOf(await base.ok(['backup', '--path', base.path('src'), '--name', 'src', '--json'])).id;
  enc = sandbox({ encrypted: true });
  makeTree(enc.path('src'), { seed: 'errors-enc', randomBytes: 100_000 });
  await enc.ok(['init']);
  encId = jsonOf(await enc.ok(['backup', '--path', enc.path('src'), '--name', 'src', '--json'])).id;
});

afterAll(() => {
  for (const s of sandboxes) s.remove();
});

/** One clear error: a single "error:" line on stderr, matching; nothing on stdout. */
function expectOneError(r: CliResult, code: number, match: RegExp): void {
  expect(r.code, describeRun(r)).toBe(code);
  const lines = errorLines(r);
  expect(lines, describeRun(r)).toHaveLength(1);
  expect(lines[0]).toMatch(match);
  expect(r.stdout, describeRun(r)).toBe('');
}

/** The same with --json: exactly one JSON document on stdout, the error with its code. */
function expectJsonError(r: CliResult, code: number, errCode: string, match: RegExp): void {
  expect(r.code, describeRun(r)).toBe(code);
  const e = jsonError(r);
  expect(e.code).toBe(errCode);
  expect(e.exitCode).toBe(code);
  expect(e.message).toMatch(match);
  expect(e.message).not.toMatch(/\n/);
}

interface Case {
  name: string;
  /** Arguments; a function builds them (and whatever they need) in a fresh sandbox. */
  args: (s: Sandbox) => string[];
  /** Pass the sandbox's --repo (default true) and --key-file. */
  repo?: 'none' | 'base' | 'enc' | 'missing' | 'empty-dir';
  code: number;
  errCode: string;
  match: RegExp;
}

const ini = (s: Sandbox, name: string, text: string): string => {
  const p = s.path(name);
  writeFileSync(p, text);
  return p;
};

const cases: Case[] = [
  { name: 'unknown global option', args: () => ['--bogus', 'list'], code: 2, errCode: 'usage', match: /unknown option '--bogus'/ },
  { name: 'unknown option of a command', args: () => ['backup', '--path', '.', '--frobnicate'], code: 2, errCode: 'usage', match: /unknown option '--frobnicate'/ },
  { name: 'misspelt option gets a suggestion', args: () => ['list', '--jsn'], code: 2, errCode: 'usage', match: /unknown option '--jsn' \(did you mean --json\?\)/ },
  { name: 'unknown command', args: () => ['frob'], code: 2, errCode: 'usage', match: /unknown command 'frob'/ },
  { name: 'missing argument', args: () => ['restore'], code: 2, errCode: 'usage', match: /missing required argument 'backup-id'/ },
  { name: 'option without its value', args: () => ['backup', '--path'], code: 2, errCode: 'usage', match: /--path <dir>' argument missing/ },
  {
    name: 'malformed agent.ini names file:line',
    args: (s) => ['--config', ini(s, 'bad.ini', '[agent]\nlog_level = info\nthis is not ini\n'), 'list'],
    code: 2,
    errCode: 'config',
    match: /bad\.ini:3: expected "key = /,
  },
  {
    name: 'unknown key in agent.ini names file:line',
    args: (s) => ['--config', ini(s, 'unknown-key.ini', '[agent]\n\nfrobnicate = 1\n'), 'list'],
    code: 2,
    errCode: 'config',
    match: /unknown-key\.ini:3: unknown key "frobnicate" in \[agent\]/,
  },
  { name: 'unknown section in agent.ini', args: (s) => ['--config', ini(s, 'sec.ini', '[nope]\na = b\n'), 'list'], code: 2, errCode: 'config', match: /sec\.ini: unknown section \[nope\]/ },
  {
    name: 'bad value in agent.ini names file:line',
    args: (s) => ['--config', ini(s, 'val.ini', '[s3]\nmax_attempts = many\n'), 'list'],
    code: 2,
    errCode: 'config',
    match: /val\.ini:2: s3\.max_attempts must be an integer/,
  },
  { name: 'agent.ini that does not exist', args: (s) => ['--config', s.path('nope.ini'), 'list'], code: 2, errCode: 'config', match: /cannot read config file .*nope\.ini/ },
  { name: 'no --repo', repo: 'none', args: () => ['list'], code: 2, errCode: 'usage', match: /no repository given/ },
  { name: 'unsupported repository URL', repo: 'none', args: () => ['--repo', 'ftp://host/x', 'list'], code: 2, errCode: 'usage', match: /unsupported scheme ftp/ },
  { name: 'repository directory does not exist', repo: 'missing', args: () => ['list'], code: 10, errCode: 'no_repository', match: /no Permafrost repository at .*missing/ },
  { name: 'empty directory is not a repository', repo: 'empty-dir', args: () => ['list'], code: 10, errCode: 'no_repository', match: /no Permafrost repository/ },
  {
    name: 'a directory with a foreign config is not a repository',
    repo: 'none',
    args: (s) => {
      mkdirSync(s.path('foreign'));
      writeFileSync(s.path('foreign/config'), 'restic or something else\n');
      return ['--repo', s.path('foreign'), 'list'];
    },
    code: 10,
    errCode: 'no_repository',
    match: /is not a Permafrost repository/,
  },
  { name: 'backup into a missing repository', repo: 'missing', args: (s) => ['backup', '--path', s.dir], code: 10, errCode: 'no_repository', match: /no Permafrost repository/ },
  { name: 'encrypted repository without --key-file', repo: 'enc', args: () => ['list'], code: 12, errCode: 'wrong_key', match: /is encrypted: give --key-file/ },
  {
    name: 'encrypted repository with a wrong key',
    repo: 'enc',
    args: (s) => ['--key-file', ini(s, 'wrong.key', newMasterKeyHex() + '\n'), 'list'],
    code: 12,
    errCode: 'wrong_key',
    match: /wrong key/,
  },
  { name: 'key file that holds no key', repo: 'enc', args: (s) => ['--key-file', ini(s, 'junk.key', 'not a key\n'), 'list'], code: 12, errCode: 'wrong_key', match: /does not hold a 256-bit hex key/ },
  { name: 'backup of a path that does not exist', repo: 'base', args: (s) => ['backup', '--path', s.path('no/such/dir')], code: 13, errCode: 'not_found', match: /path .*no\/such\/dir does not exist/ },
  { name: 'backup of a file, not a directory', repo: 'base', args: (s) => ['backup', '--path', s.config], code: 2, errCode: 'usage', match: /is not a directory/ },
  { name: 'backup with two sources', repo: 'base', args: (s) => ['backup', '--path', s.dir, '--volume', 'v'], code: 2, errCode: 'usage', match: /exactly one of --path/ },
  { name: 'restore of an unknown backup id', repo: 'base', args: (s) => ['restore', '0123456789abcdef', '--target-dir', s.path('out')], code: 13, errCode: 'not_found', match: /backup 0123456789abcdef not found/ },
  { name: 'restore of an unknown prefix', repo: 'base', args: (s) => ['restore', 'ffff', '--target-dir', s.path('out')], code: 13, errCode: 'not_found', match: /backup ffff not found/ },
  { name: 'restore of a malformed id', repo: 'base', args: (s) => ['restore', '../../etc', '--target-dir', s.path('out')], code: 13, errCode: 'not_found', match: /not found \(IDs are 16 hex characters/ },
  { name: 'restore to two targets', repo: 'base', args: (s) => ['restore', 'abcd', '--target-dir', s.path('out'), '--tar', '-'], code: 2, errCode: 'usage', match: /exactly one of --target-dir/ },
  { name: 'restore into a file (not a directory)', repo: 'base', args: (s) => ['restore', 'abcd', '--target-dir', s.config], code: 2, errCode: 'usage', match: /--target-dir .*agent\.ini exists and is not a directory/ },
  { name: 'check with a bad subset', repo: 'base', args: () => ['check', '--read-data-subset', '0/5'], code: 2, errCode: 'usage', match: /bad subset "0\/5"/ },
];

describe('bad input: one message, its exit code', () => {
  async function run(c: Case, json: boolean): Promise<CliResult> {
    const s = c.repo === 'base' ? copyOfBase() : sandbox();
    if (c.repo === 'enc') cpSync(enc.repo, s.repo, { recursive: true });
    if (c.repo === 'empty-dir') mkdirSync(s.repo);
    const repoArgs = c.repo === 'none' ? [] : ['--repo', c.repo === 'missing' ? s.path('missing') : s.repo];
    return s.run([...repoArgs, ...(json ? ['--json'] : []), ...c.args(s)], { repo: false });
  }

  it.concurrent.each(cases)('$name → $code', async (c) => {
    const [human, json] = await Promise.all([run(c, false), run(c, true)]);
    expectOneError(human, c.code, c.match);
    expectJsonError(json, c.code, c.errCode, c.match);
  });

  it('error messages are not mangled by the secret redaction', async () => {
    // Nothing secret in these: a config syntax hint, a key file path ending in "key".
    const s = sandbox();
    const c = await s.run(['--config', ini(s, 'bad.ini', 'garbage\n'), 'list']);
    expect(errorLines(c)[0]).toContain('expected "key = value" or "[section]"');
    const k = await s.run(['--repo', enc.repo, '--key-file', s.path('repo.key'), 'list'], { repo: false });
    expect(k.code).toBe(2);
    expect(errorLines(k)[0]).not.toContain('***');
  });

  it('no command: the help on stderr, exit 2', async () => {
    const s = sandbox();
    const r = await s.run([]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/Usage: permafrost/);
    expect(r.stdout).toBe('');
    // Asking for help or the version is not an error, and goes to stdout.
    const h = await s.run(['backup', '--help']);
    expect(h.code).toBe(0);
    expect(h.stdout).toMatch(/Usage: permafrost backup/);
    const v = await s.run(['--version']);
    expect(v.code).toBe(0);
    expect(v.stdout.trim()).toMatch(/^\d+\.\d+\.\d+$/);
  });

  it('bin/permafrost.js (the installed entry point) maps errors to exit codes too', () => {
    const r = spawnSync(process.execPath, [BIN, '--repo', base.path('nowhere'), '--json', 'list'], { env: cleanEnv({ PERMAFROST_FROM_SOURCE: '1' }), encoding: 'utf8' });
    expect(r.status, r.stderr).toBe(10);
    expect(JSON.parse(r.stdout).error.code).toBe('no_repository');
  });

  it('S3 credentials written into the URL are refused without being echoed', async () => {
    const s = sandbox();
    for (const json of [false, true]) {
      const r = await s.run(['--repo', 's3://AKIAEXAMPLE:wJalrXUtnFEMIK7MDENGbPxRfiCYzzSECRET@bucket/prefix', ...(json ? ['--json'] : []), '-v', 'list'], { repo: false });
      expect(r.code, describeRun(r)).toBe(2);
      expect(r.stdout + r.stderr).not.toContain('wJalrXUtnFEMIK7MDENGbPxRfiCYzzSECRET');
      expect(r.stderr).toMatch(/must not contain credentials/);
    }
  });
});

describe.concurrent('locks', () => {
  function plantLock(repo: string, o: { pid: number; exclusive: boolean; purpose: string; host?: string }): string {
    const now = new Date().toISOString();
    const id = randomBytes(16).toString('hex');
    mkdirSync(join(repo, 'locks'), { recursive: true });
    writeFileSync(join(repo, 'locks', id), JSON.stringify({ host: o.host ?? hostname(), pid: o.pid, exclusive: o.exclusive, createdAt: now, refreshedAt: now, purpose: o.purpose }));
    return id;
  }

  it('an exclusive lock held by a live process blocks a backup (11); the backup leaves nothing behind', async () => {
    const s = copyOfBase();
    const lock = plantLock(s.repo, { pid: process.pid, exclusive: true, purpose: 'prune' });
    const before = repoFiles(s.repo);
    const r = await s.run(['backup', '--path', base.path('src'), '--name', 'src']);
    expectOneError(r, 11, new RegExp(`repository is locked exclusively by prune \\(pid ${process.pid} on `));
    const rj = await s.run(['backup', '--path', base.path('src'), '--name', 'src', '--json']);
    expectJsonError(rj, 11, 'locked', /locked exclusively by prune/);
    // The other process's lock is untouched, ours is gone, nothing was written.
    expect(repoFiles(s.repo)).toEqual(before);
    expect(readdirSync(join(s.repo, 'locks'))).toEqual([lock]);
    // check takes a shared lock: blocked as well. list takes none: it works.
    expect((await s.run(['check'])).code).toBe(11);
    const l = jsonOf(await s.ok(['list', '--json']));
    expect(l.backups.map((b: { id: string; status: string }) => [b.id, b.status])).toEqual([[baseId, 'complete']]);
  });

  it('a shared lock (another backup) does not block a backup', async () => {
    const s = copyOfBase();
    const lock = plantLock(s.repo, { pid: process.pid, exclusive: false, purpose: 'backup' });
    await s.ok(['backup', '--path', base.path('src'), '--name', 'src']);
    expect(readdirSync(join(s.repo, 'locks'))).toEqual([lock]);
  });

  it('an exclusive lock of a dead process on this host is removed as stale', async () => {
    const s = copyOfBase();
    const dead = spawnSync('true').pid!;
    plantLock(s.repo, { pid: dead, exclusive: true, purpose: 'prune' });
    const r = await s.ok(['backup', '--path', base.path('src'), '--name', 'src']);
    expect(r.stderr).toMatch(/removing stale lock/);
    expect(readdirSync(join(s.repo, 'locks'))).toEqual([]);
  });

  it('an exclusive lock of another host is honoured (its process cannot be probed)', async () => {
    const s = copyOfBase();
    plantLock(s.repo, { pid: 1, exclusive: true, purpose: 'prune', host: 'some-other-node' });
    const r = await s.run(['backup', '--path', base.path('src'), '--name', 'src']);
    expectOneError(r, 11, /locked exclusively by prune \(pid 1 on some-other-node/);
  });
});

describe.concurrent('damaged repositories', () => {
  const packs = (repo: string) => repoFiles(repo, 'data/');

  /** Flip a byte in the middle of the largest data blob (a chunk of sub/rand.bin): trees stay intact. */
  async function corruptBiggestDataBlob(dir: string): Promise<{ packId: string; blobId: string }> {
    const repo = await Repository.open(new LocalStorage(dir));
    await repo.loadIndex();
    const [blobId, loc] = [...repo.index.entries()].filter(([, l]) => l.type === 'data').sort((a, b) => b[1].length - a[1].length)[0]!;
    await repo.close();
    const file = join(dir, 'data', loc.pack.slice(0, 2), loc.pack);
    const buf = readFileSync(file);
    buf[loc.offset + (loc.length >> 1)] ^= 0xff;
    writeFileSync(file, buf);
    return { packId: loc.pack, blobId };
  }

  it('a corrupted pack: check passes without --read-data, check --read-data exits 14 naming the pack, restore exits 14', async () => {
    const s = copyOfBase();
    const { packId } = await corruptBiggestDataBlob(s.repo);

    await s.ok(['check']);
    const r = await s.run(['check', '--read-data']);
    expect(r.code, describeRun(r)).toBe(14);
    expect(r.stdout).toContain(`pack ${packId}`);
    expect(errorLines(r).join('\n')).toMatch(/check found \d+ errors/);
    const rj = await s.run(['check', '--read-data', '--json']);
    expect(rj.code).toBe(14);
    const doc = jsonOf(rj);
    expect(doc.ok).toBe(false);
    expect(doc.errors.join('\n')).toContain(`pack ${packId}`);
    expect(doc.error).toMatchObject({ code: 'integrity', exitCode: 14 });

    // A restore cannot hide it: the entries it could not restore are reported and it exits 14.
    const out = s.path('out');
    const rr = await s.run(['restore', baseId, '--target-dir', out]);
    expect(rr.code, describeRun(rr)).toBe(14);
    expect(errorLines(rr).join('\n')).toMatch(/could not be restored/);
    expect(rr.stderr).toMatch(/does not match its ID|authentication failed|cannot decompress/);
    // Everything else came back.
    const d = diffTrees(snapshotTree(base.path('src')), snapshotTree(out));
    expect(d.length).toBeGreaterThan(0);
    expect(d.every((x) => x.startsWith('sub/rand.bin') || x.startsWith('sub:') || x.startsWith('.:'))).toBe(true);
  });

  it('a corrupted pack: restore --tar stops with one integrity error (14), no crash', async () => {
    const s = copyOfBase();
    await corruptBiggestDataBlob(s.repo);
    for (const target of [s.path('out.tar'), '-']) {
      const r = await s.run(['restore', baseId, '--tar', target]);
      expect(r.code, describeRun(r)).toBe(14);
      expect(errorLines(r), describeRun(r)).toHaveLength(1);
      expect(r.stderr).not.toMatch(/\n\s+at /); // no stack trace
    }
  });

  it('a pack that went missing: check exits 14', async () => {
    const s = copyOfBase();
    const pack = packs(s.repo)[0]!;
    execFileSync('rm', [join(s.repo, pack)]);
    const r = await s.run(['check', '--json']);
    expect(r.code).toBe(14);
    expect(jsonOf(r).errors.join('\n')).toMatch(/named by the index but missing/);
  });

  it('a truncated index file: check exits 14 naming it; the index can be rebuilt from the packs', async () => {
    const s = copyOfBase();
    const idx = repoFiles(s.repo, 'index/')[0]!;
    truncateSync(join(s.repo, idx), 10);
    const r = await s.run(['check']);
    expect(r.code, describeRun(r)).toBe(14);
    expect(r.stdout).toContain(`index ${idx.split('/').pop()}`);
    const rj = await s.run(['check', '--json']);
    expect(rj.code).toBe(14);
    expect(jsonOf(rj).ok).toBe(false);
    // Commands that need the index say how to get it back ...
    const rr = await s.run(['restore', baseId, '--target-dir', s.path('out')]);
    expectOneError(rr, 14, /permafrost repair index/);
    // ... and repair rebuilds it from the packs alone: check passes, the backup restores.
    const fix = await s.run(['repair', 'index']);
    expect(fix.code, describeRun(fix)).toBe(0);
    const again = await s.run(['check', '--read-data']);
    expect(again.code, describeRun(again)).toBe(0);
    await s.ok(['restore', baseId, '--target-dir', s.path('out2')]);
  });

  it('a corrupted manifest: list warns, restore exits 14, catalog rebuild exits 3; other backups unaffected', async () => {
    const s = copyOfBase();
    // A second, healthy backup in the same repository.
    const good = jsonOf(await s.ok(['backup', '--path', base.path('src'), '--name', 'other', '--json'])).id;
    const m = join(s.repo, 'snapshots', baseId);
    const buf = readFileSync(m);
    buf[buf.length >> 1] ^= 0xff;
    writeFileSync(m, buf);

    const fresh = sandbox({ repo: s.repo });
    const l = await fresh.run(['list', '--json']);
    expect(l.code, describeRun(l)).toBe(0);
    expect(l.stderr).toMatch(new RegExp(`warn: manifest ${baseId} unreadable`));
    expect(jsonOf(l).backups.map((b: { id: string }) => b.id)).toEqual([good]);

    const r = await fresh.run(['restore', baseId, '--target-dir', fresh.path('out')]);
    expectOneError(r, 14, new RegExp(`manifest ${baseId}`));
    expect(existsSync(fresh.path('out'))).toBe(false);
    expectJsonError(await fresh.run(['restore', baseId, '--target-dir', fresh.path('out'), '--json']), 14, 'integrity', new RegExp(`manifest ${baseId}`));

    const rb = await fresh.run(['catalog', 'rebuild', '--json']);
    expect(rb.code).toBe(3);
    expect(jsonOf(rb)).toMatchObject({ backups: 1, unreadable: [baseId] });
    const c = await fresh.run(['check']);
    expect(c.code).toBe(14);
    expect(c.stdout).toContain(`manifest ${baseId}`);
    // The healthy backup restores.
    await fresh.ok(['restore', good, '--target-dir', fresh.path('good')]);
    expect(diffTrees(snapshotTree(base.path('src')), snapshotTree(fresh.path('good')))).toEqual([]);
  });

  it('a hostile tree entry ("../escape") is refused with 14 and nothing is written outside the target', async () => {
    const s = copyOfBase();
    const repo = await Repository.open(new LocalStorage(s.repo));
    await repo.loadIndex();
    const data = await repo.saveBlob('data', Buffer.from('pwned\n'));
    const ts = '1600000000000000000';
    const node = (name: string) => ({ name, type: 'file', mode: 0o644, uid: 0, gid: 0, size: 6, mtimeNs: ts, ctimeNs: ts, atimeNs: ts, inode: '1', content: [data.id] });
    const root = await repo.saveBlob('tree', Buffer.from(JSON.stringify({ nodes: [node('../escape'), node('ok')] })));
    await repo.flush();
    const id = Repository.newBackupId();
    const now = new Date().toISOString();
    await repo.saveManifest({ version: 1, id, name: 'hostile', host: 'h', engine: 'file', root: root.id, source: { kind: 'path', path: '/x' }, dataTimestamp: now, startedAt: now, finishedAt: now, stats: emptyStats(), tags: {} });
    await repo.close();

    const parent = s.path('restore-parent');
    mkdirSync(parent);
    const r = await s.run(['restore', id, '--target-dir', join(parent, 'target')]);
    expectOneError(r, 14, /malformed tree/);
    expect(readdirSync(parent).filter((n) => n !== 'target')).toEqual([]);
    expect(existsSync(s.path('escape'))).toBe(false);
    const rt = await s.run(['restore', id, '--tar', s.path('h.tar'), '--json']);
    expectJsonError(rt, 14, 'integrity', /malformed tree/);
    // check reports it too.
    expect((await s.run(['check'])).code).toBe(14);
  });

  it('a hostile manifest (another backup\'s ID, a bad root) is refused with 14', async () => {
    const s = copyOfBase();
    const orig = jsonOf(await s.ok(['list', '--json'])).backups[0];
    const now = new Date().toISOString();
    const fake = '00000000deadbeef';
    // A copy of a manifest under another name: its id does not match.
    cpSync(join(s.repo, 'snapshots', baseId), join(s.repo, 'snapshots', fake));
    let r = await s.run(['restore', fake, '--target-dir', s.path('o1')]);
    expectOneError(r, 14, /id does not match its name/);
    // A well-formed container with a root that is not a blob ID.
    const bad = '00000000deadbeee';
    writeFileSync(
      join(s.repo, 'snapshots', bad),
      encodeStructured(undefined, { version: 1, id: bad, name: 'x', host: 'h', engine: 'file', root: '../../etc/passwd', source: { kind: 'path', path: '/' }, dataTimestamp: now, startedAt: now, finishedAt: now, stats: {}, tags: {} }),
    );
    r = await s.run(['restore', bad, '--target-dir', s.path('o2')]);
    expectOneError(r, 14, /bad root/);
    expect(orig.id).toBe(baseId);
  });
});

describe.concurrent('output that cannot be written', () => {
  it.each([
    ['a missing directory', (s: Sandbox) => s.path('no/such/dir/x.tar'), /its directory does not exist/],
    ['a directory', (s: Sandbox) => s.dir, /is a directory/],
  ] as const)('restore --tar into %s → 2, nothing read', async (_l, target, match) => {
    const s = copyOfBase();
    expectOneError(await s.run(['restore', baseId, '--tar', target(s)]), 2, match);
    expectJsonError(await s.run(['restore', baseId, '--tar', target(s), '--json']), 2, 'usage', match);
  });
});

describe.concurrent('the local catalog', () => {
  it('a damaged catalog: one message naming it and the way out (14); catalog rebuild recovers', async () => {
    const s = copyOfBase();
    mkdirSync(s.state, { recursive: true });
    writeFileSync(join(s.state, 'catalog.db'), 'not a database, not a database, not a database, not a database\n'.repeat(20));
    expectOneError(await s.run(['list']), 14, /catalog .*catalog\.db is damaged .*permafrost catalog rebuild/);
    expectJsonError(await s.run(['backup', '--path', base.path('src'), '--json']), 14, 'integrity', /is damaged/);
    const r = await s.run(['catalog', 'rebuild', '--json']);
    expect(r.code, describeRun(r)).toBe(0);
    expect(jsonOf(r)).toMatchObject({ backups: 1, unreadable: [] });
    expect(r.stderr).toMatch(/the catalog was damaged; moved it to .*catalog\.db\.damaged-/);
    expect(readdirSync(s.state).some((f) => f.startsWith('catalog.db.damaged-'))).toBe(true);
    const l = jsonOf(await s.ok(['list', '--json']));
    expect(l.backups.map((b: { id: string }) => b.id)).toEqual([baseId]);
  });

  it('a state directory that cannot be one → 2 naming it', async () => {
    const s = copyOfBase();
    const r = await s.run(['--state-dir', join(s.config, 'state'), 'list'], { repo: true });
    // --state-dir given twice: the last one wins (commander), here the unusable one.
    expectOneError(r, 2, /cannot use the catalog .*agent\.ini\/state\/catalog\.db \(ENOTDIR/);
  });
});

describe('full disk', () => {
  const why = !isRoot ? 'needs root to mount a tmpfs' : spawnSync('mount', ['--version']).status !== 0 ? 'no mount(8)' : undefined;
  if (why) console.warn(`[cli-errors] skipping the full-disk test: ${why}`);

  it.skipIf(why !== undefined)('a backup into a full repository exits 16; the repository still checks clean and the earlier backup restores', async () => {
    const s = sandbox();
    const mnt = s.path('tmpfs');
    mkdirSync(mnt);
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=6m', 'permafrost-test', mnt]);
    try {
      const repo = join(mnt, 'repo');
      const small = s.path('small');
      makeTree(small, { seed: 'disk', randomBytes: 500_000 });
      await s.ok(['--repo', repo, 'init'], { repo: false });
      const first = jsonOf(await s.ok(['--repo', repo, 'backup', '--path', small, '--name', 'small', '--json'], { repo: false })).id;

      const big = s.path('big');
      mkdirSync(big);
      for (let i = 0; i < 4; i++) writeFileSync(join(big, `r${i}`), randomBytes(3 << 20));
      const r = await s.run(['--repo', repo, 'backup', '--path', big, '--name', 'big'], { repo: false });
      expectOneError(r, 16, /no space left/);
      const rj = await s.run(['--repo', repo, 'backup', '--path', big, '--name', 'big', '--json'], { repo: false });
      expectJsonError(rj, 16, 'no_space', /no space left/);

      // Nothing half-done: no manifest for it, no lock, no temporary files; check passes.
      expect(repoFiles(repo, 'snapshots/')).toEqual([`snapshots/${first}`]);
      expect(repoFiles(repo, 'locks/')).toEqual([]);
      expect(repoFiles(repo).filter((f) => f.includes('.tmp-'))).toEqual([]);
      const c = await s.run(['--repo', repo, 'check', '--read-data', '--json'], { repo: false });
      expect(c.code, describeRun(c)).toBe(0);
      expect(jsonOf(c).ok).toBe(true);
      const l = jsonOf(await s.ok(['--repo', repo, 'list', '--json'], { repo: false }));
      expect(l.backups.map((b: { name: string; status: string }) => `${b.name}:${b.status}`)).toEqual(['small:complete', 'big:failed', 'big:failed']);
      expect(l.backups[1].reason).toMatch(/no space left/);
      await s.ok(['--repo', repo, 'restore', first, '--target-dir', s.path('out')], { repo: false });
      expect(diffTrees(snapshotTree(small), snapshotTree(s.path('out')))).toEqual([]);
    } finally {
      execFileSync('umount', ['-l', mnt]);
    }
  });

  /** A backup of 3 MiB restored onto a 1 MiB tmpfs. */
  async function fullTarget(): Promise<{ s: Sandbox; mnt: string; id: string }> {
    const s = copyOfBase();
    const big = s.path('big');
    mkdirSync(big);
    writeFileSync(join(big, 'r'), randomBytes(3 << 20));
    const id = jsonOf(await s.ok(['backup', '--path', big, '--name', 'big', '--json'])).id;
    const mnt = s.path('tmpfs');
    mkdirSync(mnt);
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=1m', 'permafrost-test', mnt]);
    return { s, mnt, id };
  }

  it.skipIf(why !== undefined)('a restore onto a full disk exits 16', async () => {
    const { s, mnt, id } = await fullTarget();
    try {
      expectOneError(await s.run(['restore', id, '--target-dir', join(mnt, 'out')]), 16, /no space left/);
      expectJsonError(await s.run(['restore', id, '--target-dir', join(mnt, 'out2'), '--json']), 16, 'no_space', /no space left/);
    } finally {
      execFileSync('umount', ['-l', mnt]);
    }
  });

  it.skipIf(why !== undefined)('restore --tar onto a full disk exits 16 and removes the incomplete archive', async () => {
    const { s, mnt, id } = await fullTarget();
    try {
      const r = await s.run(['restore', id, '--tar', join(mnt, 'x.tar')]);
      expectOneError(r, 16, /no space left/);
      expect(existsSync(join(mnt, 'x.tar'))).toBe(false);
    } finally {
      execFileSync('umount', ['-l', mnt]);
    }
  });
});
