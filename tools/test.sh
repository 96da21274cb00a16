#!/usr/bin/env bash
# The test command: sets the machine up (Docker included), then runs every test.
# Fails when the tests against the real Docker engine did not run.
set -euo pipefail
cd "$(dirname "$0")/.."

tools/setup.sh

log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
# A hung test must not hang CI: the whole run has a deadline.
timeout --kill-after=30s "${ORCH_TEST_TIMEOUT:-3000}" swift test "$@" 2>&1 | tee "$log" || status=$?
if [ "$status" -ne 0 ]; then
  echo "test.sh: swift test failed (exit $status)" >&2
  exit "$status"
fi

# Every suite that needs Docker says so in its name; at least one must have run and passed.
if [ "$#" -eq 0 ] && ! grep -qE 'Suite "[^"]*\(Docker\)[^"]*" passed' "$log"; then
  echo "test.sh: the tests against the real Docker engine did not run" >&2
  exit 1
fi
echo "test.sh: all tests passed"
