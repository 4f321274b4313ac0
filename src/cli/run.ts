/**
 * Process-level glue: signals, error → exit code, error → JSON on --json.
 * SIGINT/SIGTERM abort the running job (which unwinds its cleanup stack and
 * commits nothing half-done); a second signal exits at once.
 */
import { ExitCode, PermafrostError } from '../errors.js';
import { log, redact } from '../util/log.js';
import { main } from './main.js';

export async function runCli(argv: string[]): Promise<number> {
  const ac = new AbortController();
  let signals = 0;
  const onSignal = (sig: NodeJS.Signals) => {
    signals++;
    if (signals === 1) {
      log.warn(`${sig} received: stopping cleanly (send again to exit at once)`);
      ac.abort(new Error(sig));
    } else process.exit(ExitCode.interrupted);
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  const json = argv.includes('--json');
  try {
    await main(argv, ac.signal);
    return process.exitCode === undefined ? 0 : Number(process.exitCode);
  } catch (err) {
    const pe = err instanceof PermafrostError ? err : undefined;
    const code = pe?.exitCode ?? ExitCode.failure;
    const message = redact(err instanceof Error ? err.message : String(err));
    log.error(message);
    if (!pe && err instanceof Error && err.stack) log.debug(redact(err.stack));
    if (json) process.stdout.write(JSON.stringify({ error: { code: pe?.code ?? 'failure', message, exitCode: code } }, null, 2) + '\n');
    return code;
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
}
