/**
 * Path selection with picomatch globs on paths relative to the backup root
 * ("etc/passwd", no leading slash).
 *
 * - Excludes (backup): a pattern without "/" matches the base name at any depth
 *   ("*.tmp", "node_modules"); a pattern with "/" matches the whole relative
 *   path ("var/cache/**"); a leading "/" anchors a slash-less pattern at the
 *   root ("/tmp"). An excluded directory is not descended into.
 * - Includes (restore, tar): an entry is selected when its path or the path of
 *   one of its ancestors matches ("etc" and "etc/**" both select all of etc).
 *   Directories that cannot lead to a match are not traversed.
 */
import picomatch from 'picomatch';

/** A predicate on relative paths. */
export type PathMatcher = (rel: string) => boolean;

/** Compile exclude patterns; undefined when there are none. */
export function compileExcludes(patterns: readonly string[] | undefined): PathMatcher | undefined {
  if (!patterns || patterns.length === 0) return undefined;
  const anchored: string[] = [];
  const floating: string[] = [];
  for (const raw of patterns) {
    const p = raw.endsWith('/') && raw.length > 1 ? raw.slice(0, -1) : raw;
    if (p.startsWith('/')) anchored.push(p.replace(/^\/+/, ''));
    else floating.push(p);
  }
  const a = anchored.length ? picomatch(anchored, { dot: true }) : undefined;
  const f = floating.length ? picomatch(floating, { dot: true, basename: true }) : undefined;
  return (rel) => (a !== undefined && a(rel)) || (f !== undefined && f(rel));
}

/** Include selection for restore and tar export. */
export interface Selection {
  /** True when the entry at `rel` is selected by a pattern itself. */
  matches(rel: string): boolean;
  /** True when a descendant of directory `rel` could be selected. */
  mayContain(rel: string): boolean;
}

/** Compile include patterns; undefined (everything selected) when there are none. */
export function compileIncludes(patterns: readonly string[] | undefined): Selection | undefined {
  if (!patterns || patterns.length === 0) return undefined;
  const cleaned = patterns.map((p) => p.replace(/^(\.\/|\/)+/, '').replace(/\/+$/, '')).filter((p) => p.length > 0);
  if (cleaned.length === 0 || cleaned.some((p) => p === '**' || p === '.')) return undefined;
  const m = picomatch(cleaned, { dot: true });
  const bases = cleaned.map((p) => {
    const s = picomatch.scan(p);
    return s.isGlob ? s.base : p;
  });
  const anyBase = bases.some((b) => b === '');
  return {
    matches: m,
    mayContain(rel: string): boolean {
      if (anyBase) return true;
      for (const b of bases) {
        if (b === rel || b.startsWith(rel + '/') || rel.startsWith(b + '/')) return true;
      }
      return false;
    },
  };
}
