import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { entryStat, listDir, listDirSync, nativeScanner, nsString } from '../../engines/file/scan.js';

const root = fs.mkdtempSync('/var/tmp/pf-scan-');
afterAll(() => fs.rmSync(root, { recursive: true, force: true }));

function build(): string {
  const d = join(root, 'tree');
  fs.mkdirSync(join(d, 'sub/deeper'), { recursive: true });
  fs.writeFileSync(join(d, 'empty'), '');
  fs.writeFileSync(join(d, 'a.txt'), 'hello');
  fs.writeFileSync(join(d, 'ünïcødé ✓'), 'u');
  fs.writeFileSync(Buffer.concat([Buffer.from(d + '/'), Buffer.from([0xff, 0x41])]), 'x');
  const fd = fs.openSync(join(d, 'sparse'), 'w');
  fs.ftruncateSync(fd, 64 << 20);
  fs.closeSync(fd);
  fs.symlinkSync('a.txt', join(d, 'link'));
  fs.symlinkSync('nowhere', join(d, 'dangling'));
  execFileSync('mkfifo', [join(d, 'fifo')]);
  fs.linkSync(join(d, 'a.txt'), join(d, 'hard'));
  fs.writeFileSync(join(d, 'old'), 'o');
  execFileSync('touch', ['-h', '-d', '1969-12-30 12:00:00.25 UTC', join(d, 'old')]);
  fs.writeFileSync(join(d, 'ns'), 'n');
  fs.utimesSync(join(d, 'ns'), 1700000000.123456, 1700000000.123456);
  return d;
}

describe('directory listings', () => {
  const dir = build();

  it('native scanner is built (npm ci builds it with node-gyp)', () => {
    expect(nativeScanner, 'engines/file/native was not built: run "npm run install"').toBe(true);
  });

  it('native and node:fs listings are equal, sorted, and match lstat field by field', async () => {
    const a = await listDir(dir);
    const b = listDirSync(dir);
    // A name that is not UTF-8 decodes lossily (U+FFFD): node:fs cannot lstat it by
    // that name (ENOENT), the native scanner stats the raw bytes. Both keep the entry.
    const lossy = (e: { name: string }) => e.name.includes('\uFFFD');
    expect(b.filter(lossy)).toEqual([{ name: '\uFFFDA', st: undefined, code: 'ENOENT' }]);
    expect(a.filter(lossy).map((e) => [e.name, e.code, e.st?.size])).toEqual([['\uFFFDA', undefined, 1]]);
    expect(a.filter((e) => !lossy(e))).toEqual(b.filter((e) => !lossy(e)));
    const names = a.map((e) => e.name);
    expect(names).toEqual([...names].sort());
    expect(names.length).toBe(fs.readdirSync(dir).length);
    for (const e of a.filter((x) => !lossy(x))) {
      expect(e.code).toBeUndefined();
      expect(e.st).toEqual(entryStat(fs.lstatSync(join(dir, e.name), { bigint: true })));
    }
    const by = new Map(a.map((e) => [e.name, e.st!]));
    expect(by.get('hard')!.nlink).toBe(2);
    expect(by.get('hard')!.ino).toBe(by.get('a.txt')!.ino);
    expect(by.get('link')!.mode & 0o170000).toBe(0o120000);
    expect(by.get('sparse')!.blocks * 512).toBeLessThan(by.get('sparse')!.size);
    expect(BigInt(by.get('old')!.mtimeNs)).toBeLessThan(0n);
    expect(by.get('ns')!.mtimeNs).toBe(fs.lstatSync(join(dir, 'ns'), { bigint: true }).mtimeNs.toString());
  });

  it('reports a missing directory and a file with their codes', async () => {
    await expect(listDir(join(dir, 'missing'))).rejects.toMatchObject({ code: 'ENOENT' });
    await expect(listDir(join(dir, 'a.txt'))).rejects.toMatchObject({ code: 'ENOTDIR' });
    expect(() => listDirSync(join(dir, 'missing'))).toThrow(expect.objectContaining({ code: 'ENOENT' }));
    expect(() => listDirSync(join(dir, 'a.txt'))).toThrow(expect.objectContaining({ code: 'ENOTDIR' }));
  });

  it('nsString prints seconds and nanoseconds as BigInt arithmetic does', () => {
    for (const [s, n] of [[0, 0], [0, 5], [1, 1], [1700000000, 123456789], [4102444800, 999999999], [-1, 999999999], [-86401, 750000000]] as const) {
      expect(nsString(s, n)).toBe((BigInt(s) * 1_000_000_000n + BigInt(n)).toString());
    }
  });
});
