import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { loadConfig, parseIni, parseSize, renderExample } from '../../src/config/config.js';
import { SCHEMA } from '../../src/config/schema.js';
import { ConfigError, ExitCode } from '../../src/errors.js';

function iniFile(text: string): string {
  const p = join(mkdtempSync(join(tmpdir(), 'pf-ini-')), 'agent.ini');
  writeFileSync(p, text);
  return p;
}

describe('config', () => {
  it('agent.ini.example documents every key with its default, and nothing else', () => {
    const example = readFileSync(new URL('../../agent.ini.example', import.meta.url), 'utf8');
    expect(example).toBe(renderExample());
    for (const k of SCHEMA) expect(example).toContain(`${k.default !== undefined ? '' : ';'}${k.name} =`);
    // The example itself parses (with the defaults uncommented).
    expect(() => loadConfig({ path: iniFile(example), env: {} })).not.toThrow();
  });

  it('command line beats environment beats file beats default', () => {
    const path = iniFile('[repository]\nurl = /from/file\ncompression_level = 5\n[agent]\nconcurrency = 4\n');
    const c = loadConfig({ path, env: { PERMAFROST_REPO: '/from/env', PERMAFROST_CONCURRENCY: '7' }, cli: { 'repository.url': '/from/cli' } });
    expect(c.get('repository', 'url')).toBe('/from/cli');
    expect(c.int('agent', 'concurrency')).toBe(7);
    expect(c.int('repository', 'compression_level')).toBe(5);
    expect(c.get('agent', 'state_dir')).toBe('/var/lib/permafrost');
    expect(c.where('repository', 'compression_level')).toBe(`${path}:3`);
  });

  it.each([
    ['a line that is not key = value', '[agent]\nthis is not ini\n', /agent.ini:2: expected "key = value"/],
    ['a key outside a section', 'url = x\n', /outside any \[section\]/],
    ['an unknown section', '[agnet]\nhost = x\n', /unknown section \[agnet\]/],
    ['an unknown key', '[agent]\nstate_dri = /x\n', /agent.ini:2: unknown key "state_dri"/],
    ['a bad integer', '[agent]\nconcurrency = ten\n', /must be an integer/],
    ['a bad enum', '[connector]\nattach_mode = magic\n', /one of auto, kernel, userspace/],
    ['a bad size', '[repository]\npack_size = big\n', /not a size/],
  ])('rejects %s with a ConfigError (exit 2)', (_what, text, msg) => {
    let err: unknown;
    try {
      loadConfig({ path: iniFile(text), env: {} });
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(ConfigError);
    expect((err as ConfigError).exitCode).toBe(ExitCode.usage);
    expect((err as Error).message).toMatch(msg);
  });

  it('a named config file must exist; the default one may be absent', () => {
    expect(() => loadConfig({ path: '/nonexistent/agent.ini', env: {} })).toThrow(ConfigError);
    expect(() => loadConfig({ env: { PERMAFROST_CONFIG: '/nonexistent/agent.ini' } })).toThrow(ConfigError);
  });

  it('parses sizes and quoted values', () => {
    expect(parseSize('16M', 'x')).toBe(16 << 20);
    expect(parseSize('2GiB', 'x')).toBe(2 * 2 ** 30);
    expect(parseIni('[s]\nk = "a b"\n', 'f').s!.k!.value).toBe('a b');
  });
});
