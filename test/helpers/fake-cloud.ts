/**
 * The FakeCloud of a unit test file (Keystone and Cinder on a loopback port): started before the
 * file's tests, stopped after them, and put back to its starting state before each test.
 */
import { afterAll, beforeAll, beforeEach } from 'vitest';
import { FakeCloud } from '../../src/volume/cinder/testing/fake-cloud.js';

/**
 * A FakeCloud for the tests of this file. Before each test: no faults, no logged requests, no
 * volumes, snapshots, attachments or messages, and the starting microversion, quota, creating
 * polls, token lifetime, authentication delay and count (users and issued tokens are kept).
 */
export function useFakeCloud(): FakeCloud {
  const cloud = new FakeCloud();
  beforeAll(async () => {
    await cloud.start();
  });
  afterAll(async () => {
    await cloud.stop();
  });
  beforeEach(() => {
    cloud.faults = [];
    cloud.requests = [];
    cloud.volumes.clear();
    cloud.snapshots.clear();
    cloud.attachments.clear();
    cloud.messages = [];
    cloud.creatingPolls = 1;
    cloud.maxMicroversion = '3.70';
    cloud.quotaGiB = 1000;
    cloud.tokenLifetimeS = 3600;
    cloud.authDelayMs = 0;
    cloud.authCount = 0;
  });
  return cloud;
}
