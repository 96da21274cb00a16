#!/usr/bin/env bash
# Runs every benchmark at the sizes of docs/BENCHMARKS.md and keeps the output in
# tools/bench/results-DATE.txt. Takes about half an hour on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/../.."
out="tools/bench/results-$(date +%Y%m%d-%H%M).txt"
{
  echo "# $(date -u +%Y-%m-%dT%H:%MZ) on $(nproc) cores, $(git rev-parse --short HEAD)"
  tools/bench/run.sh docker --counts 1,20,100 --runs 3
  tools/bench/run.sh scheduling --workers 100,1000,10000 --tasks 100000
  tools/bench/run.sh heartbeats --workers 1000,10000
  tools/bench/run.sh failover --tasks 5 --runs 3
  tools/bench/run.sh rest --tasks 10000,100000
  tools/bench/run.sh recovery --tasks 10000,100000
  tools/bench/run.sh rolling --replicas 10 --runs 3
  tools/bench/run.sh mesh --replicas 3 --runs 3 --kills 20
  tools/bench/run.sh store --placements 20000 --runs 3
  tools/bench/run.sh leader --kills 20 --handovers 20
} 2>&1 | tee "$out"
echo "results in $out"
