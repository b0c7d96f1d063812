// Prints the closing line CI reads: "N passed, N failed, N skipped".
// Jest prints its own summary after custom reporters return, so the line is
// written at process exit to be the very last one. A suite that fails to
// import (testExecError, or failing with no test results) counts as failed.
// With TOKENSIEVE_TEST_SUMMARY=<file>, the counts are also written there as
// JSON so .ci/run can add up several runs.
const fs = require('fs');

class SummaryReporter {
  onRunComplete(_contexts, results) {
    let passed = 0;
    let failed = 0;
    let skipped = 0;
    for (const suite of results.testResults) {
      passed += suite.numPassingTests;
      failed += suite.numFailingTests;
      skipped += suite.numPendingTests + suite.numTodoTests;
      const broken = suite.testExecError || (suite.failureMessage && suite.numFailingTests === 0);
      if (broken) failed += 1;
    }
    if (results.numRuntimeErrorTestSuites > 0 && failed === 0) failed = results.numRuntimeErrorTestSuites;
    const line = `${passed} passed, ${failed} failed, ${skipped} skipped`;
    if (process.env.TOKENSIEVE_TEST_SUMMARY) {
      fs.writeFileSync(process.env.TOKENSIEVE_TEST_SUMMARY, JSON.stringify({ passed, failed, skipped }));
    }
    const cudaSkip = process.env.TOKENSIEVE_CUDA_SKIP_REASON;
    process.once('exit', () => {
      if (cudaSkip && skipped > 0) process.stdout.write(`(skipped: the CUDA suites, because ${cudaSkip})\n`);
      process.stdout.write(`${line}\n`);
    });
  }
}

module.exports = SummaryReporter;
