/**
 * A tgtd of a suite's own (userspace iSCSI target, from tgt) on 127.0.0.1, on a non-default
 * portal and control port so it never meets the lab's tgtd: a free port, start, stop.
 */
import { execFileSync, spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import net from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';

const PATH = `/usr/sbin:/sbin:${process.env.PATH ?? '/usr/bin:/bin'}`;
const env = { ...process.env, PATH };

/** The first port from `from` on (`count` tried) that 127.0.0.1 can listen on. */
export async function freePort(from: number, count = 50): Promise<number> {
  const tryPort = (port: number): Promise<boolean> =>
    new Promise((resolve) => {
      const s = net.createServer();
      s.once('error', () => resolve(false));
      s.listen(port, '127.0.0.1', () => s.close(() => resolve(true)));
    });
  for (let p = from; p < from + count; p++) if (await tryPort(p)) return p;
  throw new Error('no free port for tgtd');
}

/** True while the process exists and is not a zombie. */
export function pidAlive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return !/^\d+ \(.*\) [ZX] /.test(stat);
  } catch {
    return false;
  }
}

/** Start tgtd (control socket /var/run/tgtd/socket.<ctl>, portal 127.0.0.1:<port>); returns once tgtadm answers (5 s at most). */
export async function startTgtd(port: number, ctl: number): Promise<number | undefined> {
  const child = spawn('tgtd', ['-f', '-C', String(ctl), '--iscsi', `portal=127.0.0.1:${port}`], { env, detached: true, stdio: 'ignore' });
  child.unref();
  for (let i = 0; i < 50; i++) {
    try {
      execFileSync('tgtadm', ['-C', String(ctl), '--lld', 'iscsi', '--op', 'show', '--mode', 'target'], { stdio: 'ignore', env });
      break;
    } catch {
      await sleep(100);
    }
  }
  return child.pid;
}

/**
 * Stop a tgtd from startTgtd. It ignores SIGTERM while a target exists: offline, delete the
 * targets `tids` (forced) and the system, wait up to 3 s, then SIGKILL.
 */
export async function stopTgtd(pid: number, ctl: number, tids: string[] = []): Promise<void> {
  const quiet = (...args: string[]) => {
    try {
      execFileSync('tgtadm', ['-C', String(ctl), ...args], { stdio: 'ignore', env });
    } catch {
      // best effort
    }
  };
  quiet('--op', 'update', '--mode', 'sys', '--name', 'State', '-v', 'offline');
  for (const tid of tids) quiet('--lld', 'iscsi', '--op', 'delete', '--mode', 'target', '--tid', tid, '--force');
  quiet('--op', 'delete', '--mode', 'system');
  for (let i = 0; i < 30 && pidAlive(pid); i++) await sleep(100);
  if (pidAlive(pid)) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // gone
    }
  }
}
