/** Open the configured volume provider: local (embedded default) or cinder. */
import { join } from 'node:path';
import type { Config } from '../config/config.js';
import { CinderVolumeProvider } from './cinder/provider.js';
import { LocalVolumeProvider } from './local.js';
import type { VolumeProvider } from './provider.js';

export interface ProviderChoice {
  provider?: string;
  osCloud?: string;
}

export async function openProvider(config: Config, choice: ProviderChoice = {}): Promise<VolumeProvider> {
  const kind = choice.provider ?? config.get('volume', 'provider') ?? 'local';
  if (kind === 'local') return new LocalVolumeProvider({ poolDir: config.get('volume', 'pool_dir') ?? join(config.stateDir, 'volumes'), host: config.host });
  if (kind === 'cinder') {
    const explicit: Record<string, string | undefined> = {};
    for (const k of ['auth_url', 'username', 'password', 'project_name', 'project_id', 'user_domain_name', 'project_domain_name', 'application_credential_id', 'application_credential_secret', 'region', 'interface']) {
      // Only values an operator set in agent.ini (defaults would mask OS_* and clouds.yaml).
      if (config.where('cinder', k) !== 'default') explicit[k === 'region' ? 'region_name' : k] = config.get('cinder', k);
    }
    const waitBase = config.int('volume', 'wait_timeout');
    return CinderVolumeProvider.create(
      { cloud: choice.osCloud ?? config.get('cinder', 'cloud'), explicit },
      { waitBaseMs: waitBase !== undefined ? waitBase * 1000 : undefined },
    );
  }
  throw new Error(`unknown volume provider ${kind}`);
}
