/** True when a process with this PID exists (EPERM means it exists but is not ours). */
export function isProcessAlive(pid: number | null | undefined): boolean {
  if (!pid || pid < 0) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}
