/** Block engine: fixed blocks, zero skip, deduplicated block map, sparse restore. */
export { backupDevice, type BlockBackupOptions, type BlockBackupInfo } from './backup.js';
export { restoreDevice, verifyTarget, type BlockRestoreOptions, type BlockRestoreResult } from './restore.js';
export * from './map.js';
export { probeDevice, blockDeviceSize, type DeviceInfo } from './device.js';
