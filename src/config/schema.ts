/**
 * Every configuration key the agent reads, in one table: its agent.ini section
 * and name, its environment variable, its default and what it means.
 * agent.ini.example is checked against this table by test/unit/config.test.ts.
 */
export type KeyType = 'string' | 'int' | 'bool' | 'size' | 'enum';

export interface KeySpec {
  section: string;
  name: string;
  env?: string;
  type: KeyType;
  default?: string;
  values?: string[];
  secret?: boolean;
  doc: string;
}

export const SCHEMA: KeySpec[] = [
  // [agent]
  { section: 'agent', name: 'state_dir', env: 'PERMAFROST_STATE_DIR', type: 'string', default: '/var/lib/permafrost', doc: 'Where the catalog (catalog.db), per-attachment run state and mount points live.' },
  { section: 'agent', name: 'host', env: 'PERMAFROST_HOST', type: 'string', doc: 'Name this agent records in backups, locks and the tags of temporary cloud resources. Default: the hostname.' },
  { section: 'agent', name: 'log_level', env: 'PERMAFROST_LOG_LEVEL', type: 'enum', values: ['debug', 'info', 'warn', 'error'], default: 'info', doc: 'Least severe log level written to stderr.' },
  { section: 'agent', name: 'concurrency', env: 'PERMAFROST_CONCURRENCY', type: 'int', default: '10', doc: 'Volumes backed up at the same time in batch runs.' },
  { section: 'agent', name: 'threads', env: 'PERMAFROST_THREADS', type: 'int', doc: 'Compression worker threads. Default: one per core.' },
  // [repository]
  { section: 'repository', name: 'url', env: 'PERMAFROST_REPO', type: 'string', doc: 'The repository: a local directory, or s3://bucket/prefix.' },
  { section: 'repository', name: 'key_file', env: 'PERMAFROST_KEY_FILE', type: 'string', doc: 'File holding the 256-bit repository key (hex). Set it to create or open an encrypted repository.' },
  { section: 'repository', name: 'compression_level', env: 'PERMAFROST_COMPRESSION_LEVEL', type: 'int', default: '3', doc: 'zstd level for new data (1 fastest … 19 smallest).' },
  { section: 'repository', name: 'pack_size', env: 'PERMAFROST_PACK_SIZE', type: 'size', default: '16M', doc: 'Target size of pack files (used when the repository is created).' },
  // [s3]
  { section: 's3', name: 'endpoint', env: 'PERMAFROST_S3_ENDPOINT', type: 'string', doc: 'S3 endpoint URL for non-AWS stores (Ceph RGW, MinIO, ...), e.g. http://rgw.example:7480.' },
  { section: 's3', name: 'region', env: 'AWS_REGION', type: 'string', default: 'us-east-1', doc: 'S3 region (Ceph RGW accepts "default" or any name).' },
  { section: 's3', name: 'path_style', env: 'PERMAFROST_S3_PATH_STYLE', type: 'bool', default: 'true', doc: 'Path-style addressing (bucket in the path), needed by most non-AWS stores.' },
  { section: 's3', name: 'access_key_id', env: 'AWS_ACCESS_KEY_ID', type: 'string', doc: 'S3 access key. Default: the AWS SDK chain (environment, ~/.aws).' },
  { section: 's3', name: 'secret_access_key', env: 'AWS_SECRET_ACCESS_KEY', type: 'string', secret: true, doc: 'S3 secret key. Never printed.' },
  { section: 's3', name: 'max_attempts', env: 'PERMAFROST_S3_MAX_ATTEMPTS', type: 'int', default: '6', doc: 'Attempts per S3 request on 5xx, 429, SlowDown and network errors (exponential backoff).' },
  // [volume]
  { section: 'volume', name: 'provider', env: 'PERMAFROST_PROVIDER', type: 'enum', values: ['local', 'cinder'], default: 'local', doc: 'Volume provider: local (sparse images in pool_dir, the embedded default) or cinder.' },
  { section: 'volume', name: 'pool_dir', env: 'PERMAFROST_POOL_DIR', type: 'string', doc: 'Local provider: directory holding volume images and records. Default: <state_dir>/volumes.' },
  { section: 'volume', name: 'wait_timeout', env: 'PERMAFROST_WAIT_TIMEOUT', type: 'int', default: '300', doc: 'Seconds to wait for a volume or snapshot to become ready, plus 10 s per GiB.' },
  // [connector]
  { section: 'connector', name: 'attach_mode', env: 'PERMAFROST_ATTACH_MODE', type: 'enum', values: ['auto', 'kernel', 'userspace'], default: 'auto', doc: 'Attach through kernel initiators (iscsiadm, rbd map) or userspace (qemu-storage-daemon/FUSE + loop). auto picks kernel when its module is available.' },
  { section: 'connector', name: 'timeout', env: 'PERMAFROST_ATTACH_TIMEOUT', type: 'int', default: '120', doc: 'Seconds an attach or detach helper script may run.' },
  { section: 'connector', name: 'ceph_conf', env: 'CEPH_CONF', type: 'string', doc: 'ceph.conf for RBD attachments (default: built from connection_info).' },
  { section: 'connector', name: 'ceph_keyring', env: 'PERMAFROST_CEPH_KEYRING', type: 'string', doc: 'Keyring for the Ceph user named in connection_info.' },
  // [cinder] — the standard OS_* variables and clouds.yaml (--os-cloud, OS_CLOUD) are read as the openstack client does;
  // keys set here win over them.
  { section: 'cinder', name: 'cloud', type: 'string', doc: 'Cloud name in clouds.yaml (default: $OS_CLOUD). Credentials not set in this section come from the standard OS_* variables and clouds.yaml, as the openstack client reads them.' },
  { section: 'cinder', name: 'auth_url', type: 'string', doc: 'Keystone v3 URL.' },
  { section: 'cinder', name: 'username', type: 'string', doc: 'User name (password auth).' },
  { section: 'cinder', name: 'password', type: 'string', secret: true, doc: 'Password. Never printed.' },
  { section: 'cinder', name: 'project_name', type: 'string', doc: 'Project to scope the token to.' },
  { section: 'cinder', name: 'project_id', type: 'string', doc: 'Project ID (instead of project_name).' },
  { section: 'cinder', name: 'user_domain_name', type: 'string', default: 'Default', doc: "The user's domain." },
  { section: 'cinder', name: 'project_domain_name', type: 'string', default: 'Default', doc: "The project's domain." },
  { section: 'cinder', name: 'application_credential_id', type: 'string', doc: 'Application credential ID (instead of a password).' },
  { section: 'cinder', name: 'application_credential_secret', type: 'string', secret: true, doc: 'Application credential secret. Never printed.' },
  { section: 'cinder', name: 'region', type: 'string', doc: 'Region of the block-storage endpoint.' },
  { section: 'cinder', name: 'interface', type: 'enum', values: ['public', 'internal', 'admin'], default: 'public', doc: 'Endpoint interface to use from the service catalog.' },
];
