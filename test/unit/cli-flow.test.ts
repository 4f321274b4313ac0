/**
 * The CLI end to end, as an operator runs it, on a local repository — unencrypted and encrypted:
 * init → backup → change → incremental backup → list --json → restore (--target-dir, --include,
 * --tar - piped into GNU tar) compared with the source (contents, modes, mtimes, symlinks,
 * hardlinks, empty directories) → check --read-data → catalog rebuild after losing the catalog.
 */
import { execFileSync } from 'node:child_process';
import { appendFileSync, existsSync, mkdirSync, readFileSync, rmSync, unlinkSync, utimesSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  Sandbox,
  describeRun,
  diffTrees,
  jsonOf,
  makeTree,
  prepareCli,
  repoFiles,
  snapshotTree,
  type EntrySnap,
} from '../helpers/cli.js';

beforeAll(async () => {
  await prepareCli();
});

interface ListDoc {
  repository: string;
  backups: { id: string; name: string; status: string; parent: string | null; engine: string; reason: string | null; stats: { files: number } | null }[];
}

describe.each([
  ['unencrypted', false],
  ['encrypted', true],
])('CLI flow, %s repository', (_label, encrypted) => {
  const sb = new Sandbox({ encrypted });
  const src = sb.path('src');
  let snap1: Map<string, EntrySnap>;
  let snap2: Map<string, EntrySnap>;
  let id1 = '';
  let id2 = '';

  afterAll(() => sb.remove());

  it('init creates the repository (and the key)', async () => {
    const r = await sb.ok(['init', '--json']);
    const doc = jsonOf(r);
    expect(doc).toMatchObject({ repository: sb.repo, encrypted, newKey: encrypted });
    expect(doc.id).toMatch(/^[0-9a-f]{32}$/);
    if (encrypted) {
      expect(doc.keyFile).toBe(sb.keyFile);
      expect(r.stderr).toContain('created a new key');
      const key = readFileSync(sb.keyFile!, 'utf8').trim();
      expect(key).toMatch(/^[0-9a-f]{64}$/);
      // The key never shows in the output, nor in the repository.
      expect(r.stdout + r.stderr).not.toContain(key);
      expect(readFileSync(join(sb.repo, 'config'), 'utf8')).not.toContain(key);
      expect(readFileSync(join(sb.repo, 'config'), 'utf8')).not.toContain('hashKey');
    }
    // A second init refuses to overwrite it.
    const again = await sb.run(['init']);
    expect(again.code, describeRun(again)).toBe(2);
    expect(again.stderr).toMatch(/already exists/);
  });

  it('backs up a tree, then incrementally', async () => {
    makeTree(src, { seed: `flow-${encrypted}` });
    snap1 = snapshotTree(src);
    const r1 = await sb.ok(['backup', '--path', src, '--name', 'data', '--json']);
    const b1 = jsonOf(r1);
    id1 = b1.id;
    expect(id1).toMatch(/^[0-9a-f]{16}$/);
    expect(b1).toMatchObject({ name: 'data', engine: 'file', parent: null, partial: false });
    expect(b1.stats).toMatchObject({ files: 13, dirs: 6, errors: 0 }); // files counts symlinks too

    // Change one file, add one, delete one; keep the rest.
    appendFileSync(join(src, 'sub/deeper/c.txt'), 'one more line\n');
    utimesSync(join(src, 'sub/deeper/c.txt'), 1_600_000_000, 1_600_000_000);
    writeFileSync(join(src, 'new.txt'), 'new file\n');
    unlinkSync(join(src, 'exec.sh'));
    snap2 = snapshotTree(src);
    const r2 = await sb.ok(['backup', '--path', src, '--name', 'data', '--json']);
    const b2 = jsonOf(r2);
    id2 = b2.id;
    expect(b2.parent).toBe(id1);
    expect(b2.stats.filesUnchanged).toBeGreaterThanOrEqual(7);
    expect(b2.stats.filesRead).toBeLessThanOrEqual(2);
    // Human output names the parent.
    const r3 = await sb.ok(['backup', '--path', src, '--name', 'data']);
    expect(r3.stdout).toMatch(/incremental on [0-9a-f]{16}/);
  });

  it('list --json shows the backups in order', async () => {
    const doc = jsonOf<ListDoc>(await sb.ok(['list', '--json']));
    expect(doc.repository).toBe(sb.repo);
    expect(doc.backups.map((b) => b.id).slice(0, 2)).toEqual([id1, id2]);
    expect(doc.backups.every((b) => b.status === 'complete' && b.engine === 'file' && b.name === 'data')).toBe(true);
    expect(doc.backups[1]!.parent).toBe(id1);
    const human = await sb.ok(['list']);
    expect(human.stdout.split('\n')[0]).toMatch(/^ID\tTIME\tNAME\tSTATUS/);
    expect(human.stdout).toContain(id1);
  });

  it('restores each backup into a directory, identical to its source', async () => {
    const out1 = sb.path('r1');
    const out2 = sb.path('r2');
    // A unique prefix works for the ID.
    const r = await sb.ok(['restore', id1.slice(0, 6), '--target-dir', out1, '--json']);
    expect(jsonOf(r)).toMatchObject({ id: id1, targetDir: out1, errors: 0 });
    await sb.ok(['restore', id2, '--target-dir', out2]);
    expect(diffTrees(snap1, snapshotTree(out1))).toEqual([]);
    expect(diffTrees(snap2, snapshotTree(out2))).toEqual([]);
    expect(existsSync(join(out1, 'emptydir'))).toBe(true);
    expect(existsSync(join(out2, 'exec.sh'))).toBe(false);
  });

  it('restores only what --include selects', async () => {
    const out = sb.path('r-include');
    await sb.ok(['restore', id2, '--target-dir', out, '--include', 'sub/deeper/**']);
    const got = [...snapshotTree(out).keys()].sort();
    expect(got).toEqual(['.', 'sub', 'sub/deeper', 'sub/deeper/c.txt']);
    expect(diffTrees(snap2, snapshotTree(out), { only: (rel) => rel.startsWith('sub/deeper') })).toEqual([]);
  });

  it('restore refuses to replace existing files without --overwrite', async () => {
    const out = sb.path('r2');
    writeFileSync(join(out, 'a.txt'), 'changed locally\n');
    const r = await sb.run(['restore', id2, '--target-dir', out]);
    expect(r.code, describeRun(r)).toBe(0);
    expect(r.stderr).toMatch(/a\.txt exists; skipped/);
    expect(readFileSync(join(out, 'a.txt'), 'utf8')).toBe('changed locally\n');
    await sb.ok(['restore', id2, '--target-dir', out, '--overwrite']);
    expect(diffTrees(snap2, snapshotTree(out))).toEqual([]);
  });

  it('restore --tar - streams an archive GNU tar extracts faithfully', async () => {
    for (const [id, snap] of [
      [id1, snap1],
      [id2, snap2],
    ] as const) {
      const out = sb.path(`tar-${id}`);
      mkdirSync(out);
      const { cli, sink } = await sb.piped(['restore', id, '--tar', '-'], { cmd: 'tar', args: ['-x', '-f', '-', '-C', out, '-p', '--numeric-owner'] });
      expect(cli.code, describeRun(cli)).toBe(0);
      expect(sink.code, sink.stderr).toBe(0);
      // ustar keeps whole seconds; the tree's mtimes are whole seconds.
      expect(diffTrees(snap, snapshotTree(out), { tolMs: 1000, owners: true })).toEqual([]);
    }
    // --include applies to the archive too; a listing shows the hardlink as a link.
    const tarFile = sb.path('part.tar');
    await sb.ok(['restore', id2, '--tar', tarFile, '--include', 'sub/**', '--include', 'hl1']);
    const names = execFileSync('tar', ['-t', '-v', '-f', tarFile], { encoding: 'utf8' });
    expect(names).toMatch(/link to/);
    expect(names).not.toMatch(/a\.txt/);
  });

  it('check --read-data passes', async () => {
    const r = await sb.ok(['check', '--read-data', '--json']);
    const doc = jsonOf(r);
    expect(doc).toMatchObject({ ok: true, errors: [], backups: 3 });
    expect(doc.packsRead).toBeGreaterThan(0);
    const human = await sb.ok(['check']);
    expect(human.stdout).toMatch(/no errors found/);
  });

  it('catalog rebuild recreates the catalog from the repository alone', async () => {
    const before = jsonOf<ListDoc>(await sb.ok(['list', '--json']));
    for (const f of ['catalog.db', 'catalog.db-wal', 'catalog.db-shm']) rmSync(join(sb.state, f), { force: true });
    const r = await sb.ok(['catalog', 'rebuild', '--json']);
    expect(jsonOf(r)).toMatchObject({ backups: 3, unreadable: [] });
    const after = jsonOf<ListDoc>(await sb.ok(['list', '--json']));
    const view = (d: ListDoc) => d.backups.map((b) => ({ id: b.id, name: b.name, status: b.status, parent: b.parent, files: b.stats?.files }));
    expect(view(after)).toEqual(view(before));
    // And an incremental still finds its parent in the rebuilt catalog.
    const b = jsonOf(await sb.ok(['backup', '--path', src, '--name', 'data', '--json']));
    expect(b.parent).toBe(before.backups[2]!.id);
    expect(b.stats.filesRead).toBe(0);
  });

  it('two backups at the same time both commit (shared locks); check passes', async () => {
    const [a, b] = await Promise.all([
      sb.ok(['backup', '--path', join(src, 'sub'), '--name', 'sub', '--json']),
      sb.ok(['backup', '--path', join(src, 'private'), '--name', 'private', '--json']),
    ]);
    const ids = [jsonOf(a).id, jsonOf(b).id];
    const doc = jsonOf<ListDoc>(await sb.ok(['list', '--json']));
    for (const id of ids) expect(doc.backups.find((x) => x.id === id)?.status).toBe('complete');
    await sb.ok(['check', '--read-data']);
    expect(repoFiles(sb.repo, 'locks/')).toEqual([]);
  });

  it('restores every one of many small files', async () => {
    const many = sb.path('many');
    for (let d = 0; d < 4; d++) {
      mkdirSync(join(many, `d${d}`), { recursive: true });
      for (let i = 0; i < 150; i++) writeFileSync(join(many, `d${d}`, `f${i}`), `${d}/${i} `.repeat(1 + ((i * 97) % 5000)));
    }
    const b = jsonOf(await sb.ok(['backup', '--path', many, '--name', 'many', '--json']));
    expect(b.stats.files).toBe(600);
    const snap = snapshotTree(many);
    for (let round = 0; round < 2; round++) {
      const out = sb.path(`many-out-${round}`);
      const r = jsonOf(await sb.ok(['restore', b.id, '--target-dir', out, '--json']));
      expect(r).toMatchObject({ files: 600, errors: 0 });
      expect(diffTrees(snap, snapshotTree(out))).toEqual([]);
    }
  });

  // Only the encrypted variant has a key to keep secret: these tests exist for it alone (not skipped for the other).
  if (encrypted) {
    it('the encrypted repository holds no plaintext', () => {
      const marker = `flow-${encrypted} line of text`;
      for (const f of repoFiles(sb.repo)) expect(readFileSync(join(sb.repo, f)).includes(marker), f).toBe(false);
    });

    it('with -v, nothing prints the key', async () => {
      const key = readFileSync(sb.keyFile!, 'utf8').trim();
      const r = await sb.ok(['-v', 'list', '--json']);
      expect(r.stdout + r.stderr).not.toContain(key);
    });
  }
});
