// Vitest configuration: forked workers (each test file gets its own process and its own addon instance).
import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    pool: 'forks',
    // --expose-gc lets the mapping tests prove that a garbage-collected buffer unmaps its memory.
    poolOptions: { forks: { execArgv: ['--expose-gc'] } },
    globalSetup: ['test/setup/machine.ts'],
    testTimeout: 60_000,
    hookTimeout: 120_000,
    reporters: ['default', ['json', { outputFile: 'test-results.json' }]],
  },
});
