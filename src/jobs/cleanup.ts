/**
 * permafrost cleanup: remove what crashed runs left behind. The catalog knows
 * every temporary resource a job recorded before creating it; resources of
 * jobs whose process is gone are removed newest first (mount → device →
 * attachment → temporary volume → snapshot). Then the provider is asked for
 * resources tagged with this host that the catalog does not know (the agent's
 * disk was lost), and stray mounts under the state directory are unmounted.
 */
import { rmdirSync } from 'node:fs';
import { join } from 'node:path';
import type { Catalog, ResourceRow } from '../catalog/catalog.js';
import type { AttachedDevice } from '../connectors/connector.js';
import { connectorFor } from '../connectors/index.js';
import { type ScriptConnectorOptions, detachOrphans } from '../connectors/script.js';
import { NotFoundError } from '../errors.js';
import { log } from '../util/log.js';
import { isProcessAlive } from '../util/process.js';
import { listMounts, umount } from '../util/mounts.js';
import type { VolumeProvider } from '../volume/provider.js';
import { JOB_KEY } from '../volume/temporary.js';

export interface CleanupReport {
  removed: { kind: string; ref: string; job: string }[];
  failed: { kind: string; ref: string; job: string; error: string }[];
  interruptedBackups: string[];
}

function alive(pid: number | null): boolean {
  return pid === process.pid || isProcessAlive(pid);
}

export async function cleanupLeftovers(catalog: Catalog, provider: VolumeProvider | undefined, o: { host: string; stateDir: string; scripts: ScriptConnectorOptions }): Promise<CleanupReport> {
  const report: CleanupReport = { removed: [], failed: [], interruptedBackups: [] };
  report.interruptedBackups = catalog.failOrphans(o.host, (pid) => alive(pid));
  const open = catalog.openResources({ host: o.host });
  const liveMounts = new Set(open.filter((r) => r.kind === 'mount' && alive(r.pid) && r.ref).map((r) => r.ref!));
  const rows = open.filter((r) => !alive(r.pid));
  // 1. Mounts under our mount root that no live job owns (unmounted first: a mounted device cannot detach).
  const mntRoot = join(o.stateDir, 'mnt');
  const unmounted = new Set<string>();
  for (const mnt of await listMounts(mntRoot).catch(() => [])) {
    if (liveMounts.has(mnt.mountPoint)) continue;
    try {
      await umount(mnt.mountPoint);
      removeMountPoint(mnt.mountPoint);
      unmounted.add(mnt.mountPoint);
      report.removed.push({ kind: 'mount', ref: mnt.mountPoint, job: '-' });
    } catch (err) {
      report.failed.push({ kind: 'mount', ref: mnt.mountPoint, job: '-', error: (err as Error).message });
    }
  }
  // 2. Devices whose attaching process died (also those it never recorded in the catalog).
  const orphans = await detachOrphans(o.scripts);
  for (const d of orphans.detached) report.removed.push({ kind: 'device', ref: d, job: '-' });
  for (const f of orphans.failed) report.failed.push({ kind: 'device', ref: f.dir, job: '-', error: f.error });
  // 3. What the catalog recorded for jobs whose process is gone, newest first.
  const seenRefs = new Set<string>();
  const detachedDirs = new Set(orphans.detached);
  for (const r of rows) {
    const ref = r.ref ?? r.name ?? '?';
    // Already undone by steps 1 and 2: not reported twice.
    const stateDir = ((r.data as { state?: Record<string, string> }).state ?? {}).STATE_DIR;
    const done = (r.kind === 'mount' && !!r.ref && unmounted.has(r.ref)) || (r.kind === 'device' && !!stateDir && detachedDirs.has(stateDir));
    try {
      await removeOne(r, provider, o.scripts);
      catalog.resourceRemoved(r.id);
      if (r.ref) seenRefs.add(r.ref);
      if (!done && (r.state === 'created' || r.ref)) report.removed.push({ kind: r.kind, ref, job: r.jobId });
    } catch (err) {
      report.failed.push({ kind: r.kind, ref, job: r.jobId, error: (err as Error).message });
      log.error(`cleanup: ${r.kind} ${ref} of job ${r.jobId}: ${(err as Error).message}`);
    }
  }
  // Cloud resources tagged as ours that the catalog does not know.
  if (provider?.listLeftovers) {
    // Jobs still running here (a backup row, or resources of a live process) keep theirs.
    const running = new Set([...catalog.listBackups({ status: 'running' }).map((b) => b.id), ...open.filter((r) => alive(r.pid)).map((r) => r.jobId)]);
    for (const r of open) if (alive(r.pid) && r.ref) seenRefs.add(r.ref);
    const left = await provider.listLeftovers({ host: o.host });
    for (const v of left.volumes) {
      if (seenRefs.has(v.id) || running.has(v.metadata[JOB_KEY] ?? '')) continue;
      try {
        for (const a of v.attachments) if (a.attachmentId) await provider.detach(v.id, a.attachmentId);
        await provider.deleteVolume(v.id, { wait: true });
        report.removed.push({ kind: 'volume', ref: v.id, job: v.metadata[JOB_KEY] ?? '-' });
      } catch (err) {
        report.failed.push({ kind: 'volume', ref: v.id, job: v.metadata[JOB_KEY] ?? '-', error: (err as Error).message });
      }
    }
    for (const s of left.snapshots) {
      if (seenRefs.has(s.id) || running.has(s.metadata[JOB_KEY] ?? '')) continue;
      try {
        await provider.deleteSnapshot(s.id, { wait: true });
        report.removed.push({ kind: 'snapshot', ref: s.id, job: s.metadata[JOB_KEY] ?? '-' });
      } catch (err) {
        report.failed.push({ kind: 'snapshot', ref: s.id, job: s.metadata[JOB_KEY] ?? '-', error: (err as Error).message });
      }
    }
  }
  return report;
}

/** Remove an (unmounted, empty) mount point directory; already gone is fine. rmSync cannot: it refuses directories. */
function removeMountPoint(dir: string): void {
  try {
    rmdirSync(dir);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
}

async function removeOne(r: ResourceRow, provider: VolumeProvider | undefined, scripts: ScriptConnectorOptions): Promise<void> {
  const data = r.data as Record<string, unknown>;
  switch (r.kind) {
    case 'mount':
      if (r.ref) {
        const mounted = (await listMounts()).some((m) => m.mountPoint === r.ref);
        if (mounted) await umount(r.ref);
        removeMountPoint(r.ref);
      }
      return;
    case 'device': {
      if (!r.ref || !data.protocol) return; // never attached
      const dev: AttachedDevice = { path: r.ref, protocol: String(data.protocol), state: (data.state ?? {}) as Record<string, string> };
      await connectorFor(dev.protocol, scripts).detach(dev);
      return;
    }
    case 'attachment':
      if (!provider || !r.ref) return;
      await provider.detach(String(data.volumeId), r.ref);
      return;
    case 'volume':
    case 'snapshot': {
      if (!provider) throw new Error(`no volume provider configured to remove ${r.kind} ${r.ref ?? r.name}`);
      let id: string | null | undefined = r.ref;
      if (!id && r.name) {
        // Planned but the ID was never recorded: the create may have gone through. Find it by name.
        if (r.kind === 'volume') id = (await provider.getVolume(r.name).catch((e) => (e instanceof NotFoundError ? undefined : Promise.reject(e))))?.id;
      }
      if (!id) return;
      if (r.kind === 'volume') {
        const v = await provider.getVolume(id).catch((e) => (e instanceof NotFoundError ? undefined : Promise.reject(e)));
        if (!v) return;
        for (const a of v.attachments) if (a.attachmentId) await provider.detach(v.id, a.attachmentId);
        if (v.status === 'creating' || v.status === 'detaching' || v.status === 'attaching') await provider.waitVolume(v.id, ['available', 'error', 'in-use'], 300_000).catch(() => undefined);
        await provider.deleteVolume(id, { wait: true });
      } else {
        const s = await provider.getSnapshot(id).catch((e) => (e instanceof NotFoundError ? undefined : Promise.reject(e)));
        if (!s) return;
        if (s.status === 'creating') await provider.waitSnapshot(id, ['available', 'error'], 300_000).catch(() => undefined);
        await provider.deleteSnapshot(id, { wait: true });
      }
      return;
    }
    default:
      return;
  }
}
