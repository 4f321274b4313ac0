/**
 * This node's connector properties (os-brick's get_connector_properties): what
 * the cloud needs to export a volume to us.
 */
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { ConnectorProperties } from '../volume/provider.js';

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
  const m = text ? /^InitiatorName=(\S+)/m.exec(text) : null;
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

function firstAddress(): string {
  for (const addrs of Object.values(os.networkInterfaces())) {
    for (const a of addrs ?? []) if (a.family === 'IPv4' && !a.internal) return a.address;
  }
  return '127.0.0.1';
}

function onPath(cmd: string): boolean {
  const dirs = (process.env.PATH ?? '').split(':').concat(['/usr/sbin', '/sbin']);
  return dirs.some((d) => d && existsSync(path.join(d, cmd)));
}

/** Connector properties of this node; every field can be overridden. */
export function connectorProperties(
  overrides: Partial<ConnectorProperties> & { sysfsRoot?: string } = {},
): ConnectorProperties {
  const { sysfsRoot, ...rest } = overrides;
  const fc = fcPorts(sysfsRoot);
  const props: ConnectorProperties = {
    ip: firstAddress(),
    host: os.hostname(),
    multipath: onPath('multipathd') && existsSync('/etc/multipath.conf'),
    platform: os.arch() === 'x64' ? 'x86_64' : os.arch(),
    os_type: 'linux2',
    do_local_attach: false,
  };
  const initiator = iscsiInitiatorName();
  if (initiator) props.initiator = initiator;
  if (fc.wwpns.length) {
    props.wwpns = fc.wwpns;
    props.wwnns = fc.wwnns;
  }
  return { ...props, ...rest };
}
