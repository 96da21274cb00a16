#!/usr/bin/env bash
# The test command: sets the machine up (Docker included), then runs every test.
# Fails when the tests against the real Docker engine did not run.
set -euo pipefail
cd "$(dirname "$0")/.."

tools/setup.sh

# The REST API is checked against Protocol/openapi.yaml with openapi-core, in a virtual
# environment of its own (pinned versions; the system's packages are left alone).
if [ ! -x .venv-test/bin/python ] || ! .venv-test/bin/python -c 'import openapi_core, requests, yaml, schemathesis, dns.message' 2>/dev/null; then
  echo "test.sh: installing the Python packages of tools/requirements-test.txt into .venv-test"
  python3 -m venv .venv-test
  .venv-test/bin/pip install --quiet --disable-pip-version-check -r tools/requirements-test.txt
fi
export ORCH_PYTHON="$PWD/.venv-test/bin/python"

log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
# A hung test must not hang CI: the whole run has a deadline.
# Suites run one after another: on 2 cores, Docker-heavy suites side by side starve the
# heartbeats that other suites time (and the whole run takes about a minute anyway).
timeout --kill-after=30s "${ORCH_TEST_TIMEOUT:-3000}" swift test --no-parallel "$@" 2>&1 | tee "$log" || status=$?
if [ "$status" -ne 0 ]; then
  echo "test.sh: swift test failed (exit $status)" >&2
  exit "$status"
fi

# Every suite that needs Docker says so in its name; at least one must have run and passed.
if [ "$#" -eq 0 ] && ! grep -qE 'Suite "[^"]*\(Docker\)[^"]*" passed' "$log"; then
  echo "test.sh: the tests against the real Docker engine did not run" >&2
  exit 1
fi
# The cluster protocol's decoder and the DNS codec under a coverage-guided fuzzer, a minute each (tools/fuzz/).
if [ "$#" -eq 0 ]; then
  tools/fuzz/run.sh 60
fi
echo "test.sh: all tests passed"
