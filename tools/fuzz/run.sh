#!/usr/bin/env bash
# Fuzzes with libFuzzer for SECONDS each (default 60): the cluster protocol's decoder
# (`wire`, seeded with Protocol/vectors) and the DNS responder's codec (`dns`, seeded with
# the captured queries of tools/fuzz/dns-seeds); both unless one is named
# (tools/fuzz/README.md). Prints one summary line per target; exits non-zero when libFuzzer
# finds a crash, a hang or a blown memory limit, printing the input in hex, ready to become
# a vector or a test. Further arguments go to libFuzzer (e.g. -seed=N).
#
#   tools/fuzz/run.sh                # CI's minute for each
#   tools/fuzz/run.sh 3600 dns       # an hour of the DNS codec, by hand
set -euo pipefail

seconds="${1:-60}"
if ! [[ "$seconds" =~ ^[1-9][0-9]*$ ]]; then
  echo "usage: tools/fuzz/run.sh [SECONDS] [wire|dns] [LIBFUZZER-OPTION...]" >&2
  exit 2
fi
shift $(( $# > 0 ? 1 : 0 ))
targets=(wire dns)
if [ $# -gt 0 ] && [[ "$1" == wire || "$1" == dns ]]; then
  targets=("$1")
  shift
fi

here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
# Their own build folder: everything in it carries libFuzzer's coverage instrumentation.
# SwiftPM's own --sanitize fuzzer, not -Xswiftc -sanitize=fuzzer -parse-as-library: that
# links the executable with `--defsym main=WireDecoderFuzz_main`, a symbol no module defines
# then, where --sanitize fuzzer leaves `main` to libFuzzer.
build=(swift build -c release --package-path "$here/Targets" --build-path "$root/.build-fuzz" --sanitize fuzzer)

# A seed file is hex digits; `#` starts a comment, white space is ignored.
seed_from_hex() {
  local hex escaped="" i
  hex="$(sed 's/#.*//' "$1" | tr -d '[:space:]')"
  if ! [[ "$hex" =~ ^([0-9a-fA-F]{2})*$ ]]; then
    echo "fuzz: $1 is not hex" >&2
    exit 1
  fi
  for (( i = 0; i < ${#hex}; i += 2 )); do escaped+="\\x${hex:i:2}"; done
  printf '%b' "$escaped" >"$2"
}

fuzz_one() {
local target="$1" product seed_files
shift
case "$target" in
  wire) product=WireDecoderFuzz; seed_files=("$root"/Protocol/vectors/*.hex "$root"/Protocol/vectors/malformed/*.hex) ;;
  dns) product=DNSAnswerFuzz; seed_files=("$here"/dns-seeds/*.hex) ;;
esac

echo "fuzz: building $product in .build-fuzz"
"${build[@]}" --quiet --product "$product"
binary="$("${build[@]}" --show-bin-path)/$product"

work="$(mktemp -d "${TMPDIR:-/tmp}/$target-fuzz.XXXXXX")"
trap 'rm -rf "$work"' EXIT
corpus="$work/corpus"
artifacts="$work/artifacts"
log="$work/libfuzzer.log"
mkdir "$corpus" "$artifacts"

for vector in "${seed_files[@]}"; do
  folder="$(basename "$(dirname "$vector")")"
  seed_from_hex "$vector" "$corpus/${folder}_$(basename "$vector" .hex)"
done
seeds="$(find "$corpus" -type f | wc -l)"

echo "fuzz: $product for $seconds s from $seeds seeds"
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
  echo "fuzz: $product, $seconds s, $summary: no crash"
  rm -rf "$work"
  trap - EXIT
  return 0
fi

trap - EXIT
{
  echo "fuzz: $product FAILED (libFuzzer exit $status): $summary"
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
}

for target in "${targets[@]}"; do fuzz_one "$target" "$@"; done
