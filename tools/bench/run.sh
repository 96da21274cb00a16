#!/usr/bin/env bash
# Runs one benchmark with a release build: tools/bench/run.sh NAME [OPTIONS]
#   NAME: docker | scheduling | heartbeats | failover | rest | recovery | rolling | mesh | store | leader
# The build goes to .build-release (its own folder, so that it never races a debug build).
# `tools/bench/run.sh NAME --help` lists a benchmark's options.
set -euo pipefail
cd "$(dirname "$0")/../.."
[ $# -ge 1 ] || { echo "usage: tools/bench/run.sh docker|scheduling|heartbeats|failover|rest|recovery|rolling|mesh|store|leader [options]" >&2; exit 2; }
tools/setup.sh >/dev/null
ulimit -n 20000 2>/dev/null || true
swift build -c release --scratch-path .build-release --product orchctl >&2
swift build -c release --scratch-path .build-release --product orch-bench >&2
exec .build-release/release/orch-bench "$@"
