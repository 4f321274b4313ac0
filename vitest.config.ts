import { defineConfig } from 'vitest/config';

// Two kinds of suites: test/unit (seconds, no root, no servers) and test/real
// (real block devices, filesystems, S3, Keystone and Cinder; started by test/setup).
export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    globalSetup: ['test/setup/global.ts'],
    testTimeout: 120_000,
    hookTimeout: 900_000,
    pool: 'forks',
    reporters: ['default'],
  },
});
