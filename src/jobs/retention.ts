/**
 * Retention: which backups of a series to keep. A backup is kept when any
 * rule keeps it: the N newest (`last`), or the newest in each of the N most
 * recent hours, days, ISO weeks, months or years that have a backup.
 * Series are the backup names; a series' policy never touches another's.
 */
import type { Manifest } from '../repository/manifest.js';

export interface RetentionPolicy {
  last?: number;
  hourly?: number;
  daily?: number;
  weekly?: number;
  monthly?: number;
  yearly?: number;
}

export function isEmptyPolicy(p: RetentionPolicy): boolean {
  return !Object.values(p).some((v) => v !== undefined && v > 0);
}

function isoWeek(d: Date): string {
  const t = new Date(Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), d.getUTCDate()));
  const day = t.getUTCDay() || 7;
  t.setUTCDate(t.getUTCDate() + 4 - day);
  const year = t.getUTCFullYear();
  const week = Math.ceil(((t.getTime() - Date.UTC(year, 0, 1)) / 86_400_000 + 1) / 7);
  return `${year}-W${week}`;
}

const buckets: [keyof RetentionPolicy, (d: Date) => string][] = [
  ['hourly', (d) => d.toISOString().slice(0, 13)],
  ['daily', (d) => d.toISOString().slice(0, 10)],
  ['weekly', isoWeek],
  ['monthly', (d) => d.toISOString().slice(0, 7)],
  ['yearly', (d) => d.toISOString().slice(0, 4)],
];

/** Split manifests into kept and forgotten, with the reasons each kept one is kept. */
export function applyRetention(manifests: Manifest[], p: RetentionPolicy): { keep: Map<string, string[]>; forget: Manifest[] } {
  const keep = new Map<string, string[]>();
  const forget: Manifest[] = [];
  const series = new Map<string, Manifest[]>();
  for (const m of manifests) series.set(m.name, [...(series.get(m.name) ?? []), m]);
  for (const list of series.values()) {
    list.sort((a, b) => b.dataTimestamp.localeCompare(a.dataTimestamp) || b.id.localeCompare(a.id));
    const why = (m: Manifest, r: string) => keep.set(m.id, [...(keep.get(m.id) ?? []), r]);
    list.slice(0, p.last ?? 0).forEach((m) => why(m, 'last'));
    for (const [rule, key] of buckets) {
      const n = p[rule] ?? 0;
      const seen = new Set<string>();
      for (const m of list) {
        if (seen.size >= n) break;
        const k = key(new Date(m.dataTimestamp));
        if (seen.has(k)) continue;
        seen.add(k);
        why(m, rule);
      }
    }
    for (const m of list) if (!keep.has(m.id)) forget.push(m);
  }
  return { keep, forget };
}
