// What every Node client here prints, and the bound it runs under.
"use strict";

// A finish(exitCode) that prints `result` as one JSON line (with ok: true
// only for exit code 0) and exits; after `seconds` it is called with 2, and
// "timed out" in result.errors.
function report(result, seconds) {
  function finish(exitCode) {
    result.ok = exitCode === 0;
    process.stdout.write(JSON.stringify(result) + "\n");
    process.exit(exitCode);
  }

  setTimeout(() => {
    result.errors.push("timed out");
    finish(2);
  }, seconds * 1000).unref();
  return finish;
}

module.exports = { report };
