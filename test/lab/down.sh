#!/bin/bash
# Stop every lab daemon started by up.sh (by PID file only). --purge also deletes all lab state (ceph OSD, DBs, keys).
HERE=$(cd "$(dirname "$0")" && pwd); LAB=${LAB:-/tmp/oslab}
stop() { # name pidfile
  local f=$LAB/pids/$2 p; [ -f "$f" ] || return 0; p=$(cat "$f")
  if [ -n "$p" ] && kill -0 "$p" 2>/dev/null; then
    kill -TERM "$p"; for i in $(seq 30); do kill -0 "$p" 2>/dev/null || break; sleep 0.5; done
    kill -0 "$p" 2>/dev/null && { echo "  $1 ($p) did not stop, KILL"; kill -KILL "$p"; }
    echo "stopped $1 ($p)"
  fi
  rm -f "$f"
}
# unmount rbd-fuse / loop devices the lab created
for m in $LAB/mnt/ext4 ; do mountpoint -q $m && umount $m; done
[ -f $LAB/run/loopdev ] && { losetup -d $(cat $LAB/run/loopdev) 2>/dev/null; rm -f $LAB/run/loopdev; }
mountpoint -q $LAB/mnt/rbdfuse && fusermount -u $LAB/mnt/rbdfuse
pid_ok() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }
pid_ok $LAB/pids/tgtd.pid && { tgtadm --op update --mode sys --name State -v offline >/dev/null 2>&1; for tid in $(tgtadm --lld iscsi --op show --mode target | sed -n "s/^Target \([0-9]*\):.*/\1/p"); do tgtadm --lld iscsi --op delete --mode target --tid $tid --force; done; tgtadm --op delete --mode system >/dev/null 2>&1; sleep 1; }
stop tgtd tgtd.pid

for s in backup api scheduler volume; do stop cinder-$s cinder-$s.pid; done
stop keystone-uwsgi keystone.pid
if [ -f $LAB/pids/rabbitmq.pid ]; then
  . $HERE/lib-ceph.sh; . $HERE/lib-os.sh
  R /usr/lib/rabbitmq/bin/rabbitmqctl -q shutdown >/dev/null 2>&1 && echo "stopped rabbitmq"
  stop rabbitmq-wrapper rabbitmq.pid
fi
stop epmd epmd.pid
stop radosgw ceph-client.rgw.a.pid
stop ceph-osd ceph-osd.0.pid
stop ceph-mgr ceph-mgr.x.pid
stop ceph-mon ceph-mon.a.pid
if [ "$1" = "--purge" ]; then
  rm -rf $LAB/ceph $LAB/rabbit $LAB/keystone $LAB/cinder $LAB/nova $LAB/placement $LAB/tgt $LAB/etc $LAB/run $LAB/logs $LAB/env.sh
  echo "purged lab state"
fi
