/**
 * Cinder batch backups end to end, through the CLI, against the real lab: --group-id (a generic
 * volume group made through the API), --project as the demo user, --all-tenants as demo (refused,
 * exit 12), --select/--skip-metadata, concurrency 3 with one line per volume, and the exit codes
 * 0 (all), 3 (some) and the failure's own code (none) — with a volume in Cinder's `error` state
 * (its type names a backend that does not exist) and a volume deleted between the selection and
 * its backup. After every batch nothing temporary is left in any project.
 *
 * The volumes are clones of a small ext4 volume whose content was written through the attach path,
 * so each backup is quick. Every batch also selects on a metadata tag of this run, so that volumes
 * of suites running at the same time are never picked up. Skips with a printed reason when not
 * root or the lab cannot come up; everything created in the cloud is removed in afterAll.
 */
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { CinderVolumeProvider } from '../../src/volume/cinder/provider.js';
import { createGroup, createGroupType, getGroup } from '../../src/volume/cinder/resources.js';
import type { VolumeRecord } from '../../src/volume/provider.js';
import {
  type CliRun,
  type Creds,
  Janitor,
  cliEnv,
  createVolume,
  describeRun,
  endSuite,
  ensureQuotas,
  osEnv,
  provider,
  runCli,
  sleep,
  suiteLab,
  suiteWork,
  tempLeftovers,
  withMounted,
  writeContent,
} from '../helpers/cinder.js';

const RUN = `pf-e2b-${randomBytes(3).toString('hex')}`;
const HOST = `${RUN}-node`;

const { cl, skip } = await suiteLab('cinder-e2e-batch', ['cinder']);

let admin: CinderVolumeProvider;
let demo: CinderVolumeProvider;
const janitor = new Janitor();
let work: string;
let state: string;
let repo: string;
/** Small ext4 templates (admin's, demo's) the batch volumes are cloned from. */
let template: VolumeRecord;
let demoTemplate: VolumeRecord;
const timings: Record<string, number> = {};

function pf(args: string[], o: { as?: Creds; onSpawn?: (pid: number) => void } = {}): Promise<CliRun> {
  return runCli(
    ['--repo', repo, '--state-dir', state, ...args],
    cliEnv(cl, { ...osEnv(o.as ?? cl.admin), PERMAFROST_HOST: HOST, PERMAFROST_CONFIG: join(work, 'empty.ini') }),
    { onSpawn: o.onSpawn },
  );
}

/** A clone of a template, with metadata (registered with the janitor unless it is in a group). */
async function clone(p: CinderVolumeProvider, from: VolumeRecord, name: string, metadata: Record<string, string>, groupId?: string): Promise<VolumeRecord> {
  const v = await p.client.createVolume({ size: from.size, name: `${RUN}-${name}`, source_volid: from.id, metadata, ...(groupId ? { group_id: groupId, volume_type: '__DEFAULT__' } : {}) });
  // Members of a group cannot be deleted one by one: the group's delete takes them.
  if (!groupId) janitor.volume(p, v.id);
  await p.waitVolume(v.id, ['available']);
  return p.getVolume(v.id);
}

/** Batch result lines on stderr ("✓ name (id): …" / "✗ name (id): …"), one per volume. */
function resultLines(r: CliRun): string[] {
  return r.stderr.split('\n').filter((l) => l.includes('✓ ') || l.includes('✗ '));
}

async function assertNothingLeft(): Promise<void> {
  expect(await tempLeftovers(admin, { host: HOST })).toEqual([]);
}

beforeAll(async () => {
  if (skip) return;
  admin = await provider(cl.admin);
  demo = await provider(cl.demo);
  await ensureQuotas(admin, [(await admin.info()).projectId!, (await demo.info()).projectId!]);
  ({ work, state, repo } = suiteWork('pf-cinder-e2b-'));
  const init = await pf(['init']);
  if (init.code !== 0) throw new Error(describeRun(init));
  const make = async (p: CinderVolumeProvider, name: string) => {
    const v = await createVolume(p, janitor, { name: `${RUN}-${name}`, size: 1 });
    await withMounted(cl, p, v.id, { stateDir: join(work, 'helper'), mkfsType: 'ext4' }, async (dir) => writeContent(dir, name, { bigMiB: 1 }));
    return p.getVolume(v.id);
  };
  [template, demoTemplate] = await Promise.all([make(admin, 'template'), make(demo, 'demo-template')]);
}, 600_000);

afterAll(async () => {
  if (skip) return;
  await endSuite({ name: 'cinder-e2e-batch', run: RUN, host: HOST, admin, janitor, work, timings, cleanup: () => pf(['cleanup', '--provider', 'cinder']) });
}, 900_000);

describe.skipIf(skip !== undefined)('cinder batch backups (CLI against the lab)', () => {
  it('--group-id: every volume of a volume group (made through the API), none outside it; exit 0', async () => {
    const gt = await createGroupType(admin.client, `${RUN}-gt`);
    janitor.groupType(admin, gt.id);
    const g = await createGroup(admin.client, { name: `${RUN}-group`, groupType: gt.id, volumeTypes: ['__DEFAULT__'] });
    janitor.group(admin, g.id);
    for (let i = 0; i < 120 && (await getGroup(admin.client, g.id)).status !== 'available'; i++) await sleep(500);
    const members = await Promise.all([clone(admin, template, 'g1', { e2e: RUN }, g.id), clone(admin, template, 'g2', { e2e: RUN }, g.id)]);
    const outside = await clone(admin, template, 'not-in-group', { e2e: RUN });
    expect(members.map((m) => m.groupId)).toEqual([g.id, g.id]);

    const r = await pf(['--json', 'backup', '--provider', 'cinder', '--group-id', g.id, '--concurrency', '3']);
    timings['group of 2'] = r.ms;
    expect(r.code, describeRun(r)).toBe(0);
    expect(r.json).toMatchObject({ volumes: 2, succeeded: 2, failed: 0 });
    const ids = (r.json.results as { volumeId: string }[]).map((x) => x.volumeId).sort();
    expect(ids).toEqual(members.map((m) => m.id).sort());
    expect(ids).not.toContain(outside.id);
    expect((r.json.results as { ok: boolean; backupId: string }[]).every((x) => x.ok && /^[0-9a-f]{16}$/.test(x.backupId))).toBe(true);
    await assertNothingLeft();
  });

  it('--project as the demo user, concurrency 3: its own volumes only, one line per volume, backups overlap, repository checks clean; exit 0', async () => {
    const mine = await Promise.all([1, 2, 3].map((i) => clone(demo, demoTemplate, `demo-${i}`, { 'e2e-proj': RUN })));
    // Same tag in the admin's project: --project must not reach it.
    const foreign = await clone(admin, template, 'admin-same-tag', { 'e2e-proj': RUN });
    const r = await pf(['backup', '--provider', 'cinder', '--project', '--select', `e2e-proj=${RUN}`, '--concurrency', '3'], { as: cl.demo });
    timings['project of 3 (demo), concurrency 3'] = r.ms;
    expect(r.code, describeRun(r)).toBe(0);
    const out = resultLines(r);
    expect(out, describeRun(r)).toHaveLength(3);
    for (const v of mine) expect(out.filter((l) => l.includes(v.id) && l.includes('✓'))).toHaveLength(1);
    expect(r.stderr).not.toContain(foreign.id);
    expect(r.stdout).toMatch(/3 of 3 volumes backed up/);
    expect(r.stderr).toMatch(/backing up 3 volumes, 3 at a time/);

    // The per-volume durations ("… in 12.3 s") add up to well over the batch's wall time: they ran at the same time.
    const durations = out.map((l) => {
      const m = / in (\d+(?:\.\d+)?) s$| in (\d+) min (\d+) s$| in (\d+) ms$/.exec(l);
      expect(m, l).not.toBeNull();
      return m![1] ? Number(m![1]) * 1000 : m![2] ? (Number(m![2]) * 60 + Number(m![3])) * 1000 : Number(m![4]);
    });
    const sum = durations.reduce((a, x) => a + x, 0);
    expect(sum, `sum of durations ${sum} ms, wall ${r.ms} ms`).toBeGreaterThan(1.3 * r.ms);
    await assertNothingLeft();
    // Three backups wrote into one repository at the same time: it checks clean, data included.
    const check = await pf(['check', '--read-data']);
    expect(check.code, describeRun(check)).toBe(0);
  });

  it('--all-tenants as the demo user: a clear error, exit 12, nothing created', async () => {
    const r = await pf(['--json', 'backup', '--provider', 'cinder', '--all-tenants'], { as: cl.demo });
    expect(r.code, describeRun(r)).toBe(12);
    expect(r.json.error).toMatchObject({ code: 'auth', exitCode: 12 });
    expect(r.json.error.message).toMatch(/--all-tenants needs the admin role/);
    expect(r.json.error.message).toContain(cl.demo.username);
    await assertNothingLeft();
  });

  it('--all-tenants as admin with --select: volumes of every project that carry the tag', async () => {
    const a = await clone(admin, template, 'at-admin', { 'e2e-all': RUN });
    const d = await clone(demo, demoTemplate, 'at-demo', { 'e2e-all': RUN });
    const r = await pf(['--json', 'backup', '--provider', 'cinder', '--all-tenants', '--select', `e2e-all=${RUN}`, '--concurrency', '3']);
    expect(r.code, describeRun(r)).toBe(0);
    expect((r.json.results as { volumeId: string }[]).map((x) => x.volumeId).sort()).toEqual([a.id, d.id].sort());
    await assertNothingLeft();
  });

  it('--select backup=yes --skip-metadata skip-volume-backup=true', async () => {
    const yes = await clone(admin, template, 'sel-yes', { backup: 'yes', 'e2e-sel': RUN });
    const skipped = await clone(admin, template, 'sel-skip', { backup: 'yes', 'skip-volume-backup': 'true', 'e2e-sel': RUN });
    const untagged = await clone(admin, template, 'sel-none', { 'e2e-sel': RUN });
    const r = await pf(['--json', 'backup', '--provider', 'cinder', '--select', 'backup=yes', '--select', `e2e-sel=${RUN}`, '--skip-metadata', 'skip-volume-backup=true']);
    expect(r.code, describeRun(r)).toBe(0);
    const ids = (r.json.results as { volumeId: string }[]).map((x) => x.volumeId);
    expect(ids).toEqual([yes.id]);
    expect(ids).not.toContain(skipped.id);
    expect(ids).not.toContain(untagged.id);
    await assertNothingLeft();
  });

  it('a volume in error state: it fails with a clear message, the others go on; exit 3 (some) and its own code (none)', async () => {
    const bogus = await admin.client.call<{ volume_type: { id: string } }>('POST', '/types', {
      body: { volume_type: { name: `${RUN}-nowhere`, extra_specs: { volume_backend_name: 'no-such-backend' } } },
      what: 'create volume type',
    });
    janitor.volumeType(admin, bogus.volume_type.id);
    const good = await Promise.all([clone(admin, template, 'err-ok-1', { 'e2e-err': RUN }), clone(admin, template, 'err-ok-2', { 'e2e-err': RUN })]);
    const bad = await admin.createVolume({ name: `${RUN}-in-error`, size: 1, volumeType: `${RUN}-nowhere`, metadata: { 'e2e-err': RUN, 'e2e-none': RUN } });
    janitor.volume(admin, bad.id);
    await expect(admin.waitVolume(bad.id, ['available'])).rejects.toThrow(/went to status error/);

    const r = await pf(['--json', 'backup', '--provider', 'cinder', '--select', `e2e-err=${RUN}`, '--concurrency', '3']);
    expect(r.code, describeRun(r)).toBe(3);
    expect(r.json).toMatchObject({ volumes: 3, succeeded: 2, failed: 1 });
    const failed = (r.json.results as { volumeId: string; ok: boolean; error?: { message: string; exitCode: number } }[]).filter((x) => !x.ok);
    expect(failed.map((x) => x.volumeId)).toEqual([bad.id]);
    expect(failed[0]!.error!.message).toMatch(/is error; it must be available or in-use/);
    expect(failed[0]!.error!.exitCode).toBe(17);
    expect(good.every((g) => (r.json.results as { volumeId: string; ok: boolean }[]).some((x) => x.volumeId === g.id && x.ok))).toBe(true);
    await assertNothingLeft();

    const text = await pf(['backup', '--provider', 'cinder', '--select', `e2e-err=${RUN}`]);
    expect(text.code, describeRun(text)).toBe(3);
    expect(resultLines(text)).toHaveLength(3);
    expect(text.stdout).toMatch(/2 of 3 volumes backed up; failed: .*in-error/);

    const none = await pf(['--json', 'backup', '--provider', 'cinder', '--select', `e2e-none=${RUN}`]);
    expect(none.code, describeRun(none)).toBe(17);
    expect(none.json).toMatchObject({ volumes: 1, succeeded: 0, failed: 1 });
    await assertNothingLeft();
  });

  it('a volume deleted between the selection and its backup: that volume fails clearly, the batch goes on; exit 3', async () => {
    const vols = await Promise.all([1, 2, 3].map((i) => clone(admin, template, `race-${i}`, { 'e2e-race': RUN })));
    let deleted: string | undefined;
    let pid = 0;
    const running = pf(['--json', 'backup', '--provider', 'cinder', '--select', `e2e-race=${RUN}`, '--concurrency', '1'], { onSpawn: (p) => (pid = p) });
    // As soon as the batch has its selection, delete one volume whose backup has not started (no snapshot yet).
    const t0 = Date.now();
    while (!deleted && Date.now() - t0 < 120_000) {
      await sleep(200);
      const started = (await admin.client.listSnapshots({ allTenants: true, metadata: { 'permafrost:host': HOST } })).length > 0;
      if (!started) continue;
      for (const v of vols) {
        const snaps = await admin.client.listSnapshots({ filters: { volume_id: v.id } });
        if (snaps.length) continue;
        try {
          await admin.deleteVolume(v.id);
          deleted = v.id;
          break;
        } catch {
          // just being snapshotted: try another
        }
      }
    }
    const r = await running;
    expect(pid).toBeGreaterThan(0);
    expect(deleted, 'no volume could be deleted while the batch ran').toBeDefined();
    expect(r.code, describeRun(r)).toBe(3);
    expect(r.json).toMatchObject({ volumes: 3, succeeded: 2, failed: 1 });
    const failed = (r.json.results as { volumeId: string; ok: boolean; error?: { message: string } }[]).filter((x) => !x.ok);
    expect(failed.map((x) => x.volumeId)).toEqual([deleted]);
    expect(failed[0]!.error!.message).toMatch(new RegExp(`${deleted}.*(not found|deleting|deleted)|(not found|deleting).*${deleted}`));
    await assertNothingLeft();
  });
});
