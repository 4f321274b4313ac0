/**
 * One error hierarchy for the whole agent. Every error the CLI can meet carries
 * a stable `code` (for --json and scripts) and the process exit code it maps to.
 * Only bin/permafrost.js turns an error into an exit; the core never exits.
 */

/** Exit codes, mapped in one place. Documented in the README. */
export const ExitCode = {
  ok: 0,
  failure: 1, // unexpected failure
  usage: 2, // unknown option, malformed config, bad argument
  partial: 3, // a batch or a backup finished, but some items failed
  noRepository: 10, // repository missing or not a Permafrost repository
  locked: 11, // repository locked by another process
  wrongKey: 12, // wrong encryption key or bad credentials
  notFound: 13, // backup, volume, path, snapshot not found
  integrity: 14, // corrupted pack, index or manifest; hostile archive entry
  unreachable: 15, // endpoint unreachable, backend errors after retries
  noSpace: 16, // disk or quota full
  cloud: 17, // the cloud's control plane refused or failed an operation
  device: 18, // attach/detach/mount failure on this node
  interrupted: 130, // SIGINT/SIGTERM
} as const;
export type ExitCodeValue = (typeof ExitCode)[keyof typeof ExitCode];

export class PermafrostError extends Error {
  readonly code: string;
  readonly exitCode: ExitCodeValue;
  constructor(message: string, code: string, exitCode: ExitCodeValue, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
    this.code = code;
    this.exitCode = exitCode;
  }
}

export class UsageError extends PermafrostError {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, 'usage', ExitCode.usage, options);
  }
}
export class ConfigError extends PermafrostError {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, 'config', ExitCode.usage, options);
  }
}
/** A key, backup, volume or path that does not exist. */
export class NotFoundError extends PermafrostError {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, 'not_found', ExitCode.notFound, options);
  }
}
/** Storage: conditional create found the key already present. */
export class AlreadyExistsError extends PermafrostError {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, 'already_exists', ExitCode.failure, options);
  }
}
export class NoRepositoryError extends PermafrostError {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, 'no_repository', ExitCode.noRepository, options);
  }
}
export class LockedError extends PermafrostError {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, 'locked', ExitCode.locked, options);
  }
}
export class WrongKeyError extends PermafrostError {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, 'wrong_key', ExitCode.wrongKey, options);
  }
}
export class AuthError extends PermafrostError {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, 'auth', ExitCode.wrongKey, options);
  }
}
/** Data read back does not match its ID, or a structure is malformed or hostile. */
export class IntegrityError extends PermafrostError {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, 'integrity', ExitCode.integrity, options);
  }
}
export class UnreachableError extends PermafrostError {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, 'unreachable', ExitCode.unreachable, options);
  }
}
export class NoSpaceError extends PermafrostError {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, 'no_space', ExitCode.noSpace, options);
  }
}
export class CloudError extends PermafrostError {
  readonly status?: number;
  constructor(message: string, status?: number, options?: { cause?: unknown }) {
    super(message, 'cloud', ExitCode.cloud, options);
    this.status = status;
  }
}
export class DeviceError extends PermafrostError {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, 'device', ExitCode.device, options);
  }
}
export class InterruptedError extends PermafrostError {
  constructor(message = 'interrupted', options?: { cause?: unknown }) {
    super(message, 'interrupted', ExitCode.interrupted, options);
  }
}
export class PartialError extends PermafrostError {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, 'partial', ExitCode.partial, options);
  }
}

/** Map a Node system error (ENOSPC, ENOENT, ...) to our hierarchy; other errors pass through. */
export function fromSystemError(err: unknown, what: string): unknown {
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  if (code === 'ENOSPC' || code === 'EDQUOT') return new NoSpaceError(`${what}: no space left on device`, { cause: err });
  if (code === 'ENOENT') return new NotFoundError(`${what}: not found`, { cause: err });
  return err;
}

/** Throw InterruptedError when the signal was aborted. */
export function throwIfAborted(signal?: AbortSignal): void {
  if (signal?.aborted) throw new InterruptedError();
}

/** Wait `ms`; InterruptedError as soon as the signal aborts (SIGINT/SIGTERM during a poll). */
export async function pause(ms: number, signal?: AbortSignal): Promise<void> {
  throwIfAborted(signal);
  if (!signal) return new Promise((r) => setTimeout(r, ms));
  await new Promise<void>((resolve, reject) => {
    const t = setTimeout(() => {
      signal.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    const onAbort = () => {
      clearTimeout(t);
      reject(new InterruptedError());
    };
    signal.addEventListener('abort', onAbort, { once: true });
  });
}
