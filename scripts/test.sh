#!/usr/bin/env bash
# The whole test suite: setup, type check, then vitest (unit and integration tests with real peers).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
npx tsc --noEmit -p .
npx vitest run
