#!/usr/bin/env bash
# The main job in one command: set this machine up, build orchctl, start a local cluster
# (`orchctl dev`: a manager and one worker) in the background, run data/task1.json on it,
# and show the tasks and the nodes.
#
#   tools/quickstart.sh          start (or find) the cluster and run the example task
#   tools/quickstart.sh --stop   stop the example's tasks and the cluster
#
# Running it again is harmless: a cluster that answers is reused, and the example task is
# submitted only when no task named "web" is live (one that waits is said so and waited
# for). Environment:
#   ORCH_QUICKSTART_DIR    the cluster's state and log (default ~/.orch/quickstart)
#   ORCH_QUICKSTART_BUILD  release (default) or debug: debug reuses the debug build (CI)
#   ORCH_API               the REST API (default http://127.0.0.1:5555)
#   ORCH_QUICKSTART_WIRE, ORCH_QUICKSTART_WORKER_HTTP
#                          the cluster port and the worker's API (127.0.0.1:5556, :5557)
set -euo pipefail
cd "$(dirname "$0")/.."

dir=${ORCH_QUICKSTART_DIR:-$HOME/.orch/quickstart}
build=${ORCH_QUICKSTART_BUILD:-release}
export ORCH_API=${ORCH_API:-http://127.0.0.1:5555}
hostport=${ORCH_API#http://}
wire=${ORCH_QUICKSTART_WIRE:-127.0.0.1:5556}
worker_http=${ORCH_QUICKSTART_WORKER_HTTP:-127.0.0.1:5557}
pidfile="$dir/dev.pid"
orchctl=".build/$build/orchctl"

say() { printf 'quickstart: %s\n' "$*" >&2; }

answering() { curl -fsS --max-time 2 "$ORCH_API/healthz" >/dev/null 2>&1; }

running_pid() {
  [ -f "$pidfile" ] || return 1
  local pid
  pid=$(cat "$pidfile")
  kill -0 "$pid" 2>/dev/null && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = orchctl ] && echo "$pid"
}

stop_cluster() {
  if ! pid=$(running_pid); then
    say "no cluster is running (nothing in $pidfile)"
    return 0
  fi
  if [ -x "$orchctl" ] && answering; then
    for id in $("$orchctl" status --json | python3 -c 'import json,sys; print("\n".join(t["id"] for t in json.load(sys.stdin) if t["state"] not in ("completed","failed")))'); do
      "$orchctl" stop "$id" >/dev/null || true
    done
    for _ in $(seq 1 50); do
      left=$("$orchctl" status --json | python3 -c 'import json,sys; print(sum(t["state"] not in ("completed","failed") for t in json.load(sys.stdin)))')
      [ "$left" = 0 ] && break
      sleep 0.2
    done
  fi
  kill -TERM "$pid"
  for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
  rm -f "$pidfile"
  say "cluster stopped (state kept in $dir)"
}

if [ "${1:-}" = "--stop" ]; then
  stop_cluster
  exit 0
elif [ -n "${1:-}" ]; then
  echo "usage: tools/quickstart.sh [--stop]" >&2
  exit 2
fi

say "setting the machine up (Docker, the local image)"
tools/setup.sh

if [ "$build" = release ]; then
  say "building orchctl in release mode (the first build takes several minutes)"
  swift build -c release --product orchctl
elif [ ! -x "$orchctl" ]; then
  say "building orchctl ($build)"
  swift build --product orchctl
fi

mkdir -p "$dir"
if pid=$(running_pid) && answering; then
  say "a cluster is running already (pid $pid, $ORCH_API)"
elif answering; then
  say "something else answers at $ORCH_API; stop it or set ORCH_API"
  exit 1
else
  say "starting a local cluster (manager and one worker) in the background; log in $dir/dev.log"
  (
    # Descriptors inherited from whoever started this script are closed first: a parent
    # that watches one of them to see the script end would otherwise wait for the cluster.
    for fd in $(ls "/proc/$BASHPID/fd"); do
      if [ "$fd" -gt 2 ]; then eval "exec $fd>&-" 2>/dev/null || true; fi
    done
    exec setsid "$orchctl" dev --data "$dir" --http "$hostport" --wire "$wire" --worker-http "$worker_http" </dev/null >"$dir/dev.log" 2>&1
  ) &
  echo $! >"$pidfile"
  for _ in $(seq 1 100); do answering && break; sleep 0.1; done
  if ! answering; then
    say "the cluster did not come up; its log:"
    tail -20 "$dir/dev.log" >&2
    exit 1
  fi
  # The worker joins right after the manager listens.
  for _ in $(seq 1 100); do
    [ "$("$orchctl" nodes --json | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))')" -ge 1 ] && break
    sleep 0.1
  done
fi

# The example task, by its name: running, it is left alone; waiting (pending, scheduled),
# it is said so and waited for (the same file again is the same task); else it is run.
example=$("$orchctl" status --json | python3 -c '
import json, sys
live = [t for t in json.load(sys.stdin) if t.get("name") == "web" and t["state"] in ("pending", "scheduled", "running")]
if live:
    t = live[-1]
    why = t.get("error") or ""
    print(t["state"] + (" (" + why + ")" if why else ""))
')
case "$example" in
  running*)
    say "the example task runs already" ;;
  "")
    say "running data/task1.json"
    "$orchctl" run -f data/task1.json --wait ;;
  *)
    say "the example task exists but is $example; waiting for it to run"
    "$orchctl" run -f data/task1.json --wait ;;
esac

echo
"$orchctl" status
echo
"$orchctl" nodes
echo
say "the cluster keeps running. Try: $orchctl logs <id>, $orchctl stop <id>."
say "stop it with: tools/quickstart.sh --stop"
