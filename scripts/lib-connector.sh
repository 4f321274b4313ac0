# shellcheck shell=bash
# Shared helpers for the connector helper scripts (scripts/<protocol>-attach|detach).
#
# Contract (see src/connectors/connector.ts): inputs are PF_* environment
# variables, outputs are KEY=VALUE lines on stdout, diagnostics go to stderr.
# Every output is also recorded in "$PF_STATE_DIR/attach.env" as soon as it is
# known, so that a detach after a failed or interrupted attach still finds what
# to undo. Detach reads a value from PF_<KEY> first, then from that file.

# System directories go last so that a caller (or a test) can put its own tools first.
export PATH="${PATH:+$PATH:}/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

PF_SCRIPT_NAME=${PF_SCRIPT_NAME:-$(basename "$0")}

# log MSG...: a diagnostic line on stderr.
log() { printf '%s: %s\n' "$PF_SCRIPT_NAME" "$*" >&2; }

# die MSG...: diagnostic and exit 1.
die() { log "error: $*"; exit 1; }

# need_state_dir: make sure PF_STATE_DIR exists (0700).
need_state_dir() {
  [ -n "${PF_STATE_DIR:-}" ] || die "PF_STATE_DIR is not set"
  mkdir -p "$PF_STATE_DIR"
  chmod 700 "$PF_STATE_DIR"
}

# record KEY VALUE: remember a value in the state file without printing it.
record() {
  [ -n "${PF_STATE_DIR:-}" ] || return 0
  mkdir -p "$PF_STATE_DIR"
  local f="$PF_STATE_DIR/attach.env"
  if [ -f "$f" ]; then
    grep -v "^$1=" "$f" > "$f.tmp" || true
    mv -f "$f.tmp" "$f"
  fi
  printf '%s=%s\n' "$1" "$2" >> "$f"
}

# out KEY VALUE: print KEY=VALUE on stdout and record it.
out() {
  case "$2" in *$'\n'*) die "output $1 contains a newline" ;; esac
  record "$1" "$2"
  printf '%s=%s\n' "$1" "$2"
}

# state KEY: value of PF_KEY, else of KEY in the state file, else empty.
state() {
  local var="PF_$1"
  if [ -n "${!var:-}" ]; then printf '%s' "${!var}"; return 0; fi
  local f="${PF_STATE_DIR:-/nonexistent}/attach.env"
  [ -f "$f" ] || return 0
  local line
  line=$(grep -m1 "^$1=" "$f" || true)
  printf '%s' "${line#*=}"
}

# is_true VALUE: 1/true/yes/on.
is_true() { case "${1,,}" in 1 | true | yes | on) return 0 ;; *) return 1 ;; esac; }

# read_only: whether the attachment must be read-only.
read_only() { is_true "${PF_READ_ONLY:-0}"; }

# attach_mode: auto|kernel|userspace from PF_ATTACH_MODE.
attach_mode() {
  local m=${PF_ATTACH_MODE:-auto}
  case "$m" in auto | kernel | userspace) printf '%s' "$m" ;; *) die "PF_ATTACH_MODE must be auto, kernel or userspace, not '$m'" ;; esac
}

# module_available NAME: the kernel module is loaded, built in, or loadable.
module_available() {
  [ -d "/sys/module/$1" ] && return 0
  command -v modprobe > /dev/null 2>&1 && modprobe -n -q "$1" 2> /dev/null && return 0
  return 1
}

# wait_for SECONDS COMMAND...: poll COMMAND every 0.1 s until it succeeds
# (SECONDS may be fractional); fails once the time is up.
wait_for() {
  local limit_ms
  limit_ms=$(awk -v s="$1" 'BEGIN { printf "%d", s * 1000 }'); shift
  local deadline=$(($(date +%s%3N) + limit_ms))
  while true; do
    "$@" && return 0
    [ "$(date +%s%3N)" -ge "$deadline" ] && return 1
    sleep 0.1
  done
}

# loop_backing LOOPDEV: the backing file of a loop device, empty when unbound.
loop_backing() {
  local name=${1#/dev/}
  local f="/sys/block/$name/loop/backing_file"
  [ -r "$f" ] || return 0
  local b
  b=$(cat "$f" 2> /dev/null || true)
  printf '%s' "${b% (deleted)}"
}

# loop_attach FILE [DIRECT_IO]: set up a loop device (read-only when asked,
# partition scan) for FILE and print its path. DIRECT_IO (on|off, default off;
# PF_LOOP_DIRECT_IO overrides) makes a READ-ONLY loop device read its file with
# O_DIRECT: no double caching, and 1.5-3x the throughput over a FUSE export.
# Never for writable ones: O_DIRECT writes through qemu-storage-daemon's FUSE
# export corrupted the filesystem in tests (qemu 7.2). Partitions the kernel
# did not add (a kernel without that partition table parser) are added with partx.
loop_attach() {
  local file=$1 dio=${PF_LOOP_DIRECT_IO:-${2:-off}} args=(--find --show --partscan)
  read_only && args+=(--read-only)
  if is_true "$dio" && read_only; then args+=(--direct-io=on); fi
  local dev
  dev=$(losetup "${args[@]}" "$file") || die "losetup failed for $file"
  record LOOP "$dev"
  loop_add_partitions "$dev"
  printf '%s' "$dev"
}

# has_partitions NAME: the kernel lists partitions of block device NAME.
has_partitions() { compgen -G "/sys/block/$1/$1p*" > /dev/null; }

# loop_add_partitions DEV: make partitions of DEV visible when it has a table.
loop_add_partitions() {
  local dev=$1 name=${1#/dev/}
  local pt
  pt=$(blkid -p -o value -s PTTYPE "$dev" 2> /dev/null || true)
  [ -n "$pt" ] || return 0
  wait_for 0.5 has_partitions "$name" || partx -a "$dev" > /dev/null 2>&1 || log "partx -a $dev failed; partitions may be missing"
  local p
  for p in /sys/block/"$name"/"$name"p*; do
    [ -e "$p" ] || continue
    # devtmpfs creates the nodes; give it a moment.
    wait_for 5 test -b "/dev/${p##*/}" || log "no node /dev/${p##*/}"
  done
  return 0
}

# loop_unbound LOOPDEV: the loop device has no backing file (any more).
loop_unbound() { [ -z "$(loop_backing "$1")" ]; }

# loop_detach LOOPDEV FILE: detach LOOPDEV when it is still bound to FILE.
# Already gone, or bound to something else (reused): nothing to do.
loop_detach() {
  local dev=$1 file=$2
  [ -n "$dev" ] || return 0
  local backing
  backing=$(loop_backing "$dev")
  if [ -z "$backing" ]; then
    log "$dev is not attached; nothing to do"
    return 0
  fi
  if [ "$backing" = / ]; then
    # The kernel cannot name the backing file any more: a FUSE export whose
    # daemon died. Nobody can use such a device; release it.
    log "$dev is bound to a file that is gone (dead FUSE export?); releasing it"
  elif [ -n "$file" ] && [ "$(readlink -f "$backing")" != "$(readlink -f "$file")" ]; then
    log "$dev is now bound to $backing, not $file; leaving it alone"
    return 0
  fi
  blockdev --flushbufs "$dev" 2> /dev/null || true
  losetup -d "$dev" 2> /dev/null || true
  if ! wait_for "${PF_DETACH_WAIT:-10}" loop_unbound "$dev"; then
    die "$dev is still in use (mounted or open); the kernel will release it when it is closed"
  fi
  log "detached $dev"
}

# is_mountpoint PATH: PATH is a mount point (from /proc/self/mountinfo).
is_mountpoint() {
  local p
  p=$(readlink -f "$1" 2> /dev/null || printf '%s' "$1")
  awk -v p="$p" '{ m=$5; gsub(/\\040/, " ", m); if (m == p) { found=1 } } END { exit(found ? 0 : 1) }' /proc/self/mountinfo
}

# fuse_unmount PATH: unmount a FUSE mount point if mounted.
fuse_unmount() {
  local p=$1
  is_mountpoint "$p" || return 0
  if command -v fusermount3 > /dev/null 2>&1; then
    fusermount3 -u "$p" 2> /dev/null || fusermount3 -u -z "$p" 2> /dev/null || true
  elif command -v fusermount > /dev/null 2>&1; then
    fusermount -u "$p" 2> /dev/null || fusermount -u -z "$p" 2> /dev/null || true
  fi
  is_mountpoint "$p" && { umount "$p" 2> /dev/null || umount -l "$p" 2> /dev/null || true; }
  is_mountpoint "$p" && die "cannot unmount $p"
  return 0
}

# pid_is PID PATTERN: PID is alive and its command line contains PATTERN
# (guards against killing a reused PID).
pid_is() {
  local pid=$1 pattern=$2
  [ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] || return 1
  tr '\0' ' ' < "/proc/$pid/cmdline" | grep -qF -- "$pattern"
}

# stop_pid PID PATTERN: SIGTERM, wait up to 10 s, then SIGKILL.
stop_pid() {
  local pid=$1 pattern=$2
  pid_is "$pid" "$pattern" || return 0
  kill -TERM "$pid" 2> /dev/null || true
  if ! wait_for 10 eval "! pid_is $pid '$pattern'"; then
    log "process $pid did not stop on SIGTERM; killing it"
    kill -KILL "$pid" 2> /dev/null || true
    wait_for 5 eval "! pid_is $pid '$pattern'" || die "process $pid does not die"
  fi
}

# dev_ready PATH: a block device; under a test root (PF_DEV_ROOT), any file.
dev_ready() { [ -b "$1" ] || { [ -n "${PF_DEV_ROOT:-}" ] && [ -e "$1" ]; }; }

# scsi_address SYSFS_ROOT SDNAME: H:C:T:L of a SCSI disk (empty when unknown).
scsi_address() {
  local link="$1/block/$2/device"
  [ -e "$link" ] || return 0
  basename "$(readlink -f "$link")"
}

# write_secret FILE VALUE: write VALUE to a 0600 file (never on a command line).
write_secret() {
  (umask 077 && printf '%s' "$2" > "$1")
}

# qsd_export DRIVER_OPTS WRITABLE [OBJECT...]: start qemu-storage-daemon with a
# blockdev and a FUSE export on "$PF_STATE_DIR/export"; records PID and FUSE_FILE.
qsd_export() {
  local blockdev=$1 writable=$2; shift 2
  command -v qemu-storage-daemon > /dev/null 2>&1 || die "qemu-storage-daemon not found (Debian: qemu-system-common, plus qemu-block-extra for iscsi/rbd)"
  [ -e /dev/fuse ] || die "/dev/fuse is missing (FUSE is needed for the userspace path)"
  local file="$PF_STATE_DIR/export" pidfile="$PF_STATE_DIR/qsd.pid"
  : > "$file"
  record FUSE_FILE "$file"
  local args=()
  local o
  for o in "$@"; do args+=(--object "$o"); done
  args+=(--blockdev "$blockdev")
  args+=(--export "type=fuse,id=pfexport,node-name=pfnode,mountpoint=$file,writable=$writable")
  args+=(--daemonize --pidfile "$pidfile")
  local rc=0
  timeout "${PF_CONNECT_TIMEOUT:-60}" qemu-storage-daemon "${args[@]}" >&2 || rc=$?
  [ "$rc" -eq 0 ] || die "qemu-storage-daemon failed (exit $rc)"
  local pid
  pid=$(cat "$pidfile" 2> /dev/null || true)
  [ -n "$pid" ] || die "qemu-storage-daemon wrote no pid file"
  record PID "$pid"
  is_mountpoint "$file" || die "the FUSE export $file is not mounted"
  printf '%s' "$pid"
}

# qsd_cleanup: undo qsd_export (daemon, FUSE mount, export file); idempotent.
qsd_cleanup() {
  local pid file
  pid=$(state PID)
  file=$(state FUSE_FILE)
  [ -n "$pid" ] && stop_pid "$pid" qemu-storage-daemon
  if [ -n "$file" ]; then
    fuse_unmount "$file"
    rm -f "$file"
  fi
  [ -n "${PF_STATE_DIR:-}" ] && rm -f "$PF_STATE_DIR/qsd.pid" "$PF_STATE_DIR/secret" "$PF_STATE_DIR/keyring" "$PF_STATE_DIR/ceph.conf"
  return 0
}
