/** Medians over runs, ratios, the bars of the issue, and the printed table. */
import type { MutationStats } from './dataset.js';
import type { Measured } from './measure.js';
import type { ToolName } from './tools.js';
import type { VerifyResult } from './verify.js';

export type Phase = 'init' | 'full' | 'incremental' | 'nochange' | 'restore';
const TIMED: Exclude<Phase, 'init'>[] = ['full', 'incremental', 'nochange', 'restore'];

export interface ToolRun {
  phases: Partial<Record<Phase, Measured>>;
  failed?: string;
  repoBytes?: number;
  cacheBytes?: number;
  verify?: VerifyResult;
}

export interface RunResult {
  run: number;
  tools: Partial<Record<ToolName, ToolRun>>;
  mutation?: MutationStats;
}

export interface ToolSummary {
  seconds: Partial<Record<Exclude<Phase, 'init'>, number>>;
  rssMiB: Partial<Record<Exclude<Phase, 'init'>, number>>;
  syncSeconds: Partial<Record<Exclude<Phase, 'init'>, number>>;
  peakRssMiB?: number;
  repoBytes?: number;
  cacheBytes?: number;
  failed?: string;
  restoreWrong?: boolean;
  restoreVerified?: boolean;
  metadataWarnings?: string;
  sparseRestored?: boolean;
}

export interface Bar {
  bar: string;
  value: number | null;
  /** How the value reads: "2.31x faster", "0.87x the size". */
  shown: string;
  met: boolean | null;
  note?: string;
}

export interface Summary {
  tools: Partial<Record<ToolName, ToolSummary>>;
  /** Ratios of Permafrost against each other tool, per metric. */
  ratios: Partial<Record<ToolName, Record<string, number | null>>>;
  bars: Bar[];
}

function fmtNs(ns: number): string {
  return ns < 1e3 ? `${ns} ns` : ns < 1e6 ? `${(ns / 1e3).toFixed(0)} µs` : ns < 1e9 ? `${(ns / 1e6).toFixed(0)} ms` : `${(ns / 1e9).toFixed(0)} s`;
}

export function median(xs: number[]): number | undefined {
  if (!xs.length) return undefined;
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1]! + s[m]!) / 2;
}

export function summarize(runs: RunResult[], tools: ToolName[]): Summary {
  const out: Summary = { tools: {}, ratios: {}, bars: [] };
  for (const t of tools) {
    const trs = runs.map((r) => r.tools[t]).filter((x): x is ToolRun => Boolean(x));
    const s: ToolSummary = { seconds: {}, rssMiB: {}, syncSeconds: {} };
    for (const p of TIMED) {
      const ok = trs.map((tr) => tr.phases[p]).filter((m): m is Measured => Boolean(m?.ok));
      s.seconds[p] = median(ok.map((m) => m.seconds));
      s.rssMiB[p] = median(ok.map((m) => m.maxRssMiB).filter((v): v is number => v !== null));
      s.syncSeconds[p] = median(ok.map((m) => m.syncSeconds));
    }
    const peaks = trs
      .map((tr) => TIMED.map((p) => tr.phases[p]).filter((m): m is Measured => Boolean(m?.ok && m.maxRssMiB !== null)).map((m) => m.maxRssMiB!))
      .filter((a) => a.length)
      .map((a) => Math.max(...a));
    s.peakRssMiB = median(peaks);
    s.repoBytes = median(trs.filter((tr) => tr.phases.nochange?.ok).map((tr) => tr.repoBytes).filter((v): v is number => v !== undefined));
    s.cacheBytes = median(trs.map((tr) => tr.cacheBytes).filter((v): v is number => v !== undefined));
    s.failed = trs.find((tr) => tr.failed)?.failed;
    const vs = trs.map((tr) => tr.verify).filter((v): v is VerifyResult => Boolean(v));
    if (vs.length) {
      s.restoreWrong = vs.some((v) => !v.ok);
      s.restoreVerified = vs.every((v) => v.ok);
      const w = vs[vs.length - 1]!;
      s.metadataWarnings = [w.modeMismatch && `${w.modeMismatch} modes`, w.ownerMismatch && `${w.ownerMismatch} owners`, w.mtimeMismatch && `${w.mtimeMismatch} mtimes (off by ≤ ${fmtNs(w.mtimeMaxDeltaNs)})`].filter(Boolean).join(', ') || undefined;
      s.sparseRestored = w.sparseCandidates ? w.sparseKept === w.sparseCandidates : undefined;
    }
    out.tools[t] = s;
  }
  const pf = out.tools.permafrost;
  for (const other of tools.filter((t) => t !== 'permafrost')) {
    const o = out.tools[other]!;
    const r: Record<string, number | null> = {};
    for (const p of TIMED) r[p] = pf?.seconds[p] && o.seconds[p] ? o.seconds[p]! / pf.seconds[p]! : null;
    r.repoBytes = pf?.repoBytes && o.repoBytes ? pf.repoBytes / o.repoBytes : null;
    r.peakRssMiB = pf?.peakRssMiB && o.peakRssMiB ? pf.peakRssMiB / o.peakRssMiB : null;
    out.ratios[other] = r;
  }
  if (pf && out.tools.restic) {
    const r = out.ratios.restic!;
    const speed = (bar: string, key: string, target: number, extra?: string): Bar => {
      const v = r[key] ?? null;
      return { bar, value: v, shown: v === null ? 'n/a' : `${v.toFixed(2)}x faster`, met: v === null ? null : v >= target && !extra, note: extra };
    };
    out.bars.push(speed('full backup ≥ 2x faster than restic', 'full', 2));
    out.bars.push(speed('incremental backup ≥ 2x faster than restic', 'incremental', 2));
    out.bars.push(speed('no-change backup ≥ 4x faster than restic', 'nochange', 4));
    out.bars.push(speed('full restore ≥ 2x faster than restic', 'restore', 2, pf.restoreWrong ? 'Permafrost restore is WRONG' : undefined));
    const size = r.repoBytes ?? null;
    out.bars.push({ bar: 'repository ≤ restic’s', value: size, shown: size === null ? 'n/a' : `${size.toFixed(2)}x restic’s size`, met: size === null ? null : size <= 1 });
    const mem = r.peakRssMiB ?? null;
    out.bars.push({ bar: 'peak memory ≤ 2x restic’s', value: mem, shown: mem === null ? 'n/a' : `${mem.toFixed(2)}x restic’s RSS`, met: mem === null ? null : mem <= 2 });
  }
  return out;
}

// ---------------------------------------------------------------- rendering

const MiB = 2 ** 20;
const f2 = (v: number | undefined) => (v === undefined ? '—' : v.toFixed(2));
const f0 = (v: number | undefined) => (v === undefined ? '—' : v >= 100 ? v.toFixed(0) : v.toFixed(1));
const mib = (v: number | undefined) => (v === undefined ? '—' : (v / MiB).toFixed(v / MiB >= 100 ? 0 : 1));
const ratio = (v: number | null | undefined) => (v === null || v === undefined ? '—' : `${v.toFixed(2)}x`);

function table(rows: string[][]): string {
  const w = rows[0]!.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length)));
  return rows.map((r) => r.map((c, i) => (i === 0 ? c.padEnd(w[i]!) : c.padStart(w[i]!))).join('   ')).join('\n') + '\n';
}

export interface ReportMeta {
  scale: string;
  runs: number;
  cachesDropped: boolean;
  loadBefore?: { min: number; max: number };
  verify: string;
  machine: { cpus: number; cpu: string; memGiB: number; kernel: string; node: string };
  dataset: { files: number; dirs: number; apparentBytes: number; dataBytes: number };
  tools: Record<string, { version: string; config: string; unavailable?: string }>;
  logDir: string;
}

export function renderReport(meta: ReportMeta, s: Summary): string {
  const names = Object.keys(s.tools) as ToolName[];
  const others = names.filter((n) => n !== 'permafrost');
  const hasPf = names.includes('permafrost');
  const out: string[] = [];
  out.push('');
  out.push(`Permafrost benchmark — ${meta.scale} dataset: ${meta.dataset.files} files in ${meta.dataset.dirs} directories, ${(meta.dataset.apparentBytes / 1e9).toFixed(2)} GB apparent (${(meta.dataset.dataBytes / 1e9).toFixed(2)} GB data)`);
  out.push(`${meta.runs === 1 ? '1 run' : `median of ${meta.runs} runs`}; page cache ${meta.cachesDropped ? 'dropped before each timed command' : 'NOT dropped'}; restores verified: ${meta.verify}`);
  out.push(
    `${meta.machine.cpus} × ${meta.machine.cpu}, ${meta.machine.memGiB} GiB, Linux ${meta.machine.kernel}, Node ${meta.machine.node}` +
      (meta.loadBefore ? `; 1-min load before timed commands ${meta.loadBefore.min}–${meta.loadBefore.max}${meta.loadBefore.max > meta.machine.cpus / 2 ? ' (machine busy: figures are noisy)' : ''}` : ''),
  );
  for (const n of names) out.push(`  ${n.padEnd(10)} ${meta.tools[n]?.version ?? ''}`);
  out.push('');
  const head = ['', ...names, ...(hasPf ? others.map((o) => `pf vs ${o}`) : [])];
  const rows: string[][] = [head];
  const timeRow = (label: string, p: 'full' | 'incremental' | 'nochange' | 'restore') => [
    label,
    ...names.map((n) => f2(s.tools[n]!.seconds[p])),
    ...(hasPf ? others.map((o) => ratio(s.ratios[o]?.[p])) : []),
  ];
  rows.push(timeRow('full backup (s)', 'full'));
  rows.push(timeRow('incremental (s)', 'incremental'));
  rows.push(timeRow('no-change (s)', 'nochange'));
  rows.push(timeRow('restore (s)', 'restore'));
  rows.push(['repository (MiB)', ...names.map((n) => mib(s.tools[n]!.repoBytes)), ...(hasPf ? others.map((o) => ratio(s.ratios[o]?.repoBytes)) : [])]);
  rows.push(['peak RSS (MiB)', ...names.map((n) => f0(s.tools[n]!.peakRssMiB)), ...(hasPf ? others.map((o) => ratio(s.ratios[o]?.peakRssMiB)) : [])]);
  rows.push(['restore correct', ...names.map((n) => (s.tools[n]!.restoreVerified === undefined ? '—' : s.tools[n]!.restoreVerified ? 'yes' : 'WRONG')), ...(hasPf ? others.map(() => '') : [])]);
  out.push(table(rows));
  if (hasPf && others.length) out.push('pf vs X: times = X / permafrost (above 1: Permafrost is faster); repository and RSS = permafrost / X (below 1: Permafrost is smaller).\n');

  const det: string[][] = [['details', ...names]];
  for (const p of ['full', 'incremental', 'nochange', 'restore'] as const) det.push([`peak RSS ${p} (MiB)`, ...names.map((n) => f0(s.tools[n]!.rssMiB[p]))]);
  for (const p of ['full', 'incremental', 'restore'] as const) det.push([`sync after ${p} (s)`, ...names.map((n) => f2(s.tools[n]!.syncSeconds[p]))]);
  det.push(['local cache (MiB)', ...names.map((n) => mib(s.tools[n]!.cacheBytes))]);
  det.push(['sparse file restored sparse', ...names.map((n) => (s.tools[n]!.sparseRestored === undefined ? '—' : s.tools[n]!.sparseRestored ? 'yes' : 'no'))]);
  det.push(['metadata differences', ...names.map((n) => s.tools[n]!.metadataWarnings ?? (s.tools[n]!.restoreVerified !== undefined ? 'none' : '—'))]);
  out.push(table(det));

  if (s.bars.length) {
    out.push('Bars (Permafrost vs restic):');
    const w = Math.max(...s.bars.map((b) => b.bar.length));
    for (const b of s.bars) {
      const verdict = b.met === null ? 'n/a' : b.met ? 'MET' : 'NOT MET';
      out.push(`  ${b.bar.padEnd(w)}   ${b.shown.padStart(22)}   ${verdict}${b.note ? ` (${b.note})` : ''}`);
    }
    out.push('');
  }
  const failures = names.filter((n) => s.tools[n]!.failed || s.tools[n]!.restoreWrong);
  for (const n of failures) {
    const t = s.tools[n]!;
    out.push(`${n}: ${t.failed ? `FAILED — ${t.failed}` : ''}${t.restoreWrong ? `${t.failed ? '; ' : ''}restore does not match the source` : ''}`);
  }
  if (failures.length) out.push('');
  for (const n of names) out.push(`${n}: ${meta.tools[n]?.config ?? ''}`);
  out.push(`logs: ${meta.logDir}`);
  out.push('');
  return out.join('\n');
}
