# sourced by up.sh: rabbitmq, keystone, cinder, tgt
LAB_ISCSI_IQN=${LAB_ISCSI_IQN:-iqn.2024-01.lab.oslab:lun1}
ADMIN_PASS=${ADMIN_PASS:-labadmin}
CINDER_PASS=${CINDER_PASS:-labcinder}
RABBIT_PASS=${RABBIT_PASS:-labrabbit}
# cinder-backup: BACKUP_DRIVER=posix (default: files under $LAB/cinder/backups) or s3 (radosgw bucket volumebackups);
# BACKUP_COMPRESSION=zlib (Cinder's default) | zstd | bz2 | none. Both are read each time up.sh writes cinder.conf.
BACKUP_DRIVER=${BACKUP_DRIVER:-posix}
BACKUP_COMPRESSION=${BACKUP_COMPRESSION:-zlib}

rabbit_env() {
  export HOME_RABBIT=$LAB/rabbit
  mkdir -p $LAB/rabbit/{mnesia,log}
  cat > $LAB/rabbit/rabbitmq.conf <<CONF
listeners.tcp.default = 127.0.0.1:5672
loopback_users = none
management.tcp.port = 0
CONF
  cat > $LAB/rabbit/rabbitmq-env.conf <<CONF
CONF
}
R() { env HOME=$LAB/rabbit RABBITMQ_NODENAME=rabbit@localhost RABBITMQ_CONFIG_FILE=$LAB/rabbit/rabbitmq \
      RABBITMQ_MNESIA_BASE=$LAB/rabbit/mnesia RABBITMQ_LOG_BASE=$LAB/rabbit/log RABBITMQ_ENABLED_PLUGINS_FILE=$LAB/rabbit/enabled_plugins \
      RABBITMQ_CONF_ENV_FILE=$LAB/rabbit/rabbitmq-env.conf ERL_EPMD_ADDRESS=127.0.0.1 RABBITMQ_DIST_PORT=25672 \
      RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}" "$@"; }
# The PID of the setsid subshell dies with it; the broker's own PID is in its mnesia directory.
rabbit_pidfile() {
  local f=$LAB/rabbit/mnesia/rabbit@localhost.pid
  [ -s "$f" ] && kill -0 "$(cat "$f")" 2>/dev/null && cp "$f" $LAB/pids/rabbitmq.pid
  return 0
}
rabbit_start() {
  rabbit_env
  [ -f $LAB/rabbit/enabled_plugins ] || echo '[].' > $LAB/rabbit/enabled_plugins
  if ! R /usr/lib/rabbitmq/bin/rabbitmqctl -q status >/dev/null 2>&1; then
    R setsid /usr/lib/rabbitmq/bin/rabbitmq-server > $LAB/logs/rabbitmq.out 2>&1 < /dev/null &
    echo $! > $LAB/pids/rabbitmq.pid
    R /usr/lib/rabbitmq/bin/rabbitmqctl wait --timeout 120 $LAB/rabbit/mnesia/rabbit@localhost.pid >/dev/null 2>&1 || \
      { for i in $(seq 60); do R /usr/lib/rabbitmq/bin/rabbitmqctl -q status >/dev/null 2>&1 && break; sleep 2; done; }
  fi
  rabbit_pidfile
  ss -ltnpH 'sport = :4369' | grep -o 'epmd",pid=[0-9]*' | head -1 | grep -o '[0-9]*$' > $LAB/pids/epmd.pid || true
  R /usr/lib/rabbitmq/bin/rabbitmqctl -q list_users | grep -q '^openstack' || \
    { R /usr/lib/rabbitmq/bin/rabbitmqctl -q add_user openstack $RABBIT_PASS; R /usr/lib/rabbitmq/bin/rabbitmqctl -q set_permissions openstack '.*' '.*' '.*'; }
}

# WAL journal: without it keystone/cinder hit "sqlite3.OperationalError: database is locked"
sqlite_wal() { /usr/bin/python3 -c "import sqlite3,sys; print(sys.argv[1], sqlite3.connect(sys.argv[1]).execute('PRAGMA journal_mode=WAL').fetchone()[0])" "$1"; }
keystone_conf() {
  mkdir -p $LAB/keystone/{fernet-keys,credential-keys}
  cat > $LAB/keystone/keystone.conf <<CONF
[DEFAULT]
log_file = $LAB/logs/keystone.log
use_stderr = false
[database]
connection = sqlite:///$LAB/keystone/keystone.db
[token]
provider = fernet
expiration = 86400
[fernet_tokens]
key_repository = $LAB/keystone/fernet-keys
[credential]
key_repository = $LAB/keystone/credential-keys
[cache]
enabled = false
[oslo_policy]
enforce_new_defaults = false
enforce_scope = false
CONF
}
K() { keystone-manage --config-file $LAB/keystone/keystone.conf "$@"; }
keystone_bootstrap() {
  [ -f $LAB/keystone/done ] && return 0
  K db_sync
  sqlite_wal $LAB/keystone/keystone.db
  K fernet_setup --keystone-user root --keystone-group root
  K credential_setup --keystone-user root --keystone-group root
  K bootstrap --bootstrap-password $ADMIN_PASS --bootstrap-username admin --bootstrap-project-name admin \
    --bootstrap-role-name admin --bootstrap-service-name keystone --bootstrap-region-id RegionOne \
    --bootstrap-admin-url http://127.0.0.1:5000/v3 --bootstrap-public-url http://127.0.0.1:5000/v3 --bootstrap-internal-url http://127.0.0.1:5000/v3
  touch $LAB/keystone/done
}
keystone_start() {
  pid_alive $LAB/pids/keystone.pid || \
    setsid uwsgi --plugin python3 --http-socket 127.0.0.1:5000 --add-header "Connection: close" --wsgi-file /usr/bin/keystone-wsgi-public \
      --env OS_KEYSTONE_CONFIG_FILES=$LAB/keystone/keystone.conf --master --processes 2 --threads 1 --enable-threads \
      --pidfile $LAB/pids/keystone.pid --daemonize $LAB/logs/keystone-uwsgi.log --die-on-term --lazy-apps
  for i in $(seq 60); do curl -sf http://127.0.0.1:5000/v3 >/dev/null && return 0; sleep 1; done
  echo "keystone did not come up"; return 1
}

backup_conf() { # [DEFAULT] lines for cinder-backup
  echo "backup_compression_algorithm = $BACKUP_COMPRESSION"
  echo "backup_workers = 1"
  case $BACKUP_DRIVER in
    s3) cat <<C
backup_driver = cinder.backup.drivers.s3.S3BackupDriver
backup_s3_endpoint_url = http://127.0.0.1:7480
backup_s3_store_access_key = $S3_ACCESS_KEY
backup_s3_store_secret_key = $S3_SECRET_KEY
backup_s3_store_bucket = volumebackups
C
    ;;
    *) cat <<C
backup_driver = cinder.backup.drivers.posix.PosixBackupDriver
backup_posix_path = $LAB/cinder/backups
C
    ;;
  esac
}
cinder_auth() { # the cinder service user's credentials ([keystone_authtoken], [nova])
  cat <<C
auth_url = http://127.0.0.1:5000/v3
auth_type = password
project_domain_name = Default
user_domain_name = Default
project_name = service
username = cinder
password = $CINDER_PASS
C
}
cinder_conf() {
  mkdir -p $LAB/cinder/{lock,state,backups}
  [ -f $LAB/etc/rbd_secret_uuid ] || uuidgen > $LAB/etc/rbd_secret_uuid
  cat > $LAB/cinder/cinder.conf <<CONF
[DEFAULT]
state_path = $LAB/cinder/state
log_dir = $LAB/logs
use_stderr = false
debug = false
auth_strategy = keystone
transport_url = rabbit://openstack:$RABBIT_PASS@127.0.0.1:5672/
api_paste_config = /etc/cinder/api-paste.ini
osapi_volume_listen = 127.0.0.1
osapi_volume_listen_port = 8776
osapi_volume_workers = 1
enabled_backends = ceph
default_volume_type = __DEFAULT__
my_ip = 127.0.0.1
host = labhost
glance_api_servers = http://127.0.0.1:9292
periodic_interval = 10
report_interval = 10
service_down_time = 60
$(backup_conf)
[database]
connection = sqlite:///$LAB/cinder/cinder.db
[oslo_concurrency]
lock_path = $LAB/cinder/lock
[keystone_authtoken]
www_authenticate_uri = http://127.0.0.1:5000/v3
$(cinder_auth)
service_token_roles_required = true
[oslo_messaging_rabbit]
heartbeat_timeout_threshold = 0
[nova]
$(cinder_auth)
[ceph]
volume_driver = cinder.volume.drivers.rbd.RBDDriver
volume_backend_name = ceph
rbd_pool = volumes
rbd_ceph_conf = $LAB/etc/ceph.conf
rbd_user = cinder
rbd_secret_uuid = $(cat $LAB/etc/rbd_secret_uuid)
rbd_flatten_volume_from_snapshot = false
rbd_max_clone_depth = 5
rbd_store_chunk_size = 4
rados_connect_timeout = -1
report_discard_supported = true
CONF
}

# keystone v3 helper (curl) -------------------------------------------------
ks_token() { # admin project-scoped token
  curl -si -H 'Content-Type: application/json' http://127.0.0.1:5000/v3/auth/tokens -d '{"auth":{"identity":{"methods":["password"],"password":{"user":{"name":"admin","domain":{"name":"Default"},"password":"'$ADMIN_PASS'"}}},"scope":{"project":{"name":"admin","domain":{"name":"Default"}}}}}' \
   | awk -F': ' 'tolower($1)=="x-subject-token"{print $2}' | tr -d '\r'
}
KS=http://127.0.0.1:5000/v3
ksget()  { curl -sf -H "X-Auth-Token: $TOK" "$KS$1"; }
kspost() { curl -sf -H "X-Auth-Token: $TOK" -H 'Content-Type: application/json' -X POST "$KS$1" -d "$2"; }
ksput()  { curl -sf -H "X-Auth-Token: $TOK" -X PUT "$KS$1"; }
cinder_register() {
  [ -f $LAB/cinder/registered ] && return 0
  TOK=$(ks_token); [ -n "$TOK" ] || { echo "no keystone token"; return 1; }
  local pid uid rid sid
  pid=$(ksget "/projects?name=service" | jq -r '.projects[0].id // empty')
  [ -n "$pid" ] || pid=$(kspost /projects '{"project":{"name":"service","domain_id":"default"}}' | jq -r .project.id)
  uid=$(ksget "/users?name=cinder" | jq -r '.users[0].id // empty')
  [ -n "$uid" ] || uid=$(kspost /users '{"user":{"name":"cinder","domain_id":"default","password":"'$CINDER_PASS'"}}' | jq -r .user.id)
  for role in admin service; do
    rid=$(ksget "/roles?name=$role" | jq -r '.roles[0].id // empty')
    [ -n "$rid" ] || rid=$(kspost /roles '{"role":{"name":"'$role'"}}' | jq -r .role.id)
    ksput /projects/$pid/users/$uid/roles/$rid
  done
  sid=$(ksget "/services?type=volumev3" | jq -r '.services[0].id // empty')
  [ -n "$sid" ] || sid=$(kspost /services '{"service":{"name":"cinderv3","type":"volumev3","description":"Block Storage"}}' | jq -r .service.id)
  for ep in public internal admin; do
    ksget "/endpoints?service_id=$sid&interface=$ep" | jq -e '.endpoints|length>0' >/dev/null || \
      kspost /endpoints '{"endpoint":{"service_id":"'$sid'","interface":"'$ep'","region_id":"RegionOne","url":"http://127.0.0.1:8776/v3/%(project_id)s"}}' >/dev/null
  done
  [ "$(ksget "/endpoints?service_id=$sid" | jq '.endpoints|length')" = 3 ] || { echo "endpoint registration failed"; return 1; }
  touch $LAB/cinder/registered
}
# a non-admin project and user (role member), for tenant-scoped runs
DEMO_PASS=${DEMO_PASS:-labdemo}
demo_project() {
  [ -f $LAB/keystone/demo-done ] && return 0
  TOK=$(ks_token); [ -n "$TOK" ] || { echo "no keystone token"; return 1; }
  local pid uid rid
  pid=$(ksget "/projects?name=demo" | jq -r '.projects[0].id // empty')
  [ -n "$pid" ] || pid=$(kspost /projects '{"project":{"name":"demo","domain_id":"default"}}' | jq -r .project.id)
  uid=$(ksget "/users?name=demo" | jq -r '.users[0].id // empty')
  [ -n "$uid" ] || uid=$(kspost /users '{"user":{"name":"demo","domain_id":"default","password":"'$DEMO_PASS'"}}' | jq -r .user.id)
  rid=$(ksget "/roles?name=member" | jq -r '.roles[0].id // empty')
  [ -n "$rid" ] || rid=$(kspost /roles '{"role":{"name":"member"}}' | jq -r .role.id)
  ksput /projects/$pid/users/$uid/roles/$rid
  touch $LAB/keystone/demo-done
}
CM() { cinder-manage --config-file $LAB/cinder/cinder.conf "$@"; }
cinder_start() {
  [ -f $LAB/cinder/dbdone ] || { CM db sync > $LAB/logs/cinder-dbsync.out 2>&1 && sqlite_wal $LAB/cinder/cinder.db && touch $LAB/cinder/dbdone; }
  local svc
  for svc in api scheduler volume backup; do
    pid_alive $LAB/pids/cinder-$svc.pid && continue
    if [ $svc = backup ]; then
      # cinder-backup reads RBD volumes through os-brick's RBD connector (librbd, no kernel), which insists on reading
      # /etc/ceph/ceph.client.cinder.keyring ("Keyring path ... is not readable" otherwise). Instead of writing to the
      # host's /etc/ceph, run it in a private mount namespace where /etc/ceph is $LAB/etc (same PID: unshare and sh exec).
      setsid unshare -m --propagation private sh -c 'mount --bind "$0" /etc/ceph && exec "$@"' $LAB/etc \
        cinder-backup --config-file $LAB/cinder/cinder.conf > $LAB/logs/cinder-backup.out 2>&1 < /dev/null &
    else
      setsid cinder-$svc --config-file $LAB/cinder/cinder.conf > $LAB/logs/cinder-$svc.out 2>&1 < /dev/null &
    fi
    echo $! > $LAB/pids/cinder-$svc.pid
  done
  for i in $(seq 90); do curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:8776/ | grep -q 300 && break; sleep 1; done
}

tgt_start() { # userspace iSCSI target with one 256 MiB file-backed LUN on 127.0.0.1:3260
  mkdir -p $LAB/tgt; [ -f $LAB/tgt/lun1.img ] || truncate -s 256M $LAB/tgt/lun1.img
  if ! pid_alive $LAB/pids/tgtd.pid; then
    setsid tgtd -f --iscsi portal=127.0.0.1:3260 > $LAB/logs/tgtd.out 2>&1 < /dev/null &
    echo $! > $LAB/pids/tgtd.pid; sleep 1
  fi
  local IQN=$LAB_ISCSI_IQN
  tgtadm --lld iscsi --op show --mode target | grep -q "$IQN" || {
    tgtadm --lld iscsi --op new --mode target --tid 1 -T $IQN
    tgtadm --lld iscsi --op new --mode logicalunit --tid 1 --lun 1 -b $LAB/tgt/lun1.img
    tgtadm --lld iscsi --op bind --mode target --tid 1 -I ALL; }
}
