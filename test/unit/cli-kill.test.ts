/**
 * Crashes and signals during a backup, through the real CLI process:
 *
 *   - kill -9 at several moments (starting up, walking, after the first pack, while committing,
 *     between the index and the manifest): the repository checks clean, the catalog never shows
 *     the killed backup complete unless its manifest exists, `permafrost cleanup` marks it failed,
 *     and the next backup succeeds and restores the source exactly.
 *   - SIGINT / SIGTERM: exit 130, one message, no manifest, the lock released, the catalog row
 *     failed with reason "interrupted" — also when the signal comes while committing.
 *
 * The dataset (~230 MB: random and text files) is big enough for a backup to take seconds.
 * PERMAFROST_TEST_KILL_MB changes the size of its random part.
 */
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  type CliProcess,
  type CliResult,
  Sandbox,
  describeRun,
  diffTrees,
  errorLines,
  jsonError,
  jsonOf,
  prepareCli,
  repoFiles,
  snapshotTree,
} from '../helpers/cli.js';

const RANDOM_MB = Number(process.env.PERMAFROST_TEST_KILL_MB ?? 192);
/** Random data added before each kill, so that every killed backup has packs to write. */
const FRESH_MB = 48;
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

const data = new Sandbox();
const src = data.path('src');
/** The repository of the current describe (each starts from an empty one: nothing deduplicates away). */
let sb: Sandbox;
const sandboxes: Sandbox[] = [data];
async function freshRepository(): Promise<void> {
  sb = new Sandbox();
  sandboxes.push(sb);
  await sb.ok(['init']);
}

interface Row {
  id: string;
  name: string;
  status: string;
  reason: string | null;
}

// A put's temporary file (a kill while the manifest was being written) is not a manifest: storage never lists it.
const manifests = () => new Set(repoFiles(sb.repo, 'snapshots/').filter((f) => !f.includes('.tmp-')).map((f) => f.slice('snapshots/'.length)));
const listRows = async (): Promise<Row[]> => jsonOf<{ backups: Row[] }>(await sb.ok(['list', '--json'])).backups;
const backupIdOf = (stderr: string): string | undefined => /backup ([0-9a-f]{16}) of big/.exec(stderr)?.[1];

/** Resolve when a new object appears under `prefix` of the repository (polling), or the process ends. */
async function newObject(p: CliProcess, prefix: string, ended: () => boolean): Promise<void> {
  const before = new Set(repoFiles(sb.repo, prefix));
  for (;;) {
    if (repoFiles(sb.repo, prefix).some((f) => !before.has(f) && !f.includes('.tmp-'))) return;
    if (ended()) throw new Error(`the backup ended before a new ${prefix} object appeared:\n${p.stderr().slice(-2000)}`);
    await sleep(10);
  }
}

beforeAll(async () => {
  await prepareCli();
  mkdirSync(join(src, 'text/deeper'), { recursive: true });
  const per = 48;
  for (let i = 0; i * per < RANDOM_MB; i++) writeFileSync(join(src, `random-${i}.bin`), randomBytes(Math.min(per, RANDOM_MB - i * per) << 20));
  for (let i = 0; i < 1500; i++) {
    const line = `${i}: the quick brown fox jumps over the lazy dog ${i * 7919}\n`;
    writeFileSync(join(src, i % 3 ? 'text' : 'text/deeper', `t${i}.txt`), line.repeat(Math.ceil(25_000 / line.length)));
  }
}, 300_000);

afterAll(() => sandboxes.forEach((s) => s.remove()));

describe('kill -9 during a backup', () => {
  beforeAll(freshRepository);
  const killed: { at: string; id?: string; committed: boolean }[] = [];

  async function killAt(at: string, when: (p: CliProcess, ended: () => boolean) => Promise<void>, readData = false): Promise<void> {
    // New data for every run: a backup that committed earlier (a fast machine finishes one within
    // the first second) must not turn the next one into a no-change backup that writes no pack or index.
    writeFileSync(join(src, `fresh-${killed.length}.bin`), randomBytes(FRESH_MB << 20));
    const before = manifests();
    const p = sb.start(['-v', 'backup', '--path', src, '--name', 'big']);
    let done = false;
    void p.result.then(() => (done = true));
    let r: CliResult;
    try {
      await when(p, () => done);
      p.child.kill('SIGKILL');
    } finally {
      r = await p.result;
    }
    const id = backupIdOf(r.stderr);
    const newManifests = [...manifests()].filter((m) => !before.has(m));
    // Killed, or (for the last moments) finished just before the kill: then it is a whole backup.
    if (r.signal !== 'SIGKILL') {
      expect(r.code, describeRun(r)).toBe(0);
      expect(newManifests).toEqual([id]);
    }
    const committed = newManifests.length > 0;
    expect(newManifests).toEqual(committed ? [id] : []);
    killed.push({ at, id, committed });
    console.info(`[cli-kill] ${at}: ${r.signal ?? `exit ${r.code}`} after ${r.ms} ms, backup ${id ?? '(not started)'}, ${committed ? 'committed before the kill' : 'nothing committed'}`);

    // The repository checks clean (packs nobody indexed are only reported).
    const c = await sb.run(['check', ...(readData ? ['--read-data'] : []), '--json']);
    expect(c.code, `after a kill ${at}: ${describeRun(c)}`).toBe(0);
    expect(jsonOf(c)).toMatchObject({ ok: true, errors: [] });

    // The catalog: complete only with a manifest.
    const rows = await listRows();
    for (const row of rows) if (row.status === 'complete') expect(manifests().has(row.id), `${row.id} complete without a manifest`).toBe(true);
    if (id) {
      const row = rows.find((x) => x.id === id);
      expect(row, `catalog row of ${id}`).toBeDefined();
      expect(row!.status).toBe(committed ? 'complete' : 'running');
    }
  }

  it('right after start (0.3 s)', async () => {
    await killAt('after 0.3 s', () => sleep(300));
  });

  it('1 s into the walk', async () => {
    await killAt('1 s into the walk', async (p) => {
      await p.waitFor(/backup [0-9a-f]{16} of big: full/);
      await sleep(1000);
    });
  });

  it('just after the first pack was written', async () => {
    await killAt('after the first pack', (p, ended) => newObject(p, 'data/', ended), true);
  });

  it('while committing (last pack and index)', async () => {
    await killAt('while committing', (p) => p.waitFor(/committing: last pack/, { timeoutMs: 120_000 }));
  });

  it('between the index and the manifest', async () => {
    await killAt('after the index', (p, ended) => newObject(p, 'index/', ended), true);
  });

  it('cleanup marks the killed backups failed; the next backup succeeds and restores exactly', async () => {
    const pending = killed.filter((k) => k.id && !k.committed).map((k) => k.id!);
    const r = await sb.ok(['cleanup', '--json']);
    expect(jsonOf(r).interruptedBackups.sort()).toEqual([...pending].sort());
    const rows = await listRows();
    for (const id of pending) expect(rows.find((x) => x.id === id)).toMatchObject({ status: 'failed', reason: expect.stringMatching(/interrupted/) });
    expect(rows.filter((x) => x.status === 'running')).toEqual([]);

    const b = jsonOf(await sb.ok(['backup', '--path', src, '--name', 'big', '--json']));
    expect(b.stats.errors).toBe(0);
    await sb.ok(['restore', b.id, '--target-dir', sb.path('restored')]);
    expect(diffTrees(snapshotTree(src), snapshotTree(sb.path('restored')))).toEqual([]);
    const c = await sb.run(['check', '--read-data', '--json']);
    expect(c.code, describeRun(c)).toBe(0);
    expect(jsonOf(c).ok).toBe(true);
  });
});

describe('SIGINT and SIGTERM during a backup', () => {
  beforeAll(freshRepository);
  async function interrupt(sig: 'SIGINT' | 'SIGTERM', when: 'working' | 'committing', json: boolean): Promise<void> {
    const before = manifests();
    const p = sb.start(['-v', 'backup', '--path', src, '--name', `sig-${sig}-${when}`, '--full', ...(json ? ['--json'] : [])]);
    let done = false;
    void p.result.then(() => (done = true));
    if (when === 'working') await newObject(p, 'data/', () => done);
    else await p.waitFor(/committing: last pack/, { timeoutMs: 120_000 });
    p.child.kill(sig);
    const r = await p.result;
    const id = /backup ([0-9a-f]{16}) of sig-/.exec(r.stderr)?.[1];
    expect(id).toBeDefined();
    if (r.code === 0 && when === 'committing') {
      // The signal came after the manifest: the backup is whole, and says so.
      expect([...manifests()].filter((m) => !before.has(m))).toEqual([id]);
      return;
    }
    expect(r.code, describeRun(r)).toBe(130);
    expect(r.stderr).toContain(`${sig} received: stopping cleanly`);
    expect(errorLines(r), describeRun(r)).toHaveLength(1);
    expect(errorLines(r)[0]).toMatch(/interrupted/);
    if (json) expect(jsonError(r)).toMatchObject({ code: 'interrupted', exitCode: 130 });
    else expect(r.stdout).toBe('');
    // Nothing half-committed, the lock released, the catalog says why.
    expect([...manifests()].filter((m) => !before.has(m))).toEqual([]);
    const locks = repoFiles(sb.repo, 'locks/').map((f) => JSON.parse(readFileSync(join(sb.repo, f), 'utf8')) as { pid: number });
    expect(locks.filter((l) => l.pid === p.child.pid)).toEqual([]);
    const row = (await listRows()).find((x) => x.id === id);
    expect(row).toMatchObject({ status: 'failed', reason: 'interrupted' });
    const c = await sb.run(['check', '--json']);
    expect(c.code, describeRun(c)).toBe(0);
  }

  it('SIGINT while reading and writing packs → 130 (--json)', async () => {
    await interrupt('SIGINT', 'working', true);
  });

  it('SIGTERM while reading and writing packs → 130', async () => {
    await interrupt('SIGTERM', 'working', false);
  });

  it('SIGTERM while committing → 130, no manifest', async () => {
    await interrupt('SIGTERM', 'committing', false);
  });

  it('SIGINT during check --read-data → 130, never "no errors found"', async () => {
    const before = new Set(repoFiles(sb.repo, 'locks/'));
    const p = sb.start(['check', '--read-data']);
    let done = false;
    void p.result.then(() => (done = true));
    // The check holds its (shared) lock once it runs: then the signal handlers are in place.
    while (!repoFiles(sb.repo, 'locks/').some((f) => !before.has(f)) && !done) await sleep(10);
    p.child.kill('SIGINT');
    const r = await p.result;
    expect(r.code, describeRun(r)).toBe(130);
    expect(r.stdout).not.toMatch(/no errors found/);
    expect(errorLines(r)).toEqual(['error: interrupted']);
    expect(repoFiles(sb.repo, 'locks/').filter((f) => !before.has(f))).toEqual([]);
  });

  it('the repository takes the next backup', async () => {
    const b = jsonOf(await sb.ok(['backup', '--path', src, '--name', 'sig-SIGINT-working', '--json']));
    expect(b.stats.errors).toBe(0);
    expect(existsSync(join(sb.repo, 'snapshots', b.id))).toBe(true);
  });
});
