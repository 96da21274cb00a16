#!/usr/bin/env bash
# Fuzzes the cluster protocol's decoder with libFuzzer for SECONDS (default 60), from a seed
# corpus made of Protocol/vectors (tools/fuzz/README.md). Prints one summary line; exits
# non-zero when libFuzzer finds a crash, a hang or a blown memory limit, printing the input
# in hex, ready to become a vector. Further arguments go to libFuzzer (e.g. -seed=N).
#
#   tools/fuzz/run.sh            # CI's minute
#   tools/fuzz/run.sh 3600       # an hour, by hand
set -euo pipefail

seconds="${1:-60}"
if ! [[ "$seconds" =~ ^[1-9][0-9]*$ ]]; then
  echo "usage: tools/fuzz/run.sh [SECONDS] [LIBFUZZER-OPTION...]" >&2
  exit 2
fi
shift $(( $# > 0 ? 1 : 0 ))

here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
product=WireDecoderFuzz
# Its own build folder: everything in it carries libFuzzer's coverage instrumentation.
# SwiftPM's own --sanitize fuzzer, not -Xswiftc -sanitize=fuzzer -parse-as-library: that
# links the executable with `--defsym main=WireDecoderFuzz_main`, a symbol no module defines
# then, where --sanitize fuzzer leaves `main` to libFuzzer.
build=(swift build -c release --package-path "$here/$product" --build-path "$root/.build-fuzz" --sanitize fuzzer)

echo "fuzz: building $product in .build-fuzz"
"${build[@]}" --quiet --product "$product"
binary="$("${build[@]}" --show-bin-path)/$product"

work="$(mktemp -d "${TMPDIR:-/tmp}/wire-fuzz.XXXXXX")"
trap 'rm -rf "$work"' EXIT
corpus="$work/corpus"
artifacts="$work/artifacts"
log="$work/libfuzzer.log"
mkdir "$corpus" "$artifacts"

# A vector file is hex digits; `#` starts a comment, white space is ignored.
for vector in "$root"/Protocol/vectors/*.hex "$root"/Protocol/vectors/malformed/*.hex; do
  hex="$(sed 's/#.*//' "$vector" | tr -d '[:space:]')"
  if ! [[ "$hex" =~ ^([0-9a-fA-F]{2})*$ ]]; then
    echo "fuzz: $vector is not hex" >&2
    exit 1
  fi
  escaped=""
  for (( i = 0; i < ${#hex}; i += 2 )); do escaped+="\\x${hex:i:2}"; done
  folder="$(basename "$(dirname "$vector")")"
  printf '%b' "$escaped" >"$corpus/${folder}_$(basename "$vector" .hex)"
done
seeds="$(find "$corpus" -type f | wc -l)"

echo "fuzz: $seconds s from $seeds seeds"
status=0
# Swift's backtracer would take the trap's signal first, and libFuzzer then neither reports
# the crash nor saves its input.
SWIFT_BACKTRACE=enable=no "$binary" "$corpus" -max_total_time="$seconds" -timeout=5 -rss_limit_mb=2048 \
  -max_len=65536 -artifact_prefix="$artifacts/" -print_final_stats=1 "$@" >"$log" 2>&1 || status=$?

# From libFuzzer's closing lines: "#N DONE cov: C ft: F corp: K/S ..." (or the last progress
# line, when it stopped early) and "stat::number_of_executed_units: N".
progress="$(grep -E '^#[0-9]+' "$log" | tail -n 1 || true)"
field() { local value; value="$(sed -nE "s/.* $1: ([^ ]+).*/\\1/p" <<<"$progress")"; echo "${value:-?}"; }
final_stat() { local value; value="$(sed -nE "s/^stat::$1: +([0-9]+)/\\1/p" "$log" | tail -n 1)"; echo "${value:-?}"; }
corp="$(field corp)"
seed="$(sed -nE 's/^INFO: Seed: ([0-9]+)/\1/p' "$log" | head -n 1)"
summary="$(final_stat number_of_executed_units) executions ($(final_stat average_exec_per_sec)/s), cov: $(field cov), ft: $(field ft), corpus: ${corp%%/*} inputs (${corp#*/}), seed ${seed:-?}"

shopt -s nullglob
found=("$artifacts"/*)
if [ "$status" -eq 0 ] && [ "${#found[@]}" -eq 0 ]; then
  echo "fuzz: $seconds s, $summary: no crash"
  exit 0
fi

trap - EXIT
{
  echo "fuzz: FAILED (libFuzzer exit $status): $summary"
  grep -m 3 -E 'Fatal error:|ERROR: libFuzzer' "$log" || true
  echo "fuzz: the end of libFuzzer's log, $log:"
  grep -vE '^#[0-9]+' "$log" | tail -n 30 || true
  for input in "${found[@]}"; do
    echo "fuzz: the input $(basename "$input"), $(wc -c <"$input") bytes, in hex:"
    od -An -v -tx1 "$input" | sed 's/^ //'
    echo "fuzz: replay it with: SWIFT_BACKTRACE=enable=no $binary $input"
  done
} >&2
exit $(( status == 0 ? 1 : status ))
