/**
 * This node's connector properties, as os-brick's get_connector_properties
 * builds them: what Cinder needs to export a volume to us.
 */
import { readFile, readdir } from 'node:fs/promises';
import { arch, hostname, networkInterfaces } from 'node:os';
import { join } from 'node:path';
import type { ConnectorProperties } from '../provider.js';

/** Overrides and test hooks of {@link connectorProperties}. */
export interface ConnectorPropsOptions {
  /** IP address to announce (default: first non-loopback IPv4, else 127.0.0.1). */
  ip?: string;
  /** Host name to announce (default: os.hostname()). */
  host?: string;
  multipath?: boolean;
  /** Filesystem root to read /etc and /sys from (tests). */
  root?: string;
  /** Network interfaces (tests). */
  interfaces?: ReturnType<typeof networkInterfaces>;
}

/** os-brick's platform names for Node's arch(). */
const PLATFORMS: Record<string, string> = { x64: 'x86_64', arm64: 'aarch64', ia32: 'i686', ppc64: 'ppc64le', s390x: 's390x' };

async function readText(path: string): Promise<string | undefined> {
  try {
    return await readFile(path, 'utf8');
  } catch {
    return undefined;
  }
}

/** First non-internal IPv4 address, or undefined. */
export function firstIPv4(ifaces: ReturnType<typeof networkInterfaces> = networkInterfaces()): string | undefined {
  for (const name of Object.keys(ifaces).sort()) {
    for (const a of ifaces[name] ?? []) {
      if (a.family === 'IPv4' && !a.internal) return a.address;
    }
  }
  return undefined;
}

/** The iSCSI initiator name from /etc/iscsi/initiatorname.iscsi. */
export async function iscsiInitiator(root = '/'): Promise<string | undefined> {
  const text = await readText(join(root, 'etc/iscsi/initiatorname.iscsi'));
  const m = text && /^\s*InitiatorName\s*=\s*(\S+)/m.exec(text);
  return m ? m[1] : undefined;
}

/** FC WWPNs and WWNNs from /sys/class/fc_host/hostN/port_name and node_name, without 0x. */
export async function fcNames(root = '/'): Promise<{ wwpns: string[]; wwnns: string[] }> {
  const dir = join(root, 'sys/class/fc_host');
  let hosts: string[];
  try {
    hosts = (await readdir(dir)).sort();
  } catch {
    return { wwpns: [], wwnns: [] };
  }
  const wwpns: string[] = [];
  const wwnns: string[] = [];
  const clean = (s: string | undefined) => s?.trim().replace(/^0x/i, '').toLowerCase();
  for (const h of hosts) {
    const p = clean(await readText(join(dir, h, 'port_name')));
    const n = clean(await readText(join(dir, h, 'node_name')));
    if (p) wwpns.push(p);
    if (n) wwnns.push(n);
  }
  return { wwpns, wwnns };
}

/** The NVMe host NQN from /etc/nvme/hostnqn. */
export async function nvmeHostNqn(root = '/'): Promise<string | undefined> {
  return (await readText(join(root, 'etc/nvme/hostnqn')))?.trim() || undefined;
}

/** Connector properties of this node (ip, host, initiator, wwpns/wwnns, nqn, multipath, platform, os_type). */
export async function connectorProperties(opts: ConnectorPropsOptions = {}): Promise<ConnectorProperties> {
  const root = opts.root ?? '/';
  const props: ConnectorProperties = {
    ip: opts.ip ?? firstIPv4(opts.interfaces) ?? '127.0.0.1',
    host: opts.host ?? hostname(),
    multipath: opts.multipath ?? false,
    platform: PLATFORMS[arch()] ?? arch(),
    os_type: 'linux2',
    do_local_attach: false,
  };
  const initiator = await iscsiInitiator(root);
  if (initiator) props.initiator = initiator;
  const fc = await fcNames(root);
  if (fc.wwpns.length) props.wwpns = fc.wwpns;
  if (fc.wwnns.length) props.wwnns = fc.wwnns;
  const nqn = await nvmeHostNqn(root);
  if (nqn) props.nqn = nqn;
  return props;
}
