/**
 * This node's connector properties, as os-brick's get_connector_properties
 * builds them: what the cloud needs to export a volume to us.
 */
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { ConnectorProperties } from '../volume/provider.js';

/** Overrides (any field) and test hooks of {@link connectorProperties}. */
export interface ConnectorPropsOptions extends Partial<ConnectorProperties> {
  /** Filesystem root to read /etc and /sys from (tests); default '/'. */
  root?: string;
  /** Network interfaces (tests); default os.networkInterfaces(). */
  interfaces?: ReturnType<typeof os.networkInterfaces>;
}

/** os-brick's platform names for Node's arch(). */
const PLATFORMS: Record<string, string> = { x64: 'x86_64', arm64: 'aarch64', ia32: 'i686', ppc64: 'ppc64le', s390x: 's390x' };

function readTrim(file: string): string | undefined {
  try {
    return readFileSync(file, 'utf8').trim();
  } catch {
    return undefined;
  }
}

/** The iSCSI initiator name from /etc/iscsi/initiatorname.iscsi, if open-iscsi is configured. */
export function iscsiInitiatorName(file = '/etc/iscsi/initiatorname.iscsi'): string | undefined {
  const text = readTrim(file);
  const m = text ? /^\s*InitiatorName\s*=\s*(\S+)/m.exec(text) : null;
  return m?.[1];
}

/** WWPNs and WWNNs of the FC HBAs (without 0x, lower case) under <sysfsRoot>/class/fc_host. */
export function fcPorts(sysfsRoot = '/sys'): { wwpns: string[]; wwnns: string[] } {
  const dir = path.join(sysfsRoot, 'class', 'fc_host');
  const wwpns: string[] = [];
  const wwnns: string[] = [];
  let hosts: string[] = [];
  try {
    hosts = readdirSync(dir).filter((h) => h.startsWith('host')).sort();
  } catch {
    return { wwpns, wwnns };
  }
  const norm = (v: string | undefined): string | undefined => v?.toLowerCase().replace(/^0x/, '');
  for (const h of hosts) {
    const p = norm(readTrim(path.join(dir, h, 'port_name')));
    const n = norm(readTrim(path.join(dir, h, 'node_name')));
    if (p) wwpns.push(p);
    if (n) wwnns.push(n);
  }
  return { wwpns, wwnns };
}

/** The NVMe host NQN from /etc/nvme/hostnqn. */
export function nvmeHostNqn(file = '/etc/nvme/hostnqn'): string | undefined {
  return readTrim(file) || undefined;
}

/** First non-internal IPv4 address, or undefined. */
export function firstIPv4(ifaces: ReturnType<typeof os.networkInterfaces> = os.networkInterfaces()): string | undefined {
  for (const addrs of Object.values(ifaces)) {
    for (const a of addrs ?? []) if (a.family === 'IPv4' && !a.internal) return a.address;
  }
  return undefined;
}

function onPath(cmd: string): boolean {
  const dirs = (process.env.PATH ?? '').split(':').concat(['/usr/sbin', '/sbin']);
  return dirs.some((d) => d && existsSync(path.join(d, cmd)));
}

/**
 * Connector properties of this node (ip, host, initiator, wwpns/wwnns, nqn, multipath, platform,
 * os_type); every field can be overridden.
 */
export function connectorProperties(opts: ConnectorPropsOptions = {}): ConnectorProperties {
  const { root = '/', interfaces, ...overrides } = opts;
  const props: ConnectorProperties = {
    ip: firstIPv4(interfaces) ?? '127.0.0.1',
    host: os.hostname(),
    multipath: onPath('multipathd') && existsSync(path.join(root, 'etc/multipath.conf')),
    platform: PLATFORMS[os.arch()] ?? os.arch(),
    os_type: 'linux2',
    do_local_attach: false,
  };
  const initiator = iscsiInitiatorName(path.join(root, 'etc/iscsi/initiatorname.iscsi'));
  if (initiator) props.initiator = initiator;
  const fc = fcPorts(path.join(root, 'sys'));
  if (fc.wwpns.length) props.wwpns = fc.wwpns;
  if (fc.wwnns.length) props.wwnns = fc.wwnns;
  const nqn = nvmeHostNqn(path.join(root, 'etc/nvme/hostnqn'));
  if (nqn) props.nqn = nqn;
  return { ...props, ...overrides };
}
