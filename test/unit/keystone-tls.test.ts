import { execFileSync } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { type Server, createServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ConfigError, UnreachableError } from '../../src/errors.js';
import { HttpClient } from '../../src/volume/cinder/http.js';

let dir: string;
let server: Server | undefined;
let url = '';
let skip: string | undefined;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'pf-tls-'));
  try {
    execFileSync('openssl', [
      'req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '1', '-subj', '/CN=permafrost-test',
      '-addext', 'subjectAltName=IP:127.0.0.1', '-keyout', join(dir, 'key.pem'), '-out', join(dir, 'cert.pem'),
    ], { stdio: 'ignore' });
  } catch (err) {
    skip = `openssl cannot make a test certificate: ${(err as Error).message}`;
    console.warn(`[keystone-tls] skipped: ${skip}`);
    return;
  }
  server = createServer({ key: await readFile(join(dir, 'key.pem')), cert: await readFile(join(dir, 'cert.pem')) }, (_req, res) => {
    res.writeHead(200, { 'Content-Type': 'application/json' });
    res.end('{"ok":true}');
  });
  await new Promise<void>((r) => server!.listen(0, '127.0.0.1', r));
  url = `https://127.0.0.1:${(server.address() as AddressInfo).port}/`;
});
afterAll(async () => {
  if (server) await new Promise<void>((r) => server!.close(() => r()));
  await rm(dir, { recursive: true, force: true });
});

describe('TLS settings (OS_CACERT, OS_INSECURE)', () => {
  it('refuses an unknown CA with a hint', async (ctx) => {
    if (skip) return ctx.skip();
    const err = await new HttpClient().send({ method: 'GET', url }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(UnreachableError);
    expect((err as Error).message).toMatch(/TLS verification failed.*cacert/);
  });

  it('trusts the CA bundle given as cacert', async (ctx) => {
    if (skip) return ctx.skip();
    const res = await new HttpClient({ cacert: join(dir, 'cert.pem') }).send({ method: 'GET', url });
    expect(res.status).toBe(200);
    expect(res.json).toEqual({ ok: true });
  });

  it('insecure skips verification', async (ctx) => {
    if (skip) return ctx.skip();
    const res = await new HttpClient({ insecure: true }).send({ method: 'GET', url });
    expect(res.status).toBe(200);
  });

  it('a missing CA file is a ConfigError', async (ctx) => {
    if (skip) return ctx.skip();
    await expect(new HttpClient({ cacert: join(dir, 'nope.pem') }).send({ method: 'GET', url })).rejects.toBeInstanceOf(ConfigError);
  });
});
