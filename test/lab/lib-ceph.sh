# sourced by up.sh (and down.sh): Ceph mon/mgr/osd on a sparse file, radosgw S3 on 127.0.0.1:7480
S3_ACCESS_KEY=${S3_ACCESS_KEY:-LABACCESSKEY000000}
S3_SECRET_KEY=${S3_SECRET_KEY:-labsecretkey0000000000000000000000000000}
S3_BUCKET=${S3_BUCKET:-permafrost-test}
CEPH_DIR=$LAB/ceph
CEPH_CONF=$LAB/etc/ceph.conf
export CEPH_CONF
ceph_conf() {
  [ -f $LAB/etc/fsid ] || uuidgen > $LAB/etc/fsid
  local fsid; fsid=$(cat $LAB/etc/fsid)
  cat > $CEPH_CONF <<CONF
[global]
fsid = $fsid
mon_initial_members = a
mon_host = [v2:127.0.0.1:3300,v1:127.0.0.1:6789]
public_addr = 127.0.0.1
cluster_addr = 127.0.0.1
public_network = 127.0.0.0/8
auth_cluster_required = cephx
auth_service_required = cephx
auth_client_required = cephx
keyring = $LAB/etc/ceph.client.admin.keyring
run_dir = $CEPH_DIR/run
admin_socket = $CEPH_DIR/run/\$cluster-\$name.asok
log_file = $LAB/logs/ceph-\$name.log
pid_file = $LAB/pids/ceph-\$name.pid
osd_pool_default_size = 1
osd_pool_default_min_size = 1
osd_pool_default_pg_num = 8
osd_pool_default_pgp_num = 8
osd_pool_default_pg_autoscale_mode = off
osd_crush_chooseleaf_type = 0
mon_allow_pool_size_one = true
mon_warn_on_pool_no_redundancy = false
mon_allow_pool_delete = true
mon_max_pg_per_osd = 1000
mon_pg_warn_min_per_osd = 0
auth_allow_insecure_global_id_reclaim = false
mon_warn_on_insecure_global_id_reclaim_allowed = false
ms_bind_ipv6 = false

[mon]
mon_data = $CEPH_DIR/mon/\$cluster-\$id
mon_data_avail_warn = 1
mon_data_avail_crit = 0

[mgr]
mgr_data = $CEPH_DIR/mgr/\$cluster-\$id
keyring = $CEPH_DIR/mgr/\$cluster-\$id/keyring

[osd]
osd_data = $CEPH_DIR/osd/\$cluster-\$id
keyring = $CEPH_DIR/osd/\$cluster-\$id/keyring
osd_objectstore = bluestore
bluestore_block_path = $CEPH_DIR/osd/\$cluster-\$id/block.img
bluestore_block_create = true
bluestore_block_size = 21474836480
bluestore_block_db_create = false
bluestore_block_wal_create = false
osd_memory_target = 939524096
bluestore_cache_autotune = true
osd_op_num_shards = 2
osd_op_num_threads_per_shard = 1

[client]
admin_socket = $CEPH_DIR/run/\$cluster-\$name.\$pid.\$cctid.asok

[client.rgw.a]
keyring = $CEPH_DIR/rgw/keyring
rgw_frontends = beast endpoint=127.0.0.1:7480
rgw_data = $CEPH_DIR/rgw
rgw_dns_name = 127.0.0.1

[client.cinder]
keyring = $LAB/etc/ceph.client.cinder.keyring
CONF
}

C() { ceph -c $CEPH_CONF "$@"; }
pid_alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

ceph_bootstrap_mon() {
  [ -f $CEPH_DIR/mon/ceph-a/done ] && return 0
  mkdir -p $CEPH_DIR/{mon,mgr,osd,rgw,run}
  local fsid; fsid=$(cat $LAB/etc/fsid)
  ceph-authtool --create-keyring $CEPH_DIR/mon.keyring --gen-key -n mon. --cap mon 'allow *'
  ceph-authtool --create-keyring $LAB/etc/ceph.client.admin.keyring --gen-key -n client.admin \
     --cap mon 'allow *' --cap osd 'allow *' --cap mds 'allow *' --cap mgr 'allow *'
  ceph-authtool $CEPH_DIR/mon.keyring --import-keyring $LAB/etc/ceph.client.admin.keyring
  rm -f $CEPH_DIR/monmap
  monmaptool --create --addv a '[v2:127.0.0.1:3300,v1:127.0.0.1:6789]' --fsid $fsid $CEPH_DIR/monmap
  mkdir -p $CEPH_DIR/mon/ceph-a
  ceph-mon -c $CEPH_CONF --mkfs -i a --monmap $CEPH_DIR/monmap --keyring $CEPH_DIR/mon.keyring
  touch $CEPH_DIR/mon/ceph-a/done
}
ceph_start_mon() {
  pid_alive $LAB/pids/ceph-mon.a.pid || ceph-mon -c $CEPH_CONF -i a
  for i in $(seq 60); do timeout 10 ceph -c $CEPH_CONF mon stat >/dev/null 2>&1 && return 0; sleep 1; done
  echo "mon did not come up"; return 1
}
ceph_start_mgr() {
  mkdir -p $CEPH_DIR/mgr/ceph-x
  [ -s $CEPH_DIR/mgr/ceph-x/keyring ] || C auth get-or-create mgr.x mon 'allow profile mgr' osd 'allow *' mds 'allow *' -o $CEPH_DIR/mgr/ceph-x/keyring
  pid_alive $LAB/pids/ceph-mgr.x.pid || ceph-mgr -c $CEPH_CONF -i x
}
ceph_start_osd() {
  if [ ! -f $CEPH_DIR/osd/ceph-0/done ]; then
    mkdir -p $CEPH_DIR/osd/ceph-0
    local uuid key id; uuid=$(uuidgen); key=$(ceph-authtool --gen-print-key)
    printf '[osd.0]\n\tkey = %s\n' "$key" > $CEPH_DIR/osd/ceph-0/keyring
    id=$(echo "{\"cephx_secret\": \"$key\"}" | C osd new $uuid -i -)
    [ "$id" = 0 ] || { echo "unexpected osd id $id"; return 1; }
    ceph-osd -c $CEPH_CONF -i 0 --mkfs --osd-uuid $uuid || return 1
    touch $CEPH_DIR/osd/ceph-0/done
  fi
  pid_alive $LAB/pids/ceph-osd.0.pid || ceph-osd -c $CEPH_CONF -i 0
  for i in $(seq 90); do C osd stat -f json 2>/dev/null | grep -q '"num_up_osds":1' && return 0; sleep 1; done
  echo "osd did not come up"; return 1
}
ceph_pools() {
  C osd pool ls | grep -qx volumes || { C osd pool create volumes 16 16; C osd pool set volumes size 1 --yes-i-really-mean-it; rbd -c $CEPH_CONF pool init volumes; }
  [ -s $LAB/etc/ceph.client.cinder.keyring ] || C auth get-or-create client.cinder mon 'profile rbd' osd 'profile rbd pool=volumes' mgr 'profile rbd pool=volumes' -o $LAB/etc/ceph.client.cinder.keyring
}
ceph_start_rgw() {
  mkdir -p $CEPH_DIR/rgw
  [ -s $CEPH_DIR/rgw/keyring ] || C auth get-or-create client.rgw.a mon 'allow rw' osd 'allow rwx' mgr 'allow rw' -o $CEPH_DIR/rgw/keyring
  pid_alive $LAB/pids/ceph-client.rgw.a.pid || radosgw -c $CEPH_CONF -n client.rgw.a
  local up=0
  for i in $(seq 90); do curl -s -o /dev/null http://127.0.0.1:7480/ && { up=1; break; }; sleep 1; done
  [ $up = 1 ] || { echo "radosgw did not come up; see $LAB/logs/ceph-client.rgw.a.log"; return 1; }
  if ! radosgw-admin -c $CEPH_CONF user info --uid=lab >/dev/null 2>&1; then
    radosgw-admin -c $CEPH_CONF user create --uid=lab --display-name="Lab user" --access-key=$S3_ACCESS_KEY --secret-key=$S3_SECRET_KEY >/dev/null
  fi
}
# Create a bucket (idempotent) with curl's SigV4 signing; radosgw's region is "default". curl 7.88 does not
# send x-amz-content-sha256 by itself and radosgw refuses the signature without it.
EMPTY_SHA256=e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855
s3_bucket() {
  local code
  for i in $(seq 20); do
    code=$(curl -s -o $LAB/run/s3-bucket.out -w '%{http_code}' -X PUT --aws-sigv4 "aws:amz:default:s3" \
      --user "$S3_ACCESS_KEY:$S3_SECRET_KEY" -H "x-amz-content-sha256: $EMPTY_SHA256" "http://127.0.0.1:7480/$1") || true
    case $code in 200|409) return 0 ;; esac   # 409 BucketAlreadyExists/OwnedByYou
    sleep 1
  done
  echo "could not create bucket $1 (HTTP $code): $(cat $LAB/run/s3-bucket.out 2>/dev/null)"; return 1
}
