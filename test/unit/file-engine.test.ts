import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFileSync, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { backupTree } from '../../engines/file/backup.js';
import { restoreTree } from '../../engines/file/restore.js';
import { exportTar } from '../../engines/file/tar.js';
import { readXattrsGetfattr, readXattrsNative } from '../../engines/file/xattr.js';
import { addon } from '../../src/util/native.js';
import { log } from '../../src/util/log.js';
import { decodeTree, encodeTree, type TreeNode } from '../../engines/file/tree.js';
import { IntegrityError, InterruptedError } from '../../src/errors.js';
import { MemStore, memContext } from '../helpers/memstore.js';
import { expectSameTree, snapshot } from '../helpers/tree-compare.js';

const isRoot = process.getuid?.() === 0;
const hasAttr = spawnSync('getfattr', ['--version']).status === 0 && spawnSync('setfattr', ['--version']).status === 0;
const small = { minSize: 4096, avgSize: 16384, maxSize: 65536 };

let work: string;
beforeAll(() => {
  work = fs.mkdtempSync(join(tmpdir(), 'pf-file-engine-'));
});
afterAll(() => {
  fs.rmSync(work, { recursive: true, force: true });
});

let seq = 0;
function dir(name: string): string {
  const d = join(work, `${name}-${++seq}`);
  fs.mkdirSync(d, { recursive: true });
  return d;
}

function setTime(p: string, sec: number): void {
  fs.lutimesSync(p, sec, sec);
}

/** A source tree with most kinds of entries. */
function buildSource(): string {
  const src = dir('src');
  fs.writeFileSync(join(src, 'empty'), '');
  fs.writeFileSync(join(src, 'hello.txt'), 'hello world\n');
  fs.chmodSync(join(src, 'hello.txt'), 0o640);
  fs.writeFileSync(join(src, 'big.bin'), randomBytes(300_000));
  fs.writeFileSync(join(src, 'exec.sh'), '#!/bin/sh\necho hi\n', { mode: 0o755 });
  fs.chmodSync(join(src, 'exec.sh'), 0o4755);
  fs.mkdirSync(join(src, 'sub/deeper/deepest'), { recursive: true });
  fs.mkdirSync(join(src, 'emptydir'));
  fs.mkdirSync(join(src, 'sticky'), { mode: 0o1777 });
  fs.chmodSync(join(src, 'sticky'), 0o1777);
  fs.writeFileSync(join(src, 'sub/a.txt'), 'a'.repeat(5000));
  fs.writeFileSync(join(src, 'sub/deeper/b.txt'), 'bbb');
  fs.writeFileSync(join(src, 'sub/deeper/deepest/c.txt'), randomBytes(100));
  fs.writeFileSync(join(src, 'name with spaces & ünïcödé'), 'x');
  fs.writeFileSync(join(src, 'sub/' + 'long-name-'.repeat(20)), 'long');
  // Hardlinks: three names, two directories.
  fs.writeFileSync(join(src, 'sub/hl1'), 'linked content');
  fs.linkSync(join(src, 'sub/hl1'), join(src, 'sub/hl2'));
  fs.linkSync(join(src, 'sub/hl1'), join(src, 'sub/deeper/hl3'));
  // Symlinks: relative, absolute, dangling, to a directory.
  fs.symlinkSync('hello.txt', join(src, 'link-rel'));
  fs.symlinkSync('/etc/hostname', join(src, 'link-abs'));
  fs.symlinkSync('does/not/exist', join(src, 'link-dangling'));
  fs.symlinkSync('sub', join(src, 'link-dir'));
  // Sparse: 64 MiB with data at 0 and 40 MiB.
  const fd = fs.openSync(join(src, 'sparse.img'), 'w');
  fs.writeSync(fd, randomBytes(10_000), 0, 10_000, 0);
  fs.writeSync(fd, randomBytes(5000), 0, 5000, 40 << 20);
  fs.ftruncateSync(fd, 64 << 20);
  fs.closeSync(fd);
  execFileSync('mkfifo', [join(src, 'fifo')]);
  // Times with sub-second precision, directories last.
  let t = 1_600_000_000.123456;
  for (const p of ['empty', 'hello.txt', 'big.bin', 'exec.sh', 'sub/a.txt', 'sub/deeper/b.txt', 'sub/hl1', 'sparse.img', 'fifo', 'link-rel', 'link-abs']) setTime(join(src, p), (t += 1000.5));
  for (const p of ['sub/deeper/deepest', 'sub/deeper', 'sub', 'emptydir', 'sticky']) setTime(join(src, p), (t += 77.25));
  return src;
}

async function backup(store: MemStore, src: string, opts: Parameters<typeof backupTree>[1] = {}) {
  const ctx = memContext(store);
  const res = await backupTree(src, { chunker: small, ...opts }, ctx);
  return { ...res, log: ctx.log };
}

describe('file engine: backup and restore', () => {
  let src: string;
  let store: MemStore;
  let root: string;

  beforeAll(async () => {
    src = buildSource();
    store = new MemStore();
    const res = await backup(store, src);
    root = res.root;
    expect(res.stats.errors).toBe(0);
  });

  it('restores every kind of entry with modes, times, links and sparseness', async () => {
    // Deterministic trees: an unchanged source gives the same root (as root, reads do not even touch atimes).
    const res0 = await backup(store, src, { parentRoot: root });
    if (isRoot) expect(res0.root).toBe(root);
    expect((await backup(store, src, { parentRoot: res0.root })).root).toBe(res0.root);
    expect(res0.stats.files).toBe(18);
    expect(res0.stats.dirs).toBe(6); // with the root
    const dst = dir('dst');
    const ctx = memContext(store);
    const r = await restoreTree(root, dst, {}, ctx);
    expect(ctx.log.warnings).toEqual([]);
    expect(r).toMatchObject({ files: 11, hardlinks: 2, symlinks: 4, specials: 1, errors: 0 });
    expectSameTree(snapshot(src), snapshot(dst), { owners: true });
    const st = fs.statSync(join(dst, 'sparse.img'));
    expect(st.size).toBe(64 << 20);
    expect(st.blocks * 512).toBeLessThan(1 << 20);
    // The root directory's own metadata.
    expect(fs.statSync(dst).mode & 0o7777).toBe(fs.statSync(src).mode & 0o7777);
  });

  it('gives the same result with synchronous reads and writes (no I/O threads)', async () => {
    const res = await backup(store, src, { readers: 0 });
    const t1 = decodeTree(await store.loadBlob('tree', res.root));
    const t0 = decodeTree(await store.loadBlob('tree', root));
    // atimes (and so subtrees) differ: earlier tests read the source files.
    const strip = (t: typeof t0) => t.nodes.map((n) => ({ ...n, atimeNs: undefined, subtree: undefined }));
    expect(strip(t1)).toEqual(strip(t0));
    const dst = dir('dst-sync');
    const r = await restoreTree(res.root, dst, { writers: 0 }, memContext(store));
    expect(r).toMatchObject({ files: 11, hardlinks: 2, symlinks: 4, specials: 1, errors: 0 });
    expectSameTree(snapshot(src), snapshot(dst), { owners: true });
    expect(fs.statSync(join(dst, 'sparse.img')).blocks * 512).toBeLessThan(1 << 20);
  });

  it('writes deterministic, validated trees', async () => {
    const t = decodeTree(await store.loadBlob('tree', root));
    const names = t.nodes.map((n) => n.name);
    expect(names).toEqual([...names].sort());
    expect(t.root?.type).toBe('dir');
    const sparse = t.nodes.find((n) => n.name === 'sparse.img')!;
    expect(sparse.sparse).toBe(true);
    expect(sparse.holes!.length).toBeGreaterThan(0);
    expect(encodeTree(t).equals(await store.loadBlob('tree', root))).toBe(true);
    const sub = decodeTree(await store.loadBlob('tree', t.nodes.find((n) => n.name === 'sub')!.subtree!));
    const hl = sub.nodes.filter((n) => n.name.startsWith('hl'));
    expect(hl.map((n) => n.nlink)).toEqual([3, 3]);
    expect(hl[0]!.content).toEqual(hl[1]!.content);
  });

  it('an incremental reuses unchanged subtrees and gives the trees a full backup would', async () => {
    const s2 = new MemStore();
    const d = dir('reuse');
    for (const sub of ['a/a1', 'a/a2', 'b/b1']) {
      fs.mkdirSync(join(d, sub), { recursive: true });
      for (let i = 0; i < 5; i++) fs.writeFileSync(join(d, sub, `f${i}`), `${sub} ${i}`);
    }
    const r1 = await backup(s2, d);
    const r2 = await backup(s2, d, { parentRoot: r1.root });
    expect(r2.root).toBe(r1.root);
    // A metadata-only change deep down: ancestors change, siblings keep their trees.
    fs.chmodSync(join(d, 'a/a2/f3'), 0o600);
    const r3 = await backup(s2, d, { parentRoot: r2.root });
    expect(r3.root).not.toBe(r1.root);
    const full = await backup(s2, d);
    expect(r3.root).toBe(full.root);
    const t1 = decodeTree(await s2.loadBlob('tree', r1.root));
    const t3 = decodeTree(await s2.loadBlob('tree', r3.root));
    const sub = (t: typeof t1, n: string) => t.nodes.find((x) => x.name === n)!.subtree!;
    expect(sub(t3, 'b')).toBe(sub(t1, 'b'));
    expect(sub(t3, 'a')).not.toBe(sub(t1, 'a'));
  });

  it('sameNodes: equal nodes only, and never a parent node with a field this version does not write', async () => {
    const { sameNodes } = await import('../../engines/file/backup.js');
    const a: TreeNode = { name: 'x', type: 'file', mode: 0o644, uid: 1, gid: 2, size: 3, mtimeNs: '1', ctimeNs: '2', atimeNs: '3', inode: '4', content: ['a'.repeat(64)] };
    const parsed = () => JSON.parse(encodeTree({ nodes: [a] }).toString()).nodes as TreeNode[];
    expect(sameNodes([a], parsed())).toBe(true);
    expect(sameNodes([{ ...a, atimeNs: '9' }], parsed())).toBe(false);
    expect(sameNodes([{ ...a, content: ['b'.repeat(64)] }], parsed())).toBe(false);
    expect(sameNodes([{ ...a, xattrs: { 'user.a': 'AA==' } }], parsed())).toBe(false);
    expect(sameNodes([a], [{ ...parsed()[0]!, future: 1 } as unknown as TreeNode])).toBe(false);
    expect(sameNodes([a, { ...a, name: 'y' }], parsed())).toBe(false);
  });

  it('skips unchanged files in an incremental and picks up a same-size change', async () => {
    const s2 = new MemStore();
    const d = dir('incr');
    for (let i = 0; i < 50; i++) fs.writeFileSync(join(d, `f${i}`), `content ${i}`.padEnd(100, '.'));
    fs.mkdirSync(join(d, 'x'));
    fs.writeFileSync(join(d, 'x/big'), randomBytes(200_000));
    const r1 = await backup(s2, d);
    expect(r1.stats).toMatchObject({ files: 51, filesRead: 51, filesUnchanged: 0 });
    const r2 = await backup(s2, d, { parentRoot: r1.root });
    expect(r2.stats).toMatchObject({ files: 51, filesRead: 0, filesUnchanged: 51, bytesRead: 0, blobsNew: 0 });
    expect(r2.root).toBe(r1.root);
    // Same size, new content, new mtime.
    const p = join(d, 'f7');
    const st = fs.statSync(p);
    fs.writeFileSync(p, 'CHANGED'.padEnd(100, '!'));
    fs.utimesSync(p, st.atime, new Date(st.mtimeMs + 5000));
    expect(fs.statSync(p).size).toBe(st.size);
    const r3 = await backup(s2, d, { parentRoot: r2.root });
    expect(r3.stats).toMatchObject({ filesRead: 1, filesUnchanged: 50 });
    const out = dir('incr-out');
    await restoreTree(r3.root, out, {}, memContext(s2));
    expect(fs.readFileSync(join(out, 'f7'), 'utf8')).toBe('CHANGED'.padEnd(100, '!'));
    expectSameTree(snapshot(d), snapshot(out));
    // A big file with one byte changed: only the chunks around it are new.
    const big = fs.readFileSync(join(d, 'x/big'));
    big[100_000] ^= 1;
    fs.writeFileSync(join(d, 'x/big'), big);
    const r4 = await backup(s2, d, { parentRoot: r3.root });
    expect(r4.stats.filesRead).toBe(1);
    expect(r4.stats.bytesNew).toBeLessThan(3 * small.maxSize);
  });

  it('restores only what include globs select, with their parents', async () => {
    const dst = dir('inc');
    const r = await restoreTree(root, dst, { include: ['sub/deeper/**'] }, memContext(store));
    expect(r.errors).toBe(0);
    const got = [...snapshot(dst).keys()].sort();
    expect(got).toEqual(['sub', 'sub/deeper', 'sub/deeper/b.txt', 'sub/deeper/deepest', 'sub/deeper/deepest/c.txt', 'sub/deeper/hl3']);
    // hl3 carries the content although its group's first name was not selected.
    expect(fs.readFileSync(join(dst, 'sub/deeper/hl3'), 'utf8')).toBe('linked content');
    // Parent directories keep their metadata.
    expect(fs.statSync(join(dst, 'sub')).mtimeMs).toBe(fs.statSync(join(src, 'sub')).mtimeMs);
    const dst2 = dir('inc2');
    await restoreTree(root, dst2, { include: ['*.txt', 'link-*'] }, memContext(store));
    expect([...snapshot(dst2).keys()].sort()).toEqual(['hello.txt', 'link-abs', 'link-dangling', 'link-dir', 'link-rel']);
  });

  it('leaves existing files alone unless overwrite is set', async () => {
    const dst = dir('ow');
    fs.writeFileSync(join(dst, 'hello.txt'), 'mine');
    const ctx = memContext(store);
    const r = await restoreTree(root, dst, { include: ['hello.txt'] }, ctx);
    expect(r.skipped).toBe(1);
    expect(fs.readFileSync(join(dst, 'hello.txt'), 'utf8')).toBe('mine');
    const r2 = await restoreTree(root, dst, { include: ['hello.txt'], overwrite: true }, memContext(store));
    expect(r2.files).toBe(1);
    expect(fs.readFileSync(join(dst, 'hello.txt'), 'utf8')).toBe('hello world\n');
  });

  it('honours excludes and one-file-system', async () => {
    const r = await backup(store, src, { excludes: ['*.bin', 'sub/deeper', '/link-*'] });
    const t = decodeTree(await store.loadBlob('tree', r.root));
    const names = t.nodes.map((n) => n.name);
    expect(names).not.toContain('big.bin');
    expect(names.some((n) => n.startsWith('link-'))).toBe(false);
    const sub = decodeTree(await store.loadBlob('tree', t.nodes.find((n) => n.name === 'sub')!.subtree!));
    expect(sub.nodes.map((n) => n.name)).not.toContain('deeper');
  });

  it('stops with InterruptedError when aborted', async () => {
    const ac = new AbortController();
    ac.abort();
    await expect(backupTree(src, {}, memContext(store, ac.signal))).rejects.toBeInstanceOf(InterruptedError);
    await expect(restoreTree(root, dir('abort'), {}, memContext(store, ac.signal))).rejects.toBeInstanceOf(InterruptedError);
  });

  it('stops cleanly when aborted in the middle', async () => {
    const d = dir('abort-mid');
    for (let i = 0; i < 40; i++) {
      fs.mkdirSync(join(d, `d${i}`));
      for (let j = 0; j < 50; j++) fs.writeFileSync(join(d, `d${i}/f${j}`), randomBytes(2000));
    }
    fs.writeFileSync(join(d, 'big'), randomBytes(20 << 20));
    const s = new MemStore();
    for (const delay of [1, 20, 60]) {
      const ac = new AbortController();
      setTimeout(() => ac.abort(), delay);
      const res = await backupTree(d, {}, memContext(s, ac.signal)).then(
        () => 'done',
        (err: unknown) => err,
      );
      if (res !== 'done') expect(res).toBeInstanceOf(InterruptedError);
    }
    const { root } = await backup(s, d);
    for (const delay of [1, 30]) {
      const ac = new AbortController();
      setTimeout(() => ac.abort(), delay);
      const res = await restoreTree(root, dir('abort-mid-out'), {}, memContext(s, ac.signal)).then(
        () => 'done',
        (err: unknown) => err,
      );
      if (res !== 'done') expect(res).toBeInstanceOf(InterruptedError);
    }
  });

  it('fails the backup when the repository fails', async () => {
    const s = new MemStore();
    s.failSaves = new Error('disk on fire');
    await expect(backup(s, src)).rejects.toThrow('disk on fire');
  });

  it('reports unreadable entries and continues', async () => {
    const d = dir('vanish');
    fs.writeFileSync(join(d, 'ok'), 'ok');
    fs.mkdirSync(join(d, 'locked'));
    fs.writeFileSync(join(d, 'locked/x'), 'x');
    if (!isRoot) {
      fs.chmodSync(join(d, 'locked'), 0);
      const r = await backup(new MemStore(), d);
      fs.chmodSync(join(d, 'locked'), 0o755);
      expect(r.stats.errors).toBe(1);
      expect(r.log.warnings.join('\n')).toContain('locked');
    } else {
      // As root nothing is unreadable; a corrupted parent tree is the failure to survive.
      const s = new MemStore();
      const r1 = await backup(s, d);
      s.corrupt(decodeTree(await s.loadBlob('tree', r1.root)).nodes.find((n) => n.name === 'locked')!.subtree!);
      const r2 = await backup(s, d, { parentRoot: r1.root });
      expect(r2.stats.filesRead).toBe(1);
      expect(r2.log.warnings.join('\n')).toContain('parent');
    }
  });

  it('restores a corrupted data blob as an error, not silently', async () => {
    const s = new MemStore();
    const d = dir('corrupt');
    fs.writeFileSync(join(d, 'f'), 'some data');
    const r = await backup(s, d);
    const t = decodeTree(await s.loadBlob('tree', r.root));
    s.corrupt(t.nodes[0]!.content![0]!);
    const ctx = memContext(s);
    const res = await restoreTree(r.root, dir('corrupt-out'), {}, ctx);
    expect(res.errors).toBe(1);
    expect(ctx.log.warnings.join('\n')).toContain('does not match');
  });
});

describe('file engine: hostile trees', () => {
  const ts = '1600000000000000000';
  const file = (name: string, content: string[] = []): Record<string, unknown> => ({ name, type: 'file', mode: 0o644, uid: 0, gid: 0, size: 0, mtimeNs: ts, ctimeNs: ts, atimeNs: ts, inode: '1', content });

  function plant(store: MemStore, nodes: Record<string, unknown>[]): string {
    return store.put('tree', Buffer.from(JSON.stringify({ nodes })));
  }

  it.each([['../x'], ['a/b'], ['/tmp/evil'], ['..'], ['.'], [''], ['a\u0000b']])('refuses the name %j', async (name) => {
    const store = new MemStore();
    const id = plant(store, [file(name)]);
    expect(() => decodeTree(store.blobs.get(id)!.data)).toThrow(IntegrityError);
    const parent = dir('hostile');
    const dst = join(parent, 'target');
    await expect(restoreTree(id, dst, {}, memContext(store))).rejects.toBeInstanceOf(IntegrityError);
    expect(fs.readdirSync(parent)).toEqual(['target']);
    expect(fs.readdirSync(dst)).toEqual([]);
  });

  it('refuses duplicate and unsorted names, bad ids, bad types', () => {
    const store = new MemStore();
    for (const nodes of [
      [file('a'), file('a')],
      [file('b'), file('a')],
      [file('a', ['zz'])],
      [{ ...file('a'), type: 'door' }],
      [{ ...file('a'), type: 'dir' }],
      [{ ...file('a'), mode: 0o170000 }],
      [{ ...file('a'), holes: [[0, 10]] }],
    ]) {
      const id = plant(store, nodes);
      expect(() => decodeTree(store.blobs.get(id)!.data)).toThrow(IntegrityError);
    }
    expect(() => decodeTree(Buffer.from('not json'))).toThrow(IntegrityError);
    expect(() => encodeTree({ nodes: [file('a/b') as unknown as TreeNode] })).toThrow(IntegrityError);
  });

  it('refuses to write through a symlinked directory in the target', async () => {
    const store = new MemStore();
    const dataId = await store.saveBlob('data', Buffer.from('pwned'));
    const sub = plant(store, [{ ...file('f', [dataId.id]), size: 5 }]);
    const rootId = plant(store, [{ name: 'a', type: 'dir', mode: 0o755, uid: 0, gid: 0, mtimeNs: ts, ctimeNs: ts, atimeNs: ts, inode: '2', subtree: sub }]);
    const outside = dir('outside');
    const dst = dir('symlinked-target');
    fs.symlinkSync(outside, join(dst, 'a'));
    await expect(restoreTree(rootId, dst, {}, memContext(store))).rejects.toBeInstanceOf(IntegrityError);
    await expect(restoreTree(rootId, dst, { overwrite: true }, memContext(store))).rejects.toBeInstanceOf(IntegrityError);
    expect(fs.readdirSync(outside)).toEqual([]);
  });

  it('does not follow a symlink restored earlier in the same tree', async () => {
    // A symlink "a" → outside, then (in another restore into the same target) a directory "a".
    const store = new MemStore();
    const outside = dir('outside2');
    const rootLink = plant(store, [{ name: 'a', type: 'symlink', mode: 0o777, uid: 0, gid: 0, mtimeNs: ts, ctimeNs: ts, atimeNs: ts, inode: '3', linkTarget: outside }]);
    const dataId = (await store.saveBlob('data', Buffer.from('pwned'))).id;
    const sub = plant(store, [{ ...file('f', [dataId]), size: 5 }]);
    const rootDir = plant(store, [{ name: 'a', type: 'dir', mode: 0o755, uid: 0, gid: 0, mtimeNs: ts, ctimeNs: ts, atimeNs: ts, inode: '2', subtree: sub }]);
    const dst = dir('two-step');
    await restoreTree(rootLink, dst, {}, memContext(store));
    expect(fs.lstatSync(join(dst, 'a')).isSymbolicLink()).toBe(true);
    await expect(restoreTree(rootDir, dst, { overwrite: true }, memContext(store))).rejects.toBeInstanceOf(IntegrityError);
    expect(fs.readdirSync(outside)).toEqual([]);
    // A hardlink group whose first member would be outside cannot exist: names are single components.
  });

  it('refuses a file replaced by a symlink in the target (O_NOFOLLOW)', async () => {
    const store = new MemStore();
    const dataId = (await store.saveBlob('data', Buffer.from('pwned'))).id;
    const rootId = plant(store, [{ ...file('f', [dataId]), size: 5 }]);
    const outside = dir('outside3');
    fs.writeFileSync(join(outside, 'victim'), 'safe');
    const dst = dir('nofollow');
    fs.symlinkSync(join(outside, 'victim'), join(dst, 'f'));
    const r = await restoreTree(rootId, dst, {}, memContext(store));
    expect(r.skipped).toBe(1);
    expect(fs.readFileSync(join(outside, 'victim'), 'utf8')).toBe('safe');
    // With overwrite the symlink itself is replaced, the victim untouched.
    await restoreTree(rootId, dst, { overwrite: true }, memContext(store));
    expect(fs.lstatSync(join(dst, 'f')).isFile()).toBe(true);
    expect(fs.readFileSync(join(outside, 'victim'), 'utf8')).toBe('safe');
  });
});

describe('file engine: tar export', () => {
  it('produces an archive GNU tar extracts faithfully', async () => {
    const src = buildSource();
    fs.unlinkSync(join(src, 'sparse.img')); // tar writes holes as zeros; keep the test small
    const store = new MemStore();
    const { root } = await backup(store, src);
    const tarFile = join(dir('tar'), 'out.tar');
    const out = fs.createWriteStream(tarFile);
    const res = await exportTar(root, out, {}, memContext(store));
    await new Promise<void>((r) => out.end(r));
    expect(res.files).toBe(12);
    const dst = dir('tar-x');
    execFileSync('tar', ['-x', '-f', tarFile, '-C', dst, '--numeric-owner', '-p']);
    expectSameTree(snapshot(src), snapshot(dst), { owners: isRoot, timeTolNs: 1_000_000_000n, symlinkTimes: false });
    const list = execFileSync('tar', ['-t', '-v', '-f', tarFile], { encoding: 'utf8' });
    expect(list).toMatch(/sub\/hl1 link to sub\/deeper\/hl3/);
    expect(list).toMatch(/sub\/hl2 link to sub\/deeper\/hl3/);
  });

  it('exports only included paths and respects backpressure', async () => {
    const src = dir('tar-bp');
    fs.mkdirSync(join(src, 'etc/conf.d'), { recursive: true });
    fs.writeFileSync(join(src, 'etc/conf.d/a.conf'), randomBytes(3 << 20));
    fs.writeFileSync(join(src, 'etc/passwd'), 'root:x:0:0::/root:/bin/sh\n');
    fs.writeFileSync(join(src, 'other'), 'no');
    const store = new MemStore();
    const { root } = await backup(store, src);
    const pt = new PassThrough({ highWaterMark: 1024 });
    const chunks: Buffer[] = [];
    const done = exportTar(root, pt, { include: ['etc/conf.d/**'] }, memContext(store));
    // Read slowly: the exporter must wait for us.
    for (;;) {
      await new Promise((r) => setTimeout(r, 1));
      const c = pt.read() as Buffer | null;
      if (c) chunks.push(c);
      const finished = await Promise.race([done.then(() => true), new Promise<boolean>((r) => setImmediate(() => r(false)))]);
      if (finished) {
        let rest: Buffer | null;
        while ((rest = pt.read() as Buffer | null)) chunks.push(rest);
        break;
      }
      expect(pt.readableLength).toBeLessThan(9 << 20);
    }
    const tarFile = join(dir('tar-bp-out'), 'x.tar');
    fs.writeFileSync(tarFile, Buffer.concat(chunks));
    const names = execFileSync('tar', ['-t', '-f', tarFile], { encoding: 'utf8' }).trim().split('\n');
    expect(names).toEqual(['etc/', 'etc/conf.d/', 'etc/conf.d/a.conf']);
    const x = dir('tar-bp-x');
    execFileSync('tar', ['-x', '-f', tarFile, '-C', x]);
    expect(fs.readFileSync(join(x, 'etc/conf.d/a.conf')).equals(fs.readFileSync(join(src, 'etc/conf.d/a.conf')))).toBe(true);
  });
});

describe('file engine: root-only metadata', () => {
  it('restores owners and device nodes', async (t) => {
    if (!isRoot) {
      console.warn('skipped: chown and mknod need root');
      t.skip();
      return;
    }
    const src = dir('owners');
    fs.writeFileSync(join(src, 'f'), 'x');
    fs.chownSync(join(src, 'f'), 1234, 5678);
    fs.mkdirSync(join(src, 'd'));
    fs.chownSync(join(src, 'd'), 4321, 8765);
    fs.symlinkSync('f', join(src, 'l'));
    fs.lchownSync(join(src, 'l'), 111, 222);
    execFileSync('mknod', [join(src, 'null'), 'c', '1', '3']);
    fs.chownSync(join(src, 'null'), 7, 8);
    const big = 3_000_000_000; // above ustar's octal field
    fs.writeFileSync(join(src, 'bigid'), 'y');
    fs.chownSync(join(src, 'bigid'), big, big);
    const store = new MemStore();
    const { root } = await backup(store, src);
    const dst = dir('owners-out');
    const r = await restoreTree(root, dst, {}, memContext(store));
    expect(r.errors).toBe(0);
    expectSameTree(snapshot(src), snapshot(dst), { owners: true });
    expect(fs.statSync(join(dst, 'null')).rdev).toBe(fs.statSync('/dev/null').rdev);
    // tar keeps them too.
    const tarFile = join(dst, '..', 'owners.tar');
    const out = fs.createWriteStream(tarFile);
    await exportTar(root, out, {}, memContext(store));
    await new Promise<void>((res) => out.end(res));
    const x = dir('owners-tar');
    execFileSync('tar', ['-x', '-f', tarFile, '-C', x, '--numeric-owner', '-p']);
    expectSameTree(snapshot(src), snapshot(x), { owners: true, timeTolNs: 1_000_000_000n, symlinkTimes: false });
  });

  it('backs up and restores extended attributes', async (t) => {
    if (!isRoot || !hasAttr) {
      console.warn(`skipped: xattrs need root and the attr package (root=${isRoot}, getfattr/setfattr=${hasAttr})`);
      t.skip();
      return;
    }
    const src = dir('xattr');
    fs.writeFileSync(join(src, 'f'), 'x');
    fs.mkdirSync(join(src, 'd'));
    fs.symlinkSync('f', join(src, 'l'));
    fs.writeFileSync(join(src, 'weird = name\\with\nnewline'), 'w');
    const probe = spawnSync('setfattr', ['-n', 'user.probe', '-v', '1', join(src, 'f')]);
    if (probe.status !== 0) {
      console.warn(`skipped: ${tmpdir()} does not support user xattrs`);
      t.skip();
      return;
    }
    execFileSync('setfattr', ['-x', 'user.probe', join(src, 'f')]);
    execFileSync('setfattr', ['-n', 'user.text', '-v', 'hello', join(src, 'f')]);
    execFileSync('setfattr', ['-n', 'user.bin', '-v', '0sAAEC/w==', join(src, 'f')]);
    execFileSync('setfattr', ['-n', 'user.empty', join(src, 'f')]);
    execFileSync('setfattr', ['-n', 'user.dir', '-v', 'on a dir', join(src, 'd')]);
    execFileSync('setfattr', ['-n', 'user.root', '-v', 'on the root', src]);
    execFileSync('setfattr', ['-h', '-n', 'trusted.link', '-v', 'on a symlink', join(src, 'l')]);
    execFileSync('setfattr', ['-n', 'user.w', '-v', 'w', join(src, 'weird = name\\with\nnewline')]);
    const store = new MemStore();
    const { root } = await backup(store, src);
    const tree = decodeTree(await store.loadBlob('tree', root));
    expect(tree.nodes.find((n) => n.name === 'f')!.xattrs).toEqual({ 'user.bin': 'AAEC/w==', 'user.empty': '', 'user.text': Buffer.from('hello').toString('base64') });
    expect(tree.root!.xattrs).toEqual({ 'user.root': Buffer.from('on the root').toString('base64') });
    const dst = dir('xattr-out');
    const r = await restoreTree(root, dst, {}, memContext(store));
    expect(r.errors).toBe(0);
    const dump = (d: string) => execFileSync('getfattr', ['-R', '-d', '-h', '-m', '-', '-e', 'base64', '.'], { cwd: d, encoding: 'utf8' });
    expect(dump(dst)).toBe(dump(src));
    expectSameTree(snapshot(src), snapshot(dst), { owners: true });
    // Incremental: unchanged entries inherit (no scan), changed ones are read again.
    execFileSync('setfattr', ['-n', 'user.text', '-v', 'changed', join(src, 'f')]);
    execFileSync('setfattr', ['-x', 'user.dir', join(src, 'd')]);
    fs.writeFileSync(join(src, 'd/new'), 'n');
    execFileSync('setfattr', ['-n', 'user.new', '-v', 'fresh', join(src, 'd/new')]);
    const inc = await backup(store, src, { parentRoot: root });
    const dst2 = dir('xattr-out2');
    await restoreTree(inc.root, dst2, {}, memContext(store));
    expect(dump(dst2)).toBe(dump(src));
    expect(dump(dst2)).toContain('user.new');
    expect(dump(dst2)).not.toContain('user.dir');
  });

  it('reads the xattrs of changed entries natively exactly as getfattr does', async (t) => {
    if (!isRoot || !hasAttr || addon?.xattrs === undefined) {
      console.warn(`skipped: needs root, the attr package and the native addon (root=${isRoot}, attr=${hasAttr}, addon xattrs=${addon?.xattrs !== undefined})`);
      t.skip();
      return;
    }
    const src = dir('xattr-native');
    fs.writeFileSync(join(src, 'f'), 'x');
    fs.writeFileSync(join(src, 'plain'), 'p');
    fs.mkdirSync(join(src, 'd'));
    fs.symlinkSync('f', join(src, 'l'));
    fs.symlinkSync('nowhere', join(src, 'dangling'));
    const weird = 'weird = name\\with\nnewline é';
    fs.writeFileSync(join(src, weird), 'w');
    if (spawnSync('setfattr', ['-n', 'user.probe', '-v', '1', join(src, 'plain')]).status !== 0) {
      console.warn(`skipped: ${tmpdir()} does not support user xattrs`);
      t.skip();
      return;
    }
    execFileSync('setfattr', ['-x', 'user.probe', join(src, 'plain')]);
    execFileSync('setfattr', ['-n', 'user.text', '-v', 'hello', join(src, 'f')]);
    execFileSync('setfattr', ['-n', 'user.bin', '-v', '0sAAEC/w==', join(src, 'f')]);
    execFileSync('setfattr', ['-n', 'user.empty', join(src, 'f')]);
    execFileSync('setfattr', ['-n', 'user.big', '-v', '0x' + randomBytes(3000).toString('hex'), join(src, 'd')]);
    for (let i = 0; i < 20; i++) execFileSync('setfattr', ['-n', `user.n${i}`, '-v', String(i), join(src, 'd')]);
    execFileSync('setfattr', ['-n', 'user.root', '-v', 'on the root', src]);
    execFileSync('setfattr', ['-h', '-n', 'trusted.link', '-v', 'on a symlink', join(src, 'l')]);
    execFileSync('setfattr', ['-n', 'user.w', '-v', 'w', join(src, weird)]);
    // A POSIX ACL (user 1234 may read), as setfacl would store it: version 2, then tag, permissions, id.
    const acl = '02000000' + '01000600ffffffff' + '02000400d2040000' + '04000400ffffffff' + '10000400ffffffff' + '20000400ffffffff';
    execFileSync('setfattr', ['-n', 'system.posix_acl_access', '-v', '0x' + acl, join(src, 'plain')]);
    const paths = ['', 'f', 'plain', 'd', 'l', 'dangling', weird, 'vanished', 'f/not-a-dir'];
    const native = await readXattrsNative(src, paths, log);
    const tool = await readXattrsGetfattr(src, paths, log);
    expect(native).toEqual(tool);
    expect(native.get('f')).toEqual({ 'user.bin': 'AAEC/w==', 'user.empty': '', 'user.text': Buffer.from('hello').toString('base64') });
    expect(native.get('l')).toEqual({ 'trusted.link': Buffer.from('on a symlink').toString('base64') });
    expect(Object.keys(native.get('d')!)).toHaveLength(21);
    expect(Buffer.from(native.get('d')!['user.big']!, 'base64')).toHaveLength(3000);
    expect(native.get('')).toEqual({ 'user.root': Buffer.from('on the root').toString('base64') });
    expect(native.has('dangling')).toBe(false);
    expect(native.has('vanished')).toBe(false);
    expect(native.get('plain')).toHaveProperty(['system.posix_acl_access']);
  });
});
