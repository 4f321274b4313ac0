import { spawn, execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, rmSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { NoSpaceError, NotFoundError, UsageError } from '../../src/errors.js';
import { openStorage, parseRepoUrl } from '../../src/storage/index.js';
import { LocalStorage, isTempName } from '../../src/storage/local.js';
import { S3Storage } from '../../src/storage/s3.js';
import { listAll, storageContract } from '../storage/contract.js';

const dirs: string[] = [];
function freshDir(): string {
  const d = mkdtempSync(join(tmpdir(), 'pf-local-'));
  dirs.push(d);
  return d;
}
afterAll(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

storageContract('local', async () => new LocalStorage(join(freshDir(), 'repo')));

/** All files under a directory, relative, recursively. */
function filesUnder(dir: string): string[] {
  return (readdirSync(dir, { recursive: true, withFileTypes: true }) as import('node:fs').Dirent[])
    .filter((e) => e.isFile())
    .map((e) => join(e.parentPath ?? (e as unknown as { path: string }).path, e.name).slice(dir.length + 1));
}

describe('LocalStorage: atomicity', () => {
  it('a temp file left by a killed writer is invisible to list, get and stat', async () => {
    const root = freshDir();
    const s = new LocalStorage(root);
    await s.put('data/ab/done', Buffer.from('complete'));
    // what a writer killed between open and rename leaves behind
    mkdirSync(join(root, 'data/ab'), { recursive: true });
    writeFileSync(join(root, 'data/ab/partial.tmp-0123456789abcdef'), 'half of it');
    writeFileSync(join(root, 'data/ab/done.tmp-fedcba9876543210'), 'a newer half');
    expect(isTempName('partial.tmp-0123456789abcdef')).toBe(true);
    expect((await listAll(s, '')).map((o) => o.key)).toEqual(['data/ab/done']);
    expect((await listAll(s, 'data/ab/')).map((o) => o.key)).toEqual(['data/ab/done']);
    await expect(s.get('data/ab/partial')).rejects.toBeInstanceOf(NotFoundError);
    expect(await s.stat('data/ab/partial')).toBeUndefined();
    expect((await s.get('data/ab/done')).toString()).toBe('complete');
    // temp names are not valid keys, so nobody can read one by name
    await expect(s.get('data/ab/partial.tmp-0123456789abcdef')).rejects.toBeInstanceOf(UsageError);
  });

  it('SIGKILL during puts leaves only complete objects', async () => {
    const root = freshDir();
    const size = 4 * 1024 * 1024;
    const script = `
      import { LocalStorage } from ${JSON.stringify(resolve('src/storage/local.ts'))};
      const s = new LocalStorage(${JSON.stringify(root)});
      for (let i = 0; ; i++) {
        await s.put('obj/' + String(i).padStart(6, '0'), Buffer.alloc(${size}, i % 251));
        if (i === 0) process.stdout.write('first\\n');
      }`;
    const child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
    await new Promise<void>((res, rej) => {
      child.stdout.once('data', () => res());
      child.once('exit', (code) => rej(new Error(`writer exited early with ${code}`)));
    });
    await new Promise((r) => setTimeout(r, 150 + Math.random() * 100));
    child.kill('SIGKILL');
    await new Promise((r) => child.once('exit', r));
    const s = new LocalStorage(root);
    const listed = await listAll(s, 'obj/');
    expect(listed.length).toBeGreaterThan(0);
    for (const o of listed) {
      expect(o.size).toBe(size);
      const data = await s.get(o.key);
      const i = Number(o.key.slice(4));
      expect(data.length).toBe(size);
      expect(data.every((b) => b === i % 251)).toBe(true);
    }
    // the killed put may have left a temp file; removeStaleTemp cleans it once it is old enough
    const temps = filesUnder(root).filter((f) => isTempName(f));
    for (const t of temps) utimesSync(join(root, t), new Date(Date.now() - 2 * 3600_000), new Date(Date.now() - 2 * 3600_000));
    expect(await s.removeStaleTemp()).toBe(temps.length);
    expect(filesUnder(root).filter((f) => isTempName(f))).toEqual([]);
  }, 60_000);

  it('removeStaleTemp leaves young temp files alone', async () => {
    const root = freshDir();
    const s = new LocalStorage(root);
    mkdirSync(join(root, 'x'), { recursive: true });
    writeFileSync(join(root, 'x/k.tmp-0123456789abcdef'), 'in flight');
    expect(await s.removeStaleTemp()).toBe(0);
    expect(filesUnder(root)).toEqual(['x/k.tmp-0123456789abcdef']);
    expect(await s.removeStaleTemp(0)).toBe(1);
  });

  it('a failed conditional create leaves no temp file behind', async () => {
    const root = freshDir();
    const s = new LocalStorage(root);
    await s.put('locks/l', Buffer.from('a'), { ifNoneMatch: true });
    await expect(s.put('locks/l', Buffer.from('b'), { ifNoneMatch: true })).rejects.toThrow(/already exists/);
    expect(filesUnder(root)).toEqual(['locks/l']);
  });

  it('new files are private to the owner', async () => {
    const root = freshDir();
    const s = new LocalStorage(root);
    await s.put('data/00/x', Buffer.from('secret data'));
    const { statSync } = await import('node:fs');
    expect(statSync(join(root, 'data/00/x')).mode & 0o777).toBe(0o600);
  });
});

describe('LocalStorage: keys', () => {
  it('refuses keys that could escape the root or pass for temp files', async () => {
    const s = new LocalStorage(freshDir());
    for (const bad of ['', '../x', 'a/../../x', '/abs', 'a//b', 'a/./b', 'a/', 'x.tmp-0123456789abcdef', 'a\\b', 'a\0b']) {
      await expect(s.put(bad, Buffer.from('x')), JSON.stringify(bad)).rejects.toBeInstanceOf(UsageError);
      await expect(s.get(bad)).rejects.toBeInstanceOf(UsageError);
    }
  });

  it('a key cannot be both an object and a prefix of objects (UsageError, not a raw errno)', async () => {
    const s = new LocalStorage(freshDir());
    await s.put('a', Buffer.from('1'));
    await expect(s.put('a/b', Buffer.from('2'))).rejects.toBeInstanceOf(UsageError);
    await s.put('x/y', Buffer.from('3'));
    await expect(s.put('x', Buffer.from('4'))).rejects.toBeInstanceOf(UsageError);
    await expect(s.put('x', Buffer.from('4'), { ifNoneMatch: true })).rejects.toThrow();
    expect((await listAll(s, '')).map((o) => o.key).sort()).toEqual(['a', 'x/y']);
  });

  it('list of a prefix that would leave the root yields nothing', async () => {
    const root = freshDir();
    const s = new LocalStorage(join(root, 'repo'));
    await s.put('a', Buffer.from('1'));
    writeFileSync(join(root, 'outside'), 'x');
    expect(await listAll(s, '../')).toEqual([]);
    expect(await listAll(s, '../outside')).toEqual([]);
  });
});

const isRoot = typeof process.getuid === 'function' && process.getuid() === 0;
if (!isRoot) console.warn('[storage-local] ENOSPC test skipped: mounting a tiny tmpfs needs root');

describe('LocalStorage: full disk', () => {
  it.skipIf(!isRoot)('ENOSPC maps to NoSpaceError and leaves no temp file', async () => {
    const mnt = freshDir();
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=1m', 'pf-enospc', mnt]);
    try {
      const s = new LocalStorage(mnt);
      await s.put('small', Buffer.alloc(1000, 1));
      const err = await s.put('data/00/big', Buffer.alloc(2 * 1024 * 1024, 2)).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(NoSpaceError);
      expect((err as NoSpaceError).code).toBe('no_space');
      expect((err as NoSpaceError).exitCode).toBe(16);
      expect((err as Error).message).toContain('data/00/big');
      expect(filesUnder(mnt).filter((f) => isTempName(f))).toEqual([]);
      expect(await s.stat('data/00/big')).toBeUndefined();
      expect((await s.get('small')).length).toBe(1000);
    } finally {
      execFileSync('umount', [mnt]);
    }
  });
});

describe('parseRepoUrl / openStorage', () => {
  it('parses local paths and file URLs', () => {
    expect(parseRepoUrl('/srv/backup')).toEqual({ kind: 'local', path: '/srv/backup' });
    expect(parseRepoUrl('/srv/backup/')).toEqual({ kind: 'local', path: '/srv/backup' });
    expect(parseRepoUrl('file:///srv/b%20x')).toEqual({ kind: 'local', path: '/srv/b x' });
    expect(parseRepoUrl('repo', '/home/op')).toEqual({ kind: 'local', path: '/home/op/repo' });
    expect(parseRepoUrl('./a/../repo', '/home/op')).toEqual({ kind: 'local', path: '/home/op/repo' });
  });

  it('parses s3 URLs', () => {
    expect(parseRepoUrl('s3://bucket')).toEqual({ kind: 's3', bucket: 'bucket', prefix: '' });
    expect(parseRepoUrl('s3://bucket/')).toEqual({ kind: 's3', bucket: 'bucket', prefix: '' });
    expect(parseRepoUrl('s3://bucket/a/b/')).toEqual({ kind: 's3', bucket: 'bucket', prefix: 'a/b' });
    expect(parseRepoUrl('s3:http://127.0.0.1:7480/bk/pre')).toEqual({
      kind: 's3',
      bucket: 'bk',
      prefix: 'pre',
      endpoint: 'http://127.0.0.1:7480',
    });
  });

  it('refuses bad URLs without echoing credentials', () => {
    expect(() => parseRepoUrl('')).toThrow(UsageError);
    expect(() => parseRepoUrl('s3://')).toThrow(UsageError);
    expect(() => parseRepoUrl('s3:///prefix')).toThrow(UsageError);
    expect(() => parseRepoUrl('s3://b/../x')).toThrow(UsageError);
    expect(() => parseRepoUrl('swift://container')).toThrow(/unsupported scheme swift/);
    for (const u of ['s3://AKIA:topsecretvalue@bucket/p', 's3:https://AKIA:topsecretvalue@host/bucket']) {
      const err = (() => {
        try {
          parseRepoUrl(u);
        } catch (e) {
          return e as Error;
        }
        return undefined;
      })();
      expect(err).toBeInstanceOf(UsageError);
      expect(err!.message).not.toContain('topsecretvalue');
    }
  });

  it('opens the matching driver', async () => {
    const root = freshDir();
    const local = openStorage(root);
    expect(local).toBeInstanceOf(LocalStorage);
    expect(local.location).toBe(root);
    const s3 = openStorage('s3://bk/some/prefix', {
      endpoint: 'http://user:pw@127.0.0.1:7480/',
      accessKeyId: 'AKIAEXAMPLE',
      secretAccessKey: 'verysecretvalue',
    });
    expect(s3).toBeInstanceOf(S3Storage);
    expect(s3.location).toBe('s3://bk/some/prefix (http://127.0.0.1:7480)');
    expect(s3.location).not.toContain('verysecretvalue');
    expect(s3.location).not.toContain('pw');
    await s3.close();
    const aws = openStorage('s3://bk', { accessKeyId: 'a', secretAccessKey: 'bbbbbbbb', region: 'eu-west-1' });
    expect(aws.location).toBe('s3://bk (AWS S3 eu-west-1)');
    await aws.close();
  });
});
