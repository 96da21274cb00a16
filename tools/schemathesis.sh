#!/usr/bin/env bash
# Fuzzes a running manager's REST API against Protocol/openapi.yaml with schemathesis.
#
#   tools/schemathesis.sh [API_URL]      (default: $ORCH_API, else http://127.0.0.1:5555)
#
# Generated requests (the spec's examples, its coverage cases, then random ones) go to
# every operation; each response must match the spec (see CHECKS below) and no request
# may get a 5xx. So that the task and node routes are reached with ids that exist, not
# only with 404s, the ids the API lists when the run starts are handed to schemathesis
# as dictionaries it draws path parameters from half of the time. Run it on a manager
# with a worker and a few tasks; it submits and stops tasks of its own (the spec's
# examples among them), so not on a cluster that matters.
#
# Environment:
#   ORCH_TOKEN                  an admin token (default: the one the manager left for this
#                               user in ~/.orch/tokens/HOST:PORT)
#   ORCH_PYTHON                 the Python with schemathesis (default .venv-test/bin/python;
#                               tools/test.sh installs tools/requirements-test.txt there)
#   ORCH_SCHEMATHESIS_EXAMPLES  random cases per operation (default 100: about 700 cases,
#                               15 s on a 2-core machine)
#   ORCH_SCHEMATHESIS_SECONDS   wall-clock limit of the whole run (default 240)
#   ORCH_SCHEMATHESIS_SEED      a seed, to replay a run (schemathesis prints the one it used)
#   ORCH_SCHEMATHESIS_CHECKS    the checks instead of CHECKS below (`all` to see what else fails)
#
# Exits with schemathesis's status: 0 when every check passed, 1 when one failed, 2 on a
# configuration or schema error; 124 when the time limit ended it.
set -euo pipefail
cd "$(dirname "$0")/.."

api="${1:-${ORCH_API:-http://127.0.0.1:5555}}"
api="${api%/}"
python="${ORCH_PYTHON:-.venv-test/bin/python}"
examples="${ORCH_SCHEMATHESIS_EXAMPLES:-100}"
seconds="${ORCH_SCHEMATHESIS_SECONDS:-240}"

# What holds for this API, checked on every response. Left out: positive_data_acceptance
# (the spec's TaskFile is any object; only the server knows every rule of a task file,
# docs/TASKS.md, so a valid-looking object may rightly be a 400) and the stateful checks
# (the spec declares no links).
CHECKS="not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance"
CHECKS="$CHECKS,response_schema_conformance,negative_data_rejection,unsupported_method,allow_header_conformance"
CHECKS="${ORCH_SCHEMATHESIS_CHECKS:-$CHECKS}"
# DELETE /tokens/{name} is left out: a generated name could revoke the run's own token
# (tools/check_openapi.py checks revocation).

if ! "$python" -c 'import schemathesis' 2>/dev/null; then
  echo "schemathesis.sh: $python has no schemathesis; install tools/requirements-test.txt (tools/test.sh does)" >&2
  exit 2
fi
hostport="${api#*://}"
token="${ORCH_TOKEN:-$(cat "$HOME/.orch/tokens/$hostport" 2>/dev/null || true)}"
if [ -z "$token" ]; then
  echo "schemathesis.sh: no token for $api: set ORCH_TOKEN (an admin token)" >&2
  exit 2
fi
export ORCH_TOKEN="$token"
if ! curl -fs --max-time 5 "$api/healthz" >/dev/null; then
  echo "schemathesis.sh: the API at $api does not answer GET /healthz" >&2
  exit 2
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# The configuration: the ids that exist now, as dictionaries for the path parameters.
"$python" - "$api" "$work/schemathesis.toml" <<'PY'
import json, os, sys, urllib.request

api, path = sys.argv[1], sys.argv[2]

def get(route):
    request = urllib.request.Request(api + route, headers={"Authorization": "Bearer " + os.environ["ORCH_TOKEN"]})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)

tasks = [t["id"] for t in get("/tasks?limit=1000")]
nodes = get("/nodes")
# Full ids, and prefixes (unique or not: an ambiguous one is a documented 409).
task_values = sorted(set(tasks) | {t[:8] for t in tasks})
node_values = sorted({n["id"] for n in nodes} | {n["name"] for n in nodes} | {n["id"][:8] for n in nodes})

def toml_list(values):
    return "[" + ", ".join(json.dumps(v) for v in values) + "]"

lines = [
    "# Written by tools/schemathesis.sh for one run.",
    # Each run from scratch: a cache would skip what earlier runs saw answer 405, say,
    # and would be written into the work tree.
    "[cache]",
    "enabled = false",
    "",
]
bindings = []
if task_values:
    lines += ["[dictionaries.tasks]", f"values = {toml_list(task_values)}", ""]
    bindings += ['"path.taskID" = { dictionary = "tasks", probability = 0.5 }',
                 '"query.after" = { dictionary = "tasks", probability = 0.3 }']
if node_values:
    lines += ["[dictionaries.nodes]", f"values = {toml_list(node_values)}", ""]
    bindings += ['"path.nodeID" = { dictionary = "nodes", probability = 0.5 }',
                 '"query.node" = { dictionary = "nodes", probability = 0.5 }']
if bindings:
    lines += ["[parameters]"] + bindings + [""]
# A followed log of a running task never ends, and schemathesis reads every body to its
# end: it would time out. Following is checked by tools/check_openapi.py instead.
lines += ["[[operations]]", 'include-name = "GET /tasks/{taskID}/logs"', 'parameters = { "query.follow" = "false" }', ""]
# The same for the events stream, and a blocking read waits less than a request's timeout.
lines += ["[[operations]]", 'include-name = "GET /events"', 'parameters = { "query.follow" = "false", "query.wait" = "1s" }', ""]
with open(path, "w", encoding="utf-8") as handle:
    handle.write("\n".join(lines))
print(f"schemathesis.sh: {len(tasks)} tasks and {len(nodes)} nodes listed at {api}; their ids are drawn for the paths")
PY

seed=()
[ -n "${ORCH_SCHEMATHESIS_SEED:-}" ] && seed=(--seed "$ORCH_SCHEMATHESIS_SEED")
status=0
# Hypothesis keeps its caches in the run's temporary folder, not in the work tree.
NO_COLOR=1 HYPOTHESIS_STORAGE_DIRECTORY="$work/hypothesis" timeout --kill-after=10s "$seconds" "$python" -m schemathesis.cli --config-file "$work/schemathesis.toml" run \
  Protocol/openapi.yaml --url "$api" \
  --header "Authorization: Bearer $token" \
  --exclude-operation-id revokeToken \
  --checks "$CHECKS" \
  --phases examples,coverage,fuzzing \
  --max-examples "$examples" \
  --workers 1 \
  --request-timeout 10 \
  --generation-database none \
  --report har --report-dir "$work/report" \
  "${seed[@]}" || status=$?

# Which statuses each operation got: proof that real ids were reached, not only 404s.
"$python" - "$work/report" <<'PY' || true
import collections, glob, json, re, sys
from urllib.parse import urlparse

templates = [("GET", r"/healthz"), ("GET", r"/metrics"), ("GET", r"/tasks"), ("POST", r"/tasks"),
             ("GET", r"/tasks/{taskID}"), ("DELETE", r"/tasks/{taskID}"), ("GET", r"/tasks/{taskID}/logs"),
             ("GET", r"/nodes"), ("DELETE", r"/nodes/{nodeID}"), ("GET", r"/tokens"), ("POST", r"/tokens"),
             ("POST", r"/join-token/rotate"), ("GET", r"/services"), ("POST", r"/services"),
             ("GET", r"/services/{name}"), ("PUT", r"/services/{name}"), ("DELETE", r"/services/{name}"),
             ("POST", r"/services/{name}/rollback"), ("GET", r"/services/{name}/endpoints")]
patterns = [(m, t, re.compile("^" + re.sub(r"\{[^}]+\}", "[^/]+", t) + "$")) for m, t in templates]
counts = collections.defaultdict(collections.Counter)
total = 0
for path in glob.glob(sys.argv[1] + "/har-*"):
    with open(path, encoding="utf-8") as handle:
        for entry in json.load(handle)["log"]["entries"]:
            method = entry["request"]["method"]
            route = urlparse(entry["request"]["url"]).path
            status = entry["response"]["status"]
            total += 1
            name = next((f"{m} {t}" for m, t, p in patterns if m == method and p.match(route)), f"{method} (other)")
            counts[name][status] += 1
print(f"schemathesis.sh: statuses per operation, over {total} requests:")
for name in sorted(counts):
    print(f"  {name}: " + ", ".join(f"{s} x{n}" for s, n in sorted(counts[name].items())))
PY

if [ "$status" -eq 124 ] || [ "$status" -eq 137 ]; then
  echo "schemathesis.sh: stopped after the time limit of ${seconds}s" >&2
fi
exit "$status"
