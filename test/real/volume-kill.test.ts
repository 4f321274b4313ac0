// A volume backup killed with SIGKILL (no unwinding, no signal handler) at each phase — while the
// snapshot is being copied, while the temporary volume is being cloned, while the connector
// attaches it, while the file engine reads it, while the backup is committed — then
// `permafrost cleanup`, which must report what it removed and leave nothing: no loop device, no
// mount, no helper process, no temporary volume or snapshot (the pool holds only the source
// volume, and no partial copy), no open catalog resource; the backup's catalog row is failed
// (or complete, when the kill came after the manifest); `check --read-data` passes; and the next
// backup succeeds.
//
// Kill points are picked from the -v stderr lines of the backup ("creating snapshot", "creating
// temporary volume", "running …/local-attach", "(file engine)", "committing"), on a 1 GiB volume
// holding ~540 MiB, so that each phase lasts long enough to be hit.
//
// Needs root (loop devices, mkfs, mount); skips with a printed reason otherwise. Run alone with:
//   PERMAFROST_TEST_LAB=off npx vitest run test/real/volume-kill
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { randomBytes } from 'node:crypto';
import { existsSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { CLEAN, MiB, type VolumeLab as Lab, VolumeLab, fillTree, mountsUnder, processesMentioning, rootSkipReason, withMounted } from '../helpers/volumes.js';

const reason = rootSkipReason(['losetup', 'blkid', 'mkfs.ext4', 'setfattr']);
if (reason) console.warn(`test/real/volume-kill: skipped: ${reason}`);

interface KillPoint {
  phase: string;
  /** stderr line (-v) that starts the phase. */
  line: RegExp;
  /** Wait this long after the line before SIGKILL. */
  delayMs: number;
  /** Resource kinds cleanup must report as removed (at least). */
  removed: string[];
}

const points: KillPoint[] = [
  { phase: 'snapshot', line: /: creating snapshot /, delayMs: 150, removed: ['snapshot'] },
  { phase: 'clone', line: /: creating temporary volume /, delayMs: 150, removed: ['volume', 'snapshot'] },
  { phase: 'attach', line: /running \S*scripts\/local-attach/, delayMs: 0, removed: ['attachment', 'volume', 'snapshot'] },
  { phase: 'engine', line: /: full \(file engine\)/, delayMs: 300, removed: ['mount', 'device', 'attachment', 'volume', 'snapshot'] },
  { phase: 'commit', line: /: committing/, delayMs: 0, removed: ['mount', 'device', 'attachment', 'volume', 'snapshot'] },
];

describe.skipIf(reason !== undefined)('volume backup killed with SIGKILL, then permafrost cleanup', () => {
  let lab: Lab;
  let volumeId: string;
  const log: string[] = [];

  beforeAll(async () => {
    lab = await VolumeLab.create('kill');
    const vol = await lab.createVolume('big', '1G', 'ext4');
    volumeId = vol.id;
    await withMounted(lab.image(vol.id), join(lab.dir, 'mnt'), (root) => {
      fillTree(root, { randomMiB: 24 });
      for (let i = 0; i < 5; i++) writeFileSync(join(root, `srv/data/bulk-${i}.bin`), randomBytes(100 * MiB));
    });
  }, 300_000);

  afterAll(async () => {
    if (log.length) console.log(`volume-kill:\n  ${log.join('\n  ')}`);
    await lab?.close();
  });

  /** Start a backup, SIGKILL it `delayMs` after the first stderr line matching `line`. */
  const killDuring = async (p: KillPoint): Promise<{ job: string; lastLine: string; state: string }> => {
    let job: string | undefined;
    let resolveSeen: () => void;
    const seen = new Promise<void>((r) => (resolveSeen = r));
    let last = '';
    const run = lab.spawn(['-v', 'backup', '--volume', 'big'], (l) => {
      last = l;
      job ??= /backup ([0-9a-f]{16})/.exec(l)?.[1];
      if (p.line.test(l)) resolveSeen();
    });
    const ended = run.exited.then((code) => {
      throw new Error(`backup ended (exit ${code}) before the ${p.phase} phase:\n${run.stderr()}`);
    });
    await Promise.race([seen, ended, sleep(180_000).then(() => Promise.reject(new Error(`no "${p.line}" line in 180 s:\n${run.stderr()}`)))]);
    if (p.delayMs) await sleep(p.delayMs);
    // What was going on at the kill, for the log.
    const left = await lab.leftovers();
    const state = `snapshots [${left.snapshots.join(', ')}], temporary volumes [${left.temporaryVolumes.join(', ')}], loops ${left.loops.length}, mounts ${left.mounts.length}, partial copies ${left.poolFiles.filter((f) => f.endsWith('.tmp')).length}`;
    run.child.kill('SIGKILL');
    ended.catch(() => undefined);
    await run.exited;
    expect(job, run.stderr()).toBeDefined();
    return { job: job!, lastLine: last, state };
  };

  /** Helper processes of the killed run (a connector script it started) finish on their own; wait for them. */
  const quiet = async (): Promise<void> => {
    for (let i = 0; i < 100 && processesMentioning(lab.dir).length > 0; i++) await sleep(100);
    expect(processesMentioning(lab.dir)).toEqual([]);
  };

  it.each(points)('killed during $phase: cleanup removes everything, the row is failed, the repository checks clean', async (p) => {
    const { job, lastLine, state } = await killDuring(p);
    await quiet();

    const c = await lab.cli(['cleanup'], { json: true });
    expect(c.code, c.stderr).toBe(0);
    const report = c.json as { removed: { kind: string; ref: string; job: string }[]; failed: unknown[]; interruptedBackups: string[] };
    log.push(`${p.phase}: killed after "${lastLine.slice(0, 90)}" with ${state}; cleanup removed ${report.removed.map((r) => r.kind).join(', ') || 'nothing'}`);
    expect(report.failed).toEqual([]);
    expect(report.interruptedBackups).toContain(job);
    const kinds = new Set(report.removed.map((r) => r.kind));
    for (const k of p.removed) expect([...kinds], `${p.phase}: removed ${JSON.stringify(report.removed)}`).toContain(k);

    // Nothing left: no loop, mount, helper process, temporary volume, snapshot, partial copy, state dir, open resource.
    expect(await lab.leftovers()).toEqual(CLEAN);
    expect(lab.catalogOpen()).toEqual({ resources: [], running: [] });
    expect(await lab.volumeNames()).toEqual(['big']);
    expect((await lab.volume(volumeId)).status).toBe('available');

    // The backup's row: failed (interrupted), unless the kill came after its manifest was written.
    const listed = await lab.ok(['list', '--volume-id', volumeId]);
    const row = (listed.backups as { id: string; status: string; reason: string | null }[]).find((b) => b.id === job);
    expect(row, JSON.stringify(listed.backups)).toBeDefined();
    if (p.phase === 'commit') expect(['failed', 'complete']).toContain(row!.status);
    else expect(row).toMatchObject({ status: 'failed', reason: expect.stringMatching(/interrupted/) });
    if (row!.status === 'complete') log.push(`${p.phase}: the manifest was already written; the backup is complete`);

    const check = await lab.cli(['check', '--read-data']);
    expect(check.code, check.stderr + check.stdout).toBe(0);

    // A second cleanup finds nothing.
    const again = await lab.cli(['cleanup']);
    expect(again.code).toBe(0);
    expect(again.stdout).toMatch(/nothing to clean up/);
  }, 300_000);

  it('the next backup succeeds, and an incremental after it', async () => {
    const b = await lab.ok(['backup', '--volume', 'big']);
    expect(b).toMatchObject({ engine: 'file', partial: false });
    expect(b.stats.bytesTotal).toBeGreaterThan(500 * MiB);
    log.push(`backup after the kills: ${(b.durationMs / 1000).toFixed(1)} s for ${Math.round(b.stats.bytesTotal / MiB)} MiB (${b.parent ? `incremental on ${b.parent}` : 'full'})`);
    const i = await lab.ok(['backup', '--volume', 'big']);
    expect(i).toMatchObject({ parent: b.id, partial: false });
    expect(i.stats.filesRead).toBe(0);
    expect((await lab.cli(['check', '--read-data'])).code).toBe(0);
    expect(await lab.leftovers()).toEqual(CLEAN);
    expect(lab.catalogOpen()).toEqual({ resources: [], running: [] });
  }, 300_000);

  it('SIGTERM during the engine run: the job unwinds by itself (exit 130), nothing is left and cleanup finds nothing', async () => {
    let started: () => void;
    const seen = new Promise<void>((r) => (started = r));
    const run = lab.spawn(['-v', 'backup', '--volume', 'big', '--full'], (l) => {
      if (/\(file engine\)/.test(l)) started();
    });
    await Promise.race([seen, run.exited.then(() => Promise.reject(new Error(run.stderr())))]);
    // Soon after the engine starts: a full backup of the ~540 MiB takes well over a second even
    // from a warm cache, but not much more on a fast machine.
    await sleep(200);
    run.child.kill('SIGTERM');
    expect(await run.exited, `the backup must still have been running when SIGTERM came:\n${run.stderr()}`).toBe(130);
    expect(run.stderr()).toMatch(/SIGTERM received: stopping cleanly/);
    expect(await lab.leftovers()).toEqual(CLEAN);
    expect(lab.catalogOpen()).toEqual({ resources: [], running: [] });
    const c = await lab.cli(['cleanup']);
    expect(c.stdout).toMatch(/nothing to clean up/);
  }, 300_000);

  it('a restore killed while it writes files: cleanup detaches and deletes the half-restored volume', async () => {
    const last = (await lab.ok(['list', '--volume-id', volumeId, '--status', 'complete'])).backups.at(-1) as { id: string };
    let started: () => void;
    const seen = new Promise<void>((r) => (started = r));
    const run = lab.spawn(['-v', 'restore', last.id, '--to-volume', 'new', '--name', 'half-restored'], (l) => {
      if (/created ext4 on/.test(l)) started();
    });
    await Promise.race([seen, run.exited.then(() => Promise.reject(new Error(run.stderr())))]);
    // Kill as soon as the first bulk file appears on the mounted target: the restore is then
    // writing (~500 MiB still to go), whatever the speed of the machine. A fixed delay after mkfs
    // stopped hitting the writing phase once restores got fast.
    let exited = false;
    void run.exited.then(() => (exited = true));
    const writing = (): boolean => mountsUnder(lab.dir).some((m) => existsSync(join(m, 'srv/data')) && readdirSync(join(m, 'srv/data')).some((f) => f.startsWith('bulk-')));
    for (let i = 0; i < 3000 && !exited && !writing(); i++) await sleep(5);
    expect(exited, `the restore finished before it could be killed while writing:\n${run.stderr()}`).toBe(false);
    run.child.kill('SIGKILL');
    await run.exited;
    expect(await lab.volumeNames()).toEqual(['big', 'half-restored']);
    expect((await lab.leftovers()).mounts.length).toBe(1);
    for (let i = 0; i < 100 && processesMentioning(lab.dir).length > 0; i++) await sleep(100);

    const c = await lab.cli(['cleanup'], { json: true });
    expect(c.code, c.stderr).toBe(0);
    expect(c.json.failed).toEqual([]);
    expect(new Set((c.json.removed as { kind: string }[]).map((r) => r.kind))).toEqual(new Set(['mount', 'device', 'attachment', 'volume']));
    log.push(`restore killed while writing: cleanup removed ${(c.json.removed as { kind: string }[]).map((r) => r.kind).join(', ')}`);
    expect(await lab.volumeNames()).toEqual(['big']);
    expect(await lab.leftovers()).toEqual(CLEAN);
    expect(lab.catalogOpen()).toEqual({ resources: [], running: [] });
  }, 300_000);
});
