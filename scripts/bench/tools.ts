/**
 * The three contenders, configured for parity:
 *
 *   - all encrypt: Permafrost with a key file (AES-256-GCM), restic (always
 *     encrypts; AES-256-CTR + Poly1305), borg `repokey-blake2` (AES-256-CTR +
 *     BLAKE2b MAC, key in the repository, passphrase in BORG_PASSPHRASE);
 *   - all compress with zstd around level 3: Permafrost `compression_level = 3`
 *     (its default), restic `--compression auto` (repository v2; its default,
 *     zstd "default" speed ≈ level 3), borg `--compression zstd,3` (borg's
 *     default is lz4: we choose zstd,3 so the three tools spend comparable CPU
 *     per byte and the repository sizes compare codecs of the same class);
 *   - each uses its own local cache (restic cache, borg files/chunks cache,
 *     Permafrost state dir), all inside the work dir and wiped with the
 *     repositories, so every run starts cold-repo but incrementals can use
 *     what the full backup left, as in real use;
 *   - restores: each tool restores the newest backup into an empty directory;
 *     borg with `--sparse` (Permafrost restores holes by itself; restic 0.14
 *     has no sparse restore and writes the zeros).
 *
 * restic and borg back up `.` from inside the dataset so that all three restore
 * the dataset's contents directly into the target directory.
 */
import { spawnSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Cmd, Measured } from './measure.js';

export type ToolName = 'permafrost' | 'restic' | 'borg';
export const ALL_TOOLS: ToolName[] = ['permafrost', 'restic', 'borg'];
export type BackupPhase = 'full' | 'incremental' | 'nochange';

export interface ToolPaths {
  work: string;
  data: string;
  repo: string;
  cache: string;
}

export interface Tool {
  name: ToolName;
  /** Human description of the configuration (for the report). */
  config: string;
  version(): string;
  init(): Cmd;
  backup(phase: BackupPhase): Cmd;
  /** Called after a successful backup; returns the backup's ID/name. */
  backupId(phase: BackupPhase, m: Measured): string | undefined;
  restore(target: string): Cmd;
  /** The command's stdout is needed (IDs). */
  keepStdout: boolean;
}

/** The environment without anything a tool would pick up from the caller. */
export function cleanEnv(extra: Record<string, string>): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (/^(PERMAFROST_|RESTIC_|BORG_|AWS_|NODE_OPTIONS$|GOGC$|GOMAXPROCS$)/.test(k)) continue;
    env[k] = v;
  }
  return { ...env, ...extra };
}

function firstLine(cmd: string, args: string[]): string {
  const r = spawnSync(cmd, args, { encoding: 'utf8' });
  if (r.error || r.status !== 0) return 'unavailable';
  return (r.stdout || r.stderr).trim().split('\n')[0]!;
}

export function which(cmd: string): string | undefined {
  const r = spawnSync('sh', ['-c', `command -v ${cmd}`], { encoding: 'utf8' });
  return r.status === 0 ? r.stdout.trim() : undefined;
}

// ---------------------------------------------------------------- Permafrost

export interface PermafrostEntry {
  /**
   * The executable (bin/permafrost.js or a shim with its first line), run
   * directly as an operator runs it: its #! line sets the runtime options.
   */
  exe: string;
  env: Record<string, string>;
  describe: string;
  /** The checkout, for `git describe`. */
  repoRoot: string;
}

export function permafrostTool(p: ToolPaths, entry: PermafrostEntry): Tool {
  const key = join(p.cache, 'permafrost.key');
  const state = join(p.cache, 'permafrost-state');
  const ini = join(p.work, 'permafrost-agent.ini');
  writeFileSync(ini, '; written by scripts/bench/run.ts\n[repository]\ncompression_level = 3\n');
  mkdirSync(p.cache, { recursive: true });
  const env = cleanEnv(entry.env);
  const base = () => ['--config', ini, '--repo', p.repo, '--key-file', key, '--state-dir', state, '--json', '--quiet'];
  let latest: string | undefined;
  return {
    name: 'permafrost',
    config: `encrypted (key file, AES-256-GCM), zstd level 3, default threads; ${entry.describe}`,
    keepStdout: true,
    version() {
      const r = spawnSync(entry.exe, ['--version'], { encoding: 'utf8', env });
      const git = spawnSync('git', ['-C', entry.repoRoot, 'describe', '--always', '--dirty'], { encoding: 'utf8' });
      return `permafrost ${(r.stdout || '?').trim()} (${(git.stdout || '?').trim()})`;
    },
    init: () => ({ cmd: entry.exe, args: [...base(), 'init'], env }),
    backup: () => ({ cmd: entry.exe, args: [...base(), 'backup', '--path', p.data, '--name', 'bench'], env }),
    backupId(_phase, m) {
      try {
        const j = JSON.parse(m.stdout) as { id?: string };
        if (j.id) latest = j.id;
        return j.id;
      } catch {
        return undefined;
      }
    },
    restore(target) {
      if (!latest) {
        // The backup's --json output did not parse: ask the repository.
        const r = spawnSync(entry.exe, [...base(), 'list', '--name', 'bench'], { encoding: 'utf8', env });
        try {
          const rows = (JSON.parse(r.stdout) as { backups: { id: string; status: string; finishedAt?: string }[] }).backups.filter((b) => b.status === 'complete');
          rows.sort((a, b) => String(a.finishedAt).localeCompare(String(b.finishedAt)));
          latest = rows[rows.length - 1]?.id;
        } catch {
          /* below */
        }
      }
      if (!latest) throw new Error('no Permafrost backup ID to restore');
      return { cmd: entry.exe, args: [...base(), 'restore', latest, '--target-dir', target], env };
    },
  };
}

// ---------------------------------------------------------------- restic

export function resticTool(p: ToolPaths): Tool {
  const env = cleanEnv({ RESTIC_PASSWORD: 'bench', RESTIC_CACHE_DIR: join(p.cache, 'restic') });
  return {
    name: 'restic',
    config: 'repository v2, --compression auto (zstd), AES-256-CTR+Poly1305, cache in the work dir',
    keepStdout: false,
    version: () => firstLine('restic', ['version']),
    init: () => ({ cmd: 'restic', args: ['-r', p.repo, 'init', '--repository-version', '2'], env }),
    backup: () => ({ cmd: 'restic', args: ['-r', p.repo, 'backup', '--quiet', '--host', 'bench', '--compression', 'auto', '.'], cwd: p.data, env }),
    backupId: () => 'latest',
    restore: (target) => ({ cmd: 'restic', args: ['-r', p.repo, 'restore', 'latest', '--target', target, '--quiet'], env }),
  };
}

// ---------------------------------------------------------------- borg

export function borgTool(p: ToolPaths, compression: string): Tool {
  const env = cleanEnv({
    BORG_PASSPHRASE: 'bench',
    BORG_BASE_DIR: join(p.cache, 'borg'),
    BORG_RELOCATED_REPO_ACCESS_IS_OK: 'yes',
    BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK: 'yes',
  });
  let latest: string | undefined;
  return {
    name: 'borg',
    config: `repokey-blake2 (AES-256-CTR + BLAKE2b), --compression ${compression}, extract --sparse, cache in the work dir`,
    keepStdout: false,
    version: () => firstLine('borg', ['--version']),
    init: () => ({ cmd: 'borg', args: ['init', '-e', 'repokey-blake2', p.repo], env }),
    backup: (phase) => ({ cmd: 'borg', args: ['create', '--compression', compression, `${p.repo}::${phase}`, '.'], cwd: p.data, env }),
    backupId(phase) {
      latest = phase;
      return phase;
    },
    restore(target) {
      if (!latest) throw new Error('no borg archive to restore');
      mkdirSync(target, { recursive: true });
      return { cmd: 'borg', args: ['extract', '--sparse', `${p.repo}::${latest}`], cwd: target, env };
    },
  };
}

export function toolAvailable(name: ToolName): string | undefined {
  if (name === 'permafrost') return undefined;
  return which(name) ? undefined : `${name} is not installed (apt-get install -y ${name === 'borg' ? 'borgbackup' : 'restic'})`;
}

