#!/bin/bash
# Bring up Permafrost's test lab on loopback: Ceph (mon/mgr/osd on a sparse file, radosgw S3 on
# 127.0.0.1:7480), RabbitMQ + Keystone + Cinder (RBD driver), and a userspace iSCSI target (tgtd).
#
# Usage: bash test/lab/up.sh [--no-install] [PART...]
#   PART: s3      Ceph + radosgw (what the S3 storage tests need)
#         ceph    Ceph mon/mgr/osd and the `volumes` pool only
#         cinder  Ceph + RabbitMQ + Keystone + Cinder (api, scheduler, volume, backup)
#         iscsi   tgtd with one 256 MiB LUN on 127.0.0.1:3260
#         all     s3 cinder iscsi (the default)
# Idempotent: when every requested part is already running it exits 0 at once; otherwise it starts
# only what is not running. State lives under $LAB (default /tmp/permafrost-lab); the variables tests
# need are written to $LAB/env.sh. Installs the Debian packages a part needs when they are missing.
# Runs as root. Concurrent runs serialise on $LAB/up.lock.
set -eo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
export LAB=${LAB:-/tmp/oslab}
INSTALL=1
PARTS=()
for a in "$@"; do
  case $a in
    --no-install) INSTALL=0 ;;
    s3|ceph|cinder|iscsi) PARTS+=("$a") ;;
    all) PARTS+=(s3 cinder iscsi) ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    *) echo "up.sh: unknown argument '$a' (try --help)" >&2; exit 2 ;;
  esac
done
[ ${#PARTS[@]} -gt 0 ] || PARTS=(s3 cinder iscsi)
want() { local p; for p in "${PARTS[@]}"; do [ "$p" = "$1" ] && return 0; done; return 1; }
# ceph is implied by s3 and cinder
if want s3 || want cinder; then want ceph || PARTS+=(ceph); fi
[ "$(id -u)" = 0 ] || { echo "up.sh: must run as root" >&2; exit 1; }

mkdir -p $LAB/{etc,ceph,logs,pids,run,mnt/rbdfuse,mnt/ext4}
# One bring-up at a time (parallel test runners, two engineers): the second waits, then finds it up.
# flock -o holds the lock in flock itself and closes it for us, so the daemons we start (which
# outlive this script) do not inherit and hold the lock.
if [ "${LAB_UP_LOCKED:-}" != "$LAB" ]; then
  LAB_UP_LOCKED=$LAB exec flock -o $LAB/up.lock bash "$0" "$@"
fi
cd $LAB
. $HERE/lib-ceph.sh
. $HERE/lib-os.sh
T0=$(date +%s)
t() { echo "[up.sh +$(( $(date +%s)-T0 ))s] $*"; }

http_up() { curl -s -o /dev/null --max-time 3 "$1"; }
ceph_ok()   { pid_alive $LAB/pids/ceph-mon.a.pid && pid_alive $LAB/pids/ceph-mgr.x.pid && pid_alive $LAB/pids/ceph-osd.0.pid; }
s3_ok()     { ceph_ok && pid_alive $LAB/pids/ceph-client.rgw.a.pid && http_up http://127.0.0.1:7480/; }
cinder_ok() {
  ceph_ok && pid_alive $LAB/pids/rabbitmq.pid && pid_alive $LAB/pids/keystone.pid && http_up http://127.0.0.1:5000/v3 || return 1
  local s; for s in api scheduler volume backup; do pid_alive $LAB/pids/cinder-$s.pid || return 1; done
  http_up http://127.0.0.1:8776/
}
iscsi_ok()  { pid_alive $LAB/pids/tgtd.pid && tgtadm --lld iscsi --op show --mode target 2>/dev/null | grep -q "$LAB_ISCSI_IQN"; }
part_ok() { "$1_ok"; }

write_env() {
  local up=() p
  for p in ceph s3 cinder iscsi; do part_ok $p 2>/dev/null && up+=("$p"); done
  cat > $LAB/env.sh.tmp <<ENV
# written by test/lab/up.sh; source it: . $LAB/env.sh
export LAB=$LAB
export LAB_PARTS="${up[*]}"
export OS_AUTH_URL=http://127.0.0.1:5000/v3
export OS_USERNAME=admin
export OS_PASSWORD=$ADMIN_PASS
export OS_PROJECT_NAME=admin
export OS_USER_DOMAIN_NAME=Default
export OS_PROJECT_DOMAIN_NAME=Default
export OS_IDENTITY_API_VERSION=3
export OS_REGION_NAME=RegionOne
export OS_VOLUME_API_VERSION=3.44
export S3_ENDPOINT=http://127.0.0.1:7480
export S3_REGION=default
export S3_BUCKET=$S3_BUCKET
export AWS_ACCESS_KEY_ID=$S3_ACCESS_KEY
export AWS_SECRET_ACCESS_KEY=$S3_SECRET_KEY
export CEPH_CONF=$LAB/etc/ceph.conf
export CEPH_ARGS="-c $LAB/etc/ceph.conf"
export CEPH_CINDER_KEYRING=$LAB/etc/ceph.client.cinder.keyring
export LAB_DEMO_USERNAME=demo
export LAB_DEMO_PASSWORD=$DEMO_PASS
export LAB_DEMO_PROJECT_NAME=demo
export LAB_ISCSI_PORTAL=127.0.0.1:3260
export LAB_ISCSI_IQN=$LAB_ISCSI_IQN
export LAB_ISCSI_LUN=1
ENV
  mv $LAB/env.sh.tmp $LAB/env.sh
}

# Fast path: everything asked for is running.
all_ok=1
for p in "${PARTS[@]}"; do part_ok $p || { all_ok=0; break; }; done
if [ $all_ok = 1 ] && [ -f $LAB/env.sh ]; then
  if want s3; then s3_bucket "$S3_BUCKET" || exit 1; fi
  write_env
  t "already up: ${PARTS[*]} (env: $LAB/env.sh)"
  exit 0
fi

# A port held by something that is not ours (e.g. a lab under another $LAB) would make daemons die
# with obscure errors; say so plainly instead.
port_guard() { # port pidfile...
  local port=$1 f; shift
  for f in "$@"; do pid_alive $LAB/pids/$f && return 0; done
  if ss -ltnH "sport = :$port" | grep -q .; then
    echo "up.sh: port $port is in use by a process this lab (LAB=$LAB) did not start:" >&2
    ss -ltnpH "sport = :$port" >&2 || true
    echo "up.sh: stop it (another lab? see its down.sh) or run with the LAB it was started with" >&2
    exit 1
  fi
}
want ceph && { port_guard 6789 ceph-mon.a.pid; port_guard 3300 ceph-mon.a.pid; }
want s3 && port_guard 7480 ceph-client.rgw.a.pid
want cinder && rabbit_pidfile
want cinder && { port_guard 5000 keystone.pid; port_guard 8776 cinder-api.pid; port_guard 5672 rabbitmq.pid; }
want iscsi && port_guard 3260 tgtd.pid

if [ $INSTALL = 1 ]; then
  PKGS=$({ cat $HERE/pkgs-host.txt; for p in "${PARTS[@]}"; do [ "$p" = s3 ] && continue; cat $HERE/pkgs-$p.txt; done; } | tr -s ' \n' '\n' | sort -u | tr '\n' ' ')
  INSTALLED=" $({ dpkg-query -W -f='${Package} ${Status}\n' $PKGS 2>/dev/null || true; } | awk '/install ok installed/{print $1}' | tr '\n' ' ') "
  MISSING=$(for p in $PKGS; do case "$INSTALLED" in *" $p "*) ;; *) echo "$p" ;; esac; done | tr '\n' ' ')
  if [ -z "${MISSING// /}" ]; then
    t "packages already installed"
  else
    t "installing packages (apt): $MISSING"
    # No daemon may start from its package's postinst: the lab starts its own, under $LAB.
    [ -e /usr/sbin/policy-rc.d ] || { printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; }
    apt-get update -qq > $LAB/logs/apt.log 2>&1 || { echo "apt-get update failed, see $LAB/logs/apt.log" >&2; tail -5 $LAB/logs/apt.log >&2; exit 1; }
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold $PKGS >> $LAB/logs/apt.log 2>&1 || {
      echo "apt-get install failed, see $LAB/logs/apt.log" >&2; tail -20 $LAB/logs/apt.log >&2; exit 1; }
    t "packages installed"
  fi
fi

if want ceph; then
  t "ceph: mon";   ceph_conf; ceph_bootstrap_mon || exit 1; ceph_start_mon || exit 1
  t "ceph: mgr";   ceph_start_mgr
  t "ceph: osd";   ceph_start_osd || exit 1
  t "ceph: pools"; ceph_pools
fi
if want s3; then
  t "ceph: rgw";   ceph_start_rgw || exit 1
  s3_bucket "$S3_BUCKET" || exit 1
fi
if want cinder; then
  t "rabbitmq";    rabbit_start
  t "keystone";    keystone_conf; keystone_bootstrap || exit 1; keystone_start || exit 1
  t "cinder";      cinder_conf; cinder_register || exit 1; demo_project || exit 1; cinder_start || exit 1
fi
if want iscsi; then
  t "tgt (iSCSI target)"; tgt_start
fi
if want cinder; then
  t "waiting for cinder-volume to report capacity"
  TOK=$(ks_token)
  PROJ=$(curl -sf -H "X-Auth-Token: $TOK" -H "X-Subject-Token: $TOK" http://127.0.0.1:5000/v3/auth/tokens | jq -r .token.project.id)
  ok=0
  for i in $(seq 90); do
    curl -sf -H "X-Auth-Token: $TOK" http://127.0.0.1:8776/v3/$PROJ/scheduler-stats/get_pools | jq -e '.pools|length>0' >/dev/null && { ok=1; break; }; sleep 2; done
  [ $ok = 1 ] || { echo "cinder-volume reported no pool; see $LAB/logs/cinder-volume.log" >&2; exit 1; }
  t "waiting for cinder-backup to report up"
  for i in $(seq 60); do
    curl -sf -H "X-Auth-Token: $TOK" "http://127.0.0.1:8776/v3/$PROJ/os-services?binary=cinder-backup" | jq -e '[.services[]|select(.state=="up")]|length>0' >/dev/null && break; sleep 2; done
  curl -sf -H "X-Auth-Token: $TOK" http://127.0.0.1:8776/v3/$PROJ/os-services | jq -r '.services[] | "  \(.binary) \(.host) \(.state)"'
fi
for p in "${PARTS[@]}"; do part_ok $p || { echo "up.sh: part $p is not healthy after bring-up; logs in $LAB/logs" >&2; exit 1; }; done
write_env
t "lab up: ${PARTS[*]} (env: $LAB/env.sh)"
