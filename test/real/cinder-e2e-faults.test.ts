/**
 * Cinder faults end to end, through the CLI, against the real lab: bad credentials (exit 12, the
 * password never printed, not even in --json), an unknown --os-cloud (exit 2) next to a working
 * clouds.yaml, a volume or snapshot that does not exist (exit 13), SIGTERM in the middle of a
 * backup (exit 130, everything temporary removed by the job itself), and `kill -9` in the middle
 * of a backup: the temporary snapshot, volume and attachment, the qemu-storage-daemon (or rbd-fuse)
 * process, the loop device and the mount stay behind, and `permafrost cleanup --provider cinder`
 * finds and removes all of them; the repository then checks clean and takes the next backup.
 *
 * Skips with a printed reason when not root or the lab cannot come up; everything created in the
 * cloud is removed in afterAll.
 */
import { randomBytes } from 'node:crypto';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { listMounts } from '../../src/util/mounts.js';
import type { CinderVolumeProvider } from '../../src/volume/cinder/provider.js';
import type { VolumeRecord } from '../../src/volume/provider.js';
import {
  type CliRun,
  Janitor,
  cliEnv,
  createVolume,
  describeRun,
  endSuite,
  ensureQuotas,
  loopsUnder,
  osEnv,
  processesMatching,
  provider,
  runCli,
  sleep,
  suiteLab,
  suiteWork,
  tempLeftovers,
  withMounted,
} from '../helpers/cinder.js';

const RUN = `pf-e2f-${randomBytes(3).toString('hex')}`;
const HOST = `${RUN}-node`;
const MiB = 1024 * 1024;

const { cl, skip } = await suiteLab('cinder-e2e-faults', ['cinder']);

let admin: CinderVolumeProvider;
const janitor = new Janitor();
let work: string;
let state: string;
let repo: string;
/** An ext4 volume with enough data (320 MiB, incompressible) that a backup takes a few seconds. */
let big: VolumeRecord;
const timings: Record<string, number> = {};

function env(extra: Record<string, string> = {}, creds = true): Record<string, string> {
  return cliEnv(cl, { ...(creds ? osEnv(cl.admin) : {}), PERMAFROST_HOST: HOST, PERMAFROST_CONFIG: join(work, 'empty.ini'), ...extra });
}

function pf(args: string[], o: { env?: Record<string, string>; cwd?: string; onSpawn?: (pid: number) => void } = {}): Promise<CliRun> {
  return runCli(['--repo', repo, '--state-dir', state, ...args], o.env ?? env(), { cwd: o.cwd, onSpawn: o.onSpawn });
}

/** What a backup of this suite left on this node and in the cloud. */
async function leftovers() {
  return {
    cloud: await tempLeftovers(admin, { host: HOST }),
    processes: processesMatching(join(state, 'run')).map((p) => p.cmd),
    loops: loopsUnder(join(state, 'run')),
    mounts: (await listMounts(state)).map((m) => m.mountPoint),
  };
}

const NOTHING = { cloud: [], processes: [], loops: [], mounts: [] };

/** Start a backup of `big` and run `act(pid)` once its filesystem is mounted (the engine is reading). */
async function backupInterrupted(act: (pid: number) => void): Promise<CliRun> {
  let pid = 0;
  const running = pf(['--json', 'backup', '--provider', 'cinder', '--volume-id', big.id, '--full'], { onSpawn: (p) => (pid = p) });
  const t0 = Date.now();
  let acted = false;
  while (Date.now() - t0 < 180_000) {
    if ((await listMounts(join(state, 'mnt'))).length > 0) {
      act(pid);
      acted = true;
      break;
    }
    await sleep(50);
  }
  const r = await running;
  expect(acted, `the backup never mounted the volume\n${describeRun(r)}`).toBe(true);
  return r;
}

beforeAll(async () => {
  if (skip) return;
  admin = await provider(cl.admin);
  await ensureQuotas(admin, [(await admin.info()).projectId!]);
  ({ work, state, repo } = suiteWork('pf-cinder-e2f-'));
  const init = await pf(['init']);
  if (init.code !== 0) throw new Error(describeRun(init));
  big = await createVolume(admin, janitor, { name: `${RUN}-big`, size: 1 });
  const t0 = Date.now();
  await withMounted(cl, admin, big.id, { stateDir: join(work, 'helper'), mkfsType: 'ext4' }, async (dir) => {
    mkdirSync(join(dir, 'data'));
    for (let i = 0; i < 10; i++) writeFileSync(join(dir, 'data', `part-${i}.bin`), randomBytes(32 * MiB));
  });
  timings['write 320 MiB through the attach path'] = Date.now() - t0;
}, 600_000);

afterAll(async () => {
  if (skip) return;
  await endSuite({ name: 'cinder-e2e-faults', run: RUN, host: HOST, admin, janitor, work, timings, cleanup: () => pf(['cleanup', '--provider', 'cinder']) });
}, 900_000);

describe.skipIf(skip !== undefined)('cinder faults (CLI against the lab)', () => {
  it('wrong password: exit 12, the password appears nowhere (stdout, stderr, --json)', async () => {
    const wrong = `Wr0ng-${randomBytes(6).toString('hex')}`;
    for (const json of [false, true]) {
      const r = await pf([...(json ? ['--json'] : []), 'backup', '--provider', 'cinder', '--volume-id', big.id], { env: env({ OS_PASSWORD: wrong }) });
      expect(r.code, describeRun(r)).toBe(12);
      expect(r.stdout + r.stderr).not.toContain(wrong);
      expect(r.stderr).toMatch(/rejected the credentials of user admin/);
      if (json) expect(r.json.error).toMatchObject({ code: 'auth', exitCode: 12 });
    }
    // The same through clouds.yaml (--os-cloud), and with --verbose (debug logging).
    writeFileSync(
      join(work, 'clouds.yaml'),
      `clouds:\n  lab-wrong:\n    auth:\n      auth_url: ${cl.admin.authUrl}\n      username: admin\n      password: ${wrong}\n      project_name: admin\n      user_domain_name: Default\n      project_domain_name: Default\n    region_name: RegionOne\n`,
    );
    const r = await pf(['--json', '--verbose', 'list', '--provider', 'cinder'], { env: env({}, false) });
    expect(r.code, describeRun(r)).toBe(0); // list never talks to the cloud
    const c = await pf(['--json', '--verbose', 'cleanup', '--provider', 'cinder', '--os-cloud', 'lab-wrong'], { env: env({}, false), cwd: work });
    expect(c.code, describeRun(c)).toBe(12);
    expect(c.stdout + c.stderr).not.toContain(wrong);
    await expect(tempLeftovers(admin, { host: HOST })).resolves.toEqual([]);
  });

  it('--os-cloud: a known cloud works, an unknown one is a usage error (exit 2) naming the known ones', async () => {
    writeFileSync(
      join(work, 'clouds.yaml'),
      `clouds:\n  lab:\n    auth:\n      auth_url: ${cl.admin.authUrl}\n      username: ${cl.admin.username}\n      password: ${cl.admin.password}\n      project_name: ${cl.admin.projectName}\n      user_domain_name: Default\n      project_domain_name: Default\n    region_name: RegionOne\n    identity_api_version: 3\n`,
    );
    const good = await pf(['--json', 'cleanup', '--provider', 'cinder', '--os-cloud', 'lab'], { env: env({}, false), cwd: work });
    expect(good.code, describeRun(good)).toBe(0);
    const bad = await pf(['--json', 'backup', '--provider', 'cinder', '--volume-id', big.id, '--os-cloud', 'no-such-cloud'], { env: env({}, false), cwd: work });
    expect(bad.code, describeRun(bad)).toBe(2);
    expect(bad.json.error.message).toMatch(/cloud "no-such-cloud" not found in .*clouds\.yaml; known clouds: lab/);
    expect(bad.stdout + bad.stderr).not.toContain(cl.admin.password);
  });

  it('a volume or snapshot that does not exist: exit 13', async () => {
    for (const args of [
      ['--volume-id', '00000000-1111-2222-3333-444444444444'],
      ['--volume-name', `${RUN}-no-such-volume`],
      ['--volume-id', big.id, '--snapshot-id', '00000000-1111-2222-3333-555555555555'],
    ]) {
      const r = await pf(['--json', 'backup', '--provider', 'cinder', ...args]);
      expect(r.code, describeRun(r)).toBe(13);
      expect(r.json.error.code).toBe('not_found');
      expect(r.json.error.message).toMatch(/not found/);
    }
    expect(await leftovers()).toEqual(NOTHING);
  });

  it('SIGTERM during a backup: exit 130, nothing committed, everything temporary removed by the job', async () => {
    const r = await backupInterrupted((pid) => process.kill(pid, 'SIGTERM'));
    expect(r.code, describeRun(r)).toBe(130);
    expect(r.json?.error?.code).toBe('interrupted');
    expect(await leftovers()).toEqual(NOTHING);
    expect((await admin.getVolume(big.id)).status).toBe('available');
    const list = await pf(['--json', 'list', '--volume-id', big.id]);
    expect((list.json.backups as { status: string }[]).map((b) => b.status)).toEqual(['failed']);
  });

  it('kill -9 during a backup leaves snapshot, volume, attachment, daemon, loop and mount; `cleanup --provider cinder` removes them all', async () => {
    const r = await backupInterrupted((pid) => process.kill(pid, 'SIGKILL'));
    expect(r.code).toBe(137);
    const left = await leftovers();
    expect(left.cloud.filter((x) => x.startsWith('volume permafrost-tmp-')), JSON.stringify(left)).toHaveLength(1);
    expect(left.cloud.filter((x) => x.startsWith('snapshot permafrost-tmp-')), JSON.stringify(left)).toHaveLength(1);
    expect(left.cloud.find((x) => x.startsWith('volume '))).toMatch(/ in-use$/); // still attached to this node
    expect(left.processes.length + left.loops.length, JSON.stringify(left)).toBeGreaterThan(0);
    expect(left.loops).toHaveLength(1);
    // The filesystem's mount (and, with qemu-storage-daemon, its FUSE export under run/).
    expect(left.mounts.filter((m) => m.startsWith(join(state, 'mnt')))).toHaveLength(1);

    const c = await pf(['--json', 'cleanup', '--provider', 'cinder']);
    timings['cleanup after kill -9'] = c.ms;
    expect(c.code, describeRun(c)).toBe(0);
    const kinds = (c.json.removed as { kind: string }[]).map((x) => x.kind);
    for (const k of ['mount', 'device', 'attachment', 'volume', 'snapshot']) expect(kinds, describeRun(c)).toContain(k);
    expect(c.json.failed).toEqual([]);
    expect(c.json.interruptedBackups).toHaveLength(1);
    expect(await leftovers()).toEqual(NOTHING);
    expect((await admin.getVolume(big.id)).status).toBe('available');

    // Idempotent, and the repository is fine: it checks clean and takes the next backup.
    const again = await pf(['--json', 'cleanup', '--provider', 'cinder']);
    expect(again.code, describeRun(again)).toBe(0);
    expect(again.json.removed).toEqual([]);
    const check = await pf(['check']);
    expect(check.code, describeRun(check)).toBe(0);
    const b = await pf(['--json', 'backup', '--provider', 'cinder', '--volume-id', big.id]);
    timings['cold backup ext4 1 GiB with 320 MiB of files'] = b.ms;
    expect(b.code, describeRun(b)).toBe(0);
    expect(b.json.stats.bytesTotal).toBe(320 * MiB);
    expect(await leftovers()).toEqual(NOTHING);
  });

  it('kill -9, then the catalog is lost too: cleanup finds the cloud leftovers by their tags (and the device by its state dir)', async () => {
    const r = await backupInterrupted((pid) => process.kill(pid, 'SIGKILL'));
    expect(r.code).toBe(137);
    const left = await leftovers();
    expect(left.cloud, JSON.stringify(left)).toHaveLength(2);
    rmSync(join(state, 'catalog.db'), { force: true });
    rmSync(join(state, 'catalog.db-wal'), { force: true });
    rmSync(join(state, 'catalog.db-shm'), { force: true });

    const c = await pf(['--json', 'cleanup', '--provider', 'cinder']);
    expect(c.code, describeRun(c)).toBe(0);
    const removed = c.json.removed as { kind: string; ref: string }[];
    expect(removed.filter((x) => x.kind === 'volume' || x.kind === 'snapshot').map((x) => x.kind).sort(), describeRun(c)).toEqual(['snapshot', 'volume']);
    expect(c.json.failed).toEqual([]);
    expect(await leftovers()).toEqual(NOTHING);
    expect((await admin.getVolume(big.id)).status).toBe('available');
  });
});
