/** @type {import('jest').Config} */
module.exports = {
  testEnvironment: 'node',
  globalSetup: '<rootDir>/test/global-setup.js',
  roots: ['<rootDir>/test'],
  testMatch: ['**/*.test.ts'],
  transform: {
    '^.+\\.ts$': ['ts-jest', { tsconfig: 'test/tsconfig.json', diagnostics: false }],
  },
  // The closing "N passed, N failed, N skipped" line that CI reads.
  reporters: ['default', '<rootDir>/test/summary-reporter.js'],
  testTimeout: 120000,
};
