import { defineConfig } from 'vitest/config';

// Three projects, run one after the other:
// - unit: the inner loop, under a minute (single files in seconds): in-process tests, no servers, files in parallel;
// - cli: the CLI as an operator runs it (child processes, kill -9, full disks): minutes, files in parallel,
//   root-only cases skip with a printed reason;
// - real: real block devices, filesystems, S3 (radosgw), Keystone and Cinder brought up by
//   test/setup/global.ts; files one at a time, because they share loop devices, mounts and the lab.
export default defineConfig({
  test: {
    testTimeout: 180_000,
    hookTimeout: 900_000,
    pool: 'forks',
    reporters: ['default'],
    projects: [
      { extends: true, test: { name: 'unit', include: ['test/unit/**/*.test.ts'], exclude: ['test/unit/cli-*.test.ts'], sequence: { groupOrder: 0 } } },
      { extends: true, test: { name: 'cli', include: ['test/unit/cli-*.test.ts'], sequence: { groupOrder: 1 } } },
      {
        extends: true,
        test: {
          name: 'real',
          include: ['test/real/**/*.test.ts'],
          globalSetup: ['test/setup/global.ts'],
          poolOptions: { forks: { singleFork: true } },
          sequence: { groupOrder: 2 },
        },
      },
    ],
  },
});
