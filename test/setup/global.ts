// Global test setup (runs once per vitest run, in the main process): brings up the real parts the
// suites need with test/lab/up.sh and provides the result to the workers as `permafrostLab`
// (see test/setup/lab.ts; suites call ensureLab()). It prints how long the bring-up took, or why it
// did not run. Each suite checks for what it needs and skips with a printed reason otherwise.
//
// The lab is brought up only when the run includes a suite under test/real/ (a unit-only run stays
// fast), when running as root, and unless PERMAFROST_TEST_LAB=off. PERMAFROST_TEST_LAB may also name
// the parts (s3, ceph, cinder, iscsi; default all). A failed bring-up fails the run: set
// PERMAFROST_TEST_LAB=off to run without the lab.
import type { TestProject } from 'vitest/node';
import { labDir, labUnavailable, requestedParts, runUp, type LabProvided } from './lab.js';

/** True when the selected test files include a real-part suite (or when that cannot be told). */
async function selectsRealSuites(project: TestProject): Promise<boolean> {
  try {
    const vitest = project.vitest as unknown as {
      filenamePattern?: string[];
      globTestSpecifications(filters?: string[]): Promise<Array<{ moduleId: string }>>;
    };
    const specs = await vitest.globTestSpecifications(vitest.filenamePattern);
    return specs.some((s) => /[\\/]test[\\/]real[\\/]/.test(s.moduleId));
  } catch {
    return true;
  }
}

export default async function setup(project: TestProject): Promise<void> {
  const provide = (v: LabProvided): void => project.provide('permafrostLab', v);
  const why = labUnavailable();
  if (why) {
    console.warn(`[lab] not started: ${why}; suites that need it will skip`);
    provide({ skip: why });
    return;
  }
  if (!(await selectsRealSuites(project))) {
    const reason = 'no suite under test/real/ selected';
    provide({ skip: reason });
    return;
  }
  const parts = requestedParts();
  if (parts === 'off') return; // handled by labUnavailable
  const t0 = Date.now();
  console.warn(`[lab] bringing up ${parts.join(', ')} with test/lab/up.sh (LAB=${labDir()}) ...`);
  try {
    const env = await runUp(parts, (line) => {
      if (line.startsWith('[up.sh')) console.warn(`[lab] ${line}`);
    });
    console.warn(`[lab] up in ${((Date.now() - t0) / 1000).toFixed(1)} s: ${env.parts.join(' ')} (env: ${env.dir}/env.sh)`);
    provide(env);
  } catch (err) {
    console.warn(`[lab] bring-up failed after ${((Date.now() - t0) / 1000).toFixed(1)} s (set PERMAFROST_TEST_LAB=off to run without it)`);
    throw err;
  }
}
