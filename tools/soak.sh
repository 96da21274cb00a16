#!/usr/bin/env bash
# A slower soak of the deterministic cluster simulator: many more seeds and longer fault
# phases than the test suite's fixed seed set, with 3 and 5 workers, through a release build
# of orch-sim. Bounded in time: it stops starting new chunks once SOAK_SECONDS have passed
# (and a chunk that hangs is killed), then prints what it found.
#
#   tools/soak.sh                    # 20 minutes from seed 1000000
#   SOAK_SECONDS=3600 SOAK_FIRST=5000000 SOAK_STEPS=5000 tools/soak.sh
#   SOAK_ARGS="--ignore no-duplicate-with-stopAfter" tools/soak.sh   # look past a known violation
#
# Every violating seed is printed with its invariant and the last steps before it; replay one
# with `orch-sim replay --seed S --steps STEPS --workers W`. Exits 1 when any seed violated.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${SOAK_SECONDS:-1200}
first=${SOAK_FIRST:-1000000}
steps=${SOAK_STEPS:-3000}
chunk=${SOAK_CHUNK:-200}
jobs=${SOAK_JOBS:-$(nproc)}
build=${SOAK_BUILD_PATH:-.build-sim}
log=${SOAK_LOG:-$build/soak.log}
read -r -a extra <<< "${SOAK_ARGS:-}"

swift build -c release --build-path "$build" --product orch-sim >&2
sim="$build/release/orch-sim"
mkdir -p "$(dirname "$log")"
: > "$log"

deadline=$(( $(date +%s) + seconds ))
seed=$first
seeds=0 steps_total=0 violations=0 round=0
while [ "$(date +%s)" -lt "$deadline" ]; do
  workers=$(( round % 2 == 0 ? 3 : 5 ))
  left=$(( deadline - $(date +%s) ))
  # A chunk gets what is left of the budget and a little more; one that takes longer is a hang.
  out=$(timeout --kill-after=10s $(( left + 120 ))s "$sim" run --seeds "$seed:$chunk" --workers "$workers" --steps "$steps" --jobs "$jobs" ${extra[@]+"${extra[@]}"} 2>&1) || status=$?
  status=${status:-0}
  summary=$(printf '%s\n' "$out" | tail -n 1)
  if [[ ! "$summary" =~ ^seeds\ ([0-9]+),\ steps\ ([0-9]+),\ violations\ ([0-9]+)$ ]]; then
    echo "soak: seeds $seed:$chunk ($workers workers) did not finish (exit $status)" | tee -a "$log"
    violations=$(( violations + 1 ))
    break
  fi
  seeds=$(( seeds + BASH_REMATCH[1] ))
  steps_total=$(( steps_total + BASH_REMATCH[2] ))
  found=${BASH_REMATCH[3]}
  if [ "$found" -gt 0 ]; then
    violations=$(( violations + found ))
    printf '%s\n' "$out" | sed '$d' | sed "s/^seed /[$workers workers, $steps steps] seed /" | tee -a "$log"
  fi
  echo "soak: seeds $seed..$(( seed + chunk - 1 )) with $workers workers: $found violating" >&2
  seed=$(( seed + chunk ))
  round=$(( round + 1 ))
  unset status
done

echo "soak: seeds $seeds, steps $steps_total, violations $violations (log: $log)"
[ "$violations" -eq 0 ]
