#!/usr/bin/env python3
"""Checks a running manager's REST API against Protocol/openapi.yaml.

    python3 tools/check_openapi.py --api http://127.0.0.1:PORT [--spec Protocol/openapi.yaml]

Exercises every route and every error code the gateway answers, on a manager with or
without workers, and validates each response with openapi-core: its status code is
documented for the operation, its content type and body match the schema (which
refuses unknown fields), its headers match, and an error carries the expected `code`.
The requests the script means to be valid are validated against the spec too, and
the ones the server must refuse (a state that does not exist, limit=0, a body that
is not JSON) must be refused by the spec as well.

What no operation of the spec can describe is checked against the spec's components:
a method a path lacks (405 `MethodNotAllowed`, with its `Allow` header) and a path
that names no route (404 `Error` with `not_found`).

With a node up, it also waits for a task to run and to complete, so that the fields
only a placed task has (node, container, ports, startedAt, exitCode) are validated, and
reads a task's logs; it waits for a service's replicas to run and for its deploy to
succeed, and checks that a service being removed (its replicas stopping) refuses changes.

Prints one line per check (`ok   ...` or `FAIL ...: reason`) and a summary. Exits 0 when
every check passed, 1 when one failed (an API that does not answer fails), 2 on a
usage error. Needs the packages of tools/requirements-test.txt.

Tasks it creates are named `oacheck-RUN-...` (RUN: random per run, so that it can run
again against the same manager), plus `amb-1` and `amb-2` for the ambiguous-prefix case
(created once; later runs get 200). They end by themselves (`sleep 1`, `exit 0`) or are
stopped by the script (the Cube task, which serves HTTP, and the one pinned to no node).
Services it creates are named `oacheck-RUN-svc` (two replicas of `sleep 600` that ignore
SIGTERM, so that each stops after its grace period of 15 s) and `oacheck-RUN-svcfull` (one
replica pinned to no node); the script removes both, and the manager forgets them once
their tasks have ended.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Iterable, Optional
from urllib.parse import urlparse

TIMEOUT = 10  # seconds, for every request
IMAGE = "orch-busybox:latest"
DEFAULT_SPEC = Path(__file__).resolve().parent.parent / "Protocol" / "openapi.yaml"


def _summary_of(exc: BaseException, limit: int = 600) -> str:
    """An openapi-core exception as one readable line: the schema errors found anywhere in
    its chain (each with its path in the body), else the first exception's own text."""
    messages: list[str] = []
    seen: set[int] = set()
    pending: list[BaseException] = [exc]
    while pending:
        error = pending.pop(0)
        if id(error) in seen:
            continue
        seen.add(id(error))
        for schema_error in getattr(error, "schema_errors", None) or []:
            # Array indexes become `*`, so that one problem of every listed task is told once.
            where = "/".join("*" if isinstance(p, int) else str(p)
                             for p in getattr(schema_error, "absolute_path", [])) or "(top)"
            messages.append(f"{where}: {_short(str(getattr(schema_error, 'message', schema_error)), 200)}")
        # HeadersError and friends keep several errors in `context`.
        pending += [e for e in getattr(error, "context", None) or [] if isinstance(e, BaseException)]
        pending += [e for e in (error.__cause__, error.__context__) if e is not None]
    if messages:
        text = f"{type(exc).__name__}: " + "; ".join(dict.fromkeys(messages))
    else:
        first_line = (str(exc).strip().splitlines() or [""])[0]
        text = f"{type(exc).__name__}: {first_line}"
    return _short(text, limit)


def _short(text: str, limit: int = 200) -> str:
    text = text.replace("\n", " ")
    return text if len(text) <= limit else text[: limit - 3] + "..."


class Unreachable(Exception):
    """The API did not answer its first request: every other check would fail the same way."""


class Checker:
    def __init__(self, api: str, spec_path: str, token: Optional[str] = None):
        import requests
        from openapi_core import Config, OpenAPI
        from openapi_core import V30RequestValidator, V30ResponseValidator
        from openapi_core import V31RequestValidator, V31ResponseValidator
        import yaml

        self.requests = requests
        with open(spec_path, encoding="utf-8") as handle:
            version = str(yaml.safe_load(handle).get("openapi", ""))
        if version.startswith("3.0"):
            config = Config(request_validator_cls=V30RequestValidator, response_validator_cls=V30ResponseValidator)
        else:
            config = Config(request_validator_cls=V31RequestValidator, response_validator_cls=V31ResponseValidator)
        # Loading also validates the document itself (openapi-spec-validator).
        self.openapi = OpenAPI.from_file_path(spec_path, config=config)
        with open(spec_path, encoding="utf-8") as handle:
            self.document = yaml.safe_load(handle)
        self.api = api.rstrip("/")
        self.token = token
        self.session = requests.Session()
        self.passed = 0
        self.failed = 0
        self.notes = 0

    # -- reporting

    def ok(self, label: str) -> None:
        self.passed += 1
        print(f"ok   {label}", flush=True)

    def fail(self, label: str, reason: str) -> None:
        self.failed += 1
        print(f"FAIL {label}: {reason}", flush=True)

    def note(self, label: str, reason: str) -> None:
        self.notes += 1
        print(f"--   {label}: {reason}", flush=True)

    # -- one request

    def send(self, method: str, path: str, *, body: Optional[bytes] = None,
             headers: Optional[dict[str, str]] = None):
        """Sends one request; returns (prepared request, response or None, error text).
        A body goes as `application/json` unless `headers` names a `Content-Type`."""
        requests = self.requests
        sent_headers = {}
        if body is not None:
            sent_headers["Content-Type"] = "application/json"
        if self.token:
            sent_headers["Authorization"] = f"Bearer {self.token}"
        sent_headers.update(headers or {})
        # A header given as None is not sent (a request without a token, say).
        sent_headers = {name: value for name, value in sent_headers.items() if value is not None}
        prepared = requests.Request(method, self.api + path, data=body, headers=sent_headers).prepare()
        try:
            response = self.session.send(prepared, timeout=TIMEOUT, allow_redirects=False)
        except requests.RequestException as error:
            return prepared, None, f"no answer from the API: {type(error).__name__}: {_short(str(error))}"
        return prepared, response, None

    def validation_problems(self, prepared, response, request_valid: Optional[bool]) -> list[str]:
        """What openapi-core finds wrong with this exchange (response; request when asked)."""
        from openapi_core.contrib.requests import RequestsOpenAPIRequest, RequestsOpenAPIResponse

        problems: list[str] = []
        openapi_request = RequestsOpenAPIRequest(prepared)
        if request_valid is not None:
            try:
                self.openapi.validate_request(openapi_request)
                if not request_valid:
                    problems.append("the spec accepts this request, which the server refuses")
            except Exception as error:  # openapi-core raises several exception types
                if request_valid:
                    problems.append(f"request does not match the spec: {_summary_of(error)}")
        try:
            self.openapi.validate_response(openapi_request, RequestsOpenAPIResponse(response))
        except Exception as error:
            problems.append(f"response does not match the spec: {_summary_of(error)}")
        return problems

    def call(
        self,
        method: str,
        template: str,
        path: str,
        expect: int | Iterable[int],
        *,
        note: str = "",
        body: Any = None,
        raw_body: Optional[bytes] = None,
        code: Optional[str] = None,
        request_valid: Optional[bool] = True,
        check: Optional[Callable[[Any], Optional[str]]] = None,
        report: bool = True,
        headers: Optional[dict[str, str]] = None,
    ):
        """Sends a request, validates the exchange, reports one line; returns the response
        (None when the API did not answer) and whether every check passed."""
        expected = {expect} if isinstance(expect, int) else set(expect)
        shown = "/".join(str(s) for s in sorted(expected))
        label = f"{method} {template} {shown}" + (f" {code}" if code else "") + (f" ({note})" if note else "")
        data = raw_body if raw_body is not None else (json.dumps(body).encode() if body is not None else None)
        prepared, response, error = self.send(method, path, body=data, headers=headers)
        if response is None:
            self.fail(label, error or "no answer")
            return None, False
        problems: list[str] = []
        if response.status_code not in expected:
            problems.append(f"expected {shown}, got {response.status_code}: {_short(response.text)}")
        problems += self.validation_problems(prepared, response, request_valid)
        if code is not None:
            try:
                got = response.json().get("error", {}).get("code")
            except (ValueError, AttributeError):
                got = None
            if got != code:
                problems.append(f"expected the error code {code}, got {got!r}")
        if check is not None and not problems:
            try:
                reason = check(response)
            except Exception as error:  # a body of an unexpected shape
                reason = f"{type(error).__name__}: {error}"
            if reason:
                problems.append(reason)
        if problems:
            self.fail(label, "; ".join(problems))
        elif report:
            self.ok(label)
        return response, not problems

    def component_problems(self, instance: Any, pointer: str) -> list[str]:
        """What is wrong with `instance` against the spec's schema at `pointer`
        (`#/components/...`), resolved within the whole document."""
        from openapi_schema_validator import OAS30Validator

        schema = dict(self.document)
        schema["$ref"] = pointer
        errors = sorted(OAS30Validator(schema).iter_errors(instance), key=lambda e: list(e.absolute_path))
        return [f"{'/'.join(str(p) for p in e.absolute_path) or '(top)'}: {_short(e.message)}" for e in errors]

    def call_outside_spec(self, method: str, path: str, expect: int, code: str, *, note: str = "",
                          allow: Optional[str] = None, body: Optional[bytes] = None) -> None:
        """A request no operation describes (a method the path lacks, a path that names no
        route): its status, its `Allow` header, and its body as the spec's `Error`."""
        label = f"{method} {path} {expect} {code}" + (f" ({note})" if note else "")
        _, response, error = self.send(method, path, body=body)
        if response is None:
            self.fail(label, error or "no answer")
            return
        problems: list[str] = []
        if response.status_code != expect:
            problems.append(f"expected {expect}, got {response.status_code}: {_short(response.text)}")
        content_type = response.headers.get("Content-Type", "")
        if not content_type.startswith("application/json"):
            problems.append(f"Content-Type {content_type!r}, not JSON")
        try:
            document = response.json()
        except ValueError:
            document = None
            problems.append(f"the body is not JSON: {_short(response.text)}")
        if document is not None:
            problems += [f"body: {p}" for p in self.component_problems(document, "#/components/schemas/Error")]
            got = document.get("error", {}).get("code") if isinstance(document, dict) else None
            if got != code:
                problems.append(f"expected the error code {code}, got {got!r}")
        if allow is not None:
            header = response.headers.get("Allow")
            if header != allow:
                problems.append(f"Allow is {header!r}, expected {allow!r}")
            if header:
                pointer = "#/components/responses/MethodNotAllowed/headers/Allow/schema"
                problems += [f"Allow header: {p}" for p in self.component_problems(header, pointer)]
        elif "Allow" in response.headers:
            problems.append(f"an Allow header on a {response.status_code}: {response.headers['Allow']!r}")
        if problems:
            self.fail(label, "; ".join(problems))
        else:
            self.ok(label)


def task_file(task_id: Optional[str] = None, command: Optional[list[str]] = None, **extra: Any) -> dict:
    task: dict[str, Any] = {"image": IMAGE}
    if task_id:
        task["id"] = task_id
    if command:
        task["command"] = command
    task.update(extra)
    return task


def cube_event(task_id: Optional[str], state: int) -> dict:
    """A Cube task event in the shape of data/cube-task.json."""
    task: dict[str, Any] = {
        "State": 1,
        "Name": "cube-web-1",
        "Image": IMAGE,
        "Memory": 67108864,
        "ExposedPorts": {"8080/tcp": {}},
        "PortBindings": {"8080/tcp": ""},
        "RestartPolicy": "on-failure",
        "HealthCheck": "/health",
    }
    if task_id is not None:
        task["ID"] = task_id
    return {"ID": str(uuid.uuid4()), "State": state, "Timestamp": "2026-01-01T10:00:00Z", "Task": task}


def run(checker: Checker, wait: float, remove_down_nodes: bool) -> None:
    c = checker
    run_id = uuid.uuid4().hex[:8]
    dup_id = f"oacheck-{run_id}-dup"
    cube_id = f"oacheck-{run_id}-cube"
    missing_id = f"oacheck-{run_id}-missing"
    full_id = f"oacheck-{run_id}-full"

    def body_of(response, kind: type) -> Any:
        """The JSON body of a successful answer, if it is a `kind`; else an empty one."""
        try:
            value = response.json() if response is not None and response.status_code < 300 else None
        except ValueError:
            value = None
        return value if isinstance(value, kind) else kind()

    # -- health and metrics

    response, _ = c.call("GET", "/healthz", "/healthz", 200,
                         check=lambda r: None if r.json().get("status") == "ok" and r.json().get("role") == "leader"
                         else f"unexpected body {r.text!r}")
    if response is None:
        raise Unreachable()
    c.call("GET", "/managers", "/managers", 200,
           check=lambda r: None if [m.get("role") for m in r.json()].count("leader") == 1 else f"not one leader: {r.text!r}")

    def metrics_check(r) -> Optional[str]:
        missing = [name for name in ("orch_tasks{state=\"pending\"}", "orch_nodes{state=\"up\"}",
                                     "orch_task_submissions_total") if name not in r.text]
        return f"missing {', '.join(missing)}" if missing else None

    c.call("GET", "/metrics", "/metrics", 200, check=metrics_check)

    # -- what is there already

    response, _ = c.call("GET", "/tasks", "/tasks", 200, note="no filter")
    existing = body_of(response, list)
    response, _ = c.call("GET", "/nodes", "/nodes", 200)
    nodes = [n for n in body_of(response, list) if isinstance(n, dict) and "id" in n]
    up_nodes = [n for n in nodes if n.get("state") == "up"]
    down_nodes = [n for n in nodes if n.get("state") == "down"]
    print(f"     ({len(existing)} tasks, {len(nodes)} nodes of which {len(up_nodes)} up)", flush=True)

    # -- submitting

    def created_check(r) -> Optional[str]:
        task = r.json()
        if r.headers.get("Location") != f"/tasks/{task['id']}":
            return f"Location {r.headers.get('Location')!r} does not name /tasks/{task['id']}"
        if task["desiredState"] != "run" or task["spec"]["image"] != IMAGE:
            return f"unexpected task {task}"
        header = r.headers.get("X-Orch-Revision", "")
        if not header.isdigit() or int(header) < task["revision"] or task["revision"] < 1:
            return f"X-Orch-Revision {header!r} does not cover the task's revision {task['revision']}"
        return None

    oneshot = task_file(command=["sh", "-c", "echo hello from a one-shot task; exit 0"],
                        resources={"cpus": 0.1, "memory": "16MiB"}, name="oneshot")
    response, _ = c.call("POST", "/tasks", "/tasks", 201, note="our shape, id chosen by the manager",
                         body=oneshot, check=created_check)
    oneshot_id = body_of(response, dict).get("id")

    dup = task_file(dup_id, ["sleep", "1"])
    response, _ = c.call("POST", "/tasks", "/tasks", 201, note="explicit id", body=dup, check=created_check)
    first = body_of(response, dict) or None

    def same_task(r) -> Optional[str]:
        task = r.json()
        if first is None:
            return "the first submission failed"
        if task["id"] != dup_id or task["createdAt"] != first["createdAt"]:
            return f"not the task created first: {task['id']} created {task['createdAt']}"
        return created_check(r)

    c.call("POST", "/tasks", "/tasks", 200, note="the same task again", body=dup, check=same_task)
    c.call("POST", "/tasks", "/tasks", 409, code="task_conflict", note="same id, another spec",
           body=task_file(dup_id, ["sleep", "2"]))

    def details_check(paths: list[str]) -> Callable[[Any], Optional[str]]:
        def check(r) -> Optional[str]:
            got = [d["path"] for d in r.json()["error"].get("details", [])]
            missing = [p for p in paths if p not in got]
            return f"details lack the paths {missing} (got {got})" if missing else None
        return check

    c.call("POST", "/tasks", "/tasks", 400, code="invalid_task", note="malformed JSON",
           raw_body=b'{"image": "orch-busybox:latest",', request_valid=False, check=details_check([""]))
    c.call("POST", "/tasks", "/tasks", 400, code="invalid_task", note="not an object",
           raw_body=b"[]", request_valid=False, check=details_check([""]))
    c.call("POST", "/tasks", "/tasks", 400, code="invalid_task", note="invalid spec, every problem",
           body={"image": "", "resources": {"memory": "1KiB"}},
           check=details_check(["image", "resources.memory"]))
    c.call("POST", "/tasks", "/tasks", 400, code="invalid_task", note="unknown field",
           body={"image": IMAGE, "restartpolicy": "always"}, check=details_check(["restartpolicy"]))
    c.call("POST", "/tasks", "/tasks", 400, code="invalid_task", note="empty body",
           raw_body=b"", request_valid=False, check=details_check([""]))

    # Every field, in short forms; pinned to a node that does not exist, so it never runs.
    full = {
        "id": full_id, "name": "full", "image": IMAGE, "command": "echo hi", "environment": ["A=1", "B=x=y"],
        "ports": [8080, "53/udp", {"containerPort": 9000, "hostPort": 19000}],
        "resources": {"cpus": "250m", "memory": "32MiB"}, "restartPolicy": "on-failure",
        "stopGracePeriod": "1m30.5s", "healthCheck": "/health",
        "constraints": {"node": f"oacheck-{run_id}-nowhere", "labels": {"disk": "ssd"}},
    }
    normalized = {
        "id": full_id, "name": "full", "image": IMAGE, "command": ["/bin/sh", "-c", "echo hi"],
        "environment": {"A": "1", "B": "x=y"},
        "ports": [{"containerPort": 8080, "protocol": "tcp"}, {"containerPort": 53, "protocol": "udp"},
                  {"containerPort": 9000, "hostPort": 19000, "protocol": "tcp"}],
        "resources": {"cpus": 0.25, "memory": 32 << 20}, "restartPolicy": {"mode": "on-failure"},
        "stopGracePeriod": "1m30.5s",
        "healthCheck": {"path": "/health", "port": 8080, "interval": "10s", "timeout": "2s", "failureThreshold": 3},
        "constraints": {"node": f"oacheck-{run_id}-nowhere", "labels": {"disk": "ssd"}},
    }

    def normalized_check(r) -> Optional[str]:
        spec = r.json()["spec"]
        return None if spec == normalized else f"spec not normalized as docs/TASKS.md says: {spec}"

    c.call("POST", "/tasks", "/tasks", 201, note="every field, in short forms", body=full,
           check=lambda r: created_check(r) or normalized_check(r))

    big = json.dumps({"image": IMAGE, "name": "x" * (2 << 20)}).encode()
    c.call("POST", "/tasks", "/tasks", 413, code="body_too_large", note="a 2 MiB body", raw_body=big, request_valid=None)
    c.call("POST", "/tasks", "/tasks", 415, code="unsupported_media_type", note="a task file sent as text/plain",
           raw_body=json.dumps(task_file(f"oacheck-{run_id}-text")).encode(), headers={"Content-Type": "text/plain"},
           request_valid=False)
    c.call("POST", "/tasks", "/tasks", 400, code="invalid_task", note="100,000 nested [",
           raw_body=b"[" * 100_000, request_valid=False, check=details_check([""]))
    c.call("GET", "/healthz", "/healthz", 431, code="headers_too_large", note="a header of 100 KB",
           headers={"X-Padding": "a" * (100 << 10)})

    # -- reading one task

    def detail_check(task_id: str) -> Callable[[Any], Optional[str]]:
        def check(r) -> Optional[str]:
            task = r.json()
            if task["id"] != task_id:
                return f"got task {task['id']}, expected {task_id}"
            if task["events"][0]["state"] != "pending":
                return f"the first event is {task['events'][0]}, expected the acceptance"
            return None
        return check

    c.call("GET", "/tasks/{taskID}", f"/tasks/{dup_id}", 200, note="full id, with events",
           check=detail_check(dup_id))
    c.call("GET", "/tasks/{taskID}", f"/tasks/{dup_id[:-1]}", 200, note="unique prefix",
           check=detail_check(dup_id))
    c.call("GET", "/tasks/{taskID}", f"/tasks/{missing_id}", 404, code="task_not_found")
    # (openapi-core matches the path as sent, undecoded: the request is not validated.)
    c.call("GET", "/tasks/{taskID}", f"/tasks/{dup_id.replace('-', '%2D')}", 200, note="percent-encoded id",
           check=detail_check(dup_id), request_valid=None)
    for bad_id, what in (("%00", "NUL"), ("a" * 1000, "1,000 characters"), ("%C3%A9", "unicode")):
        c.call("GET", "/tasks/{taskID}", f"/tasks/{bad_id}", 400, code="invalid_task_id", note=what, request_valid=False)
    c.call("DELETE", "/tasks/{taskID}", "/tasks/%00", 400, code="invalid_task_id", note="NUL", request_valid=False)

    # -- logs of a task that cannot have any

    logs = "/tasks/{taskID}/logs"
    c.call("GET", logs, f"/tasks/{full_id}/logs", 409, code="logs_unavailable", note="a task that never ran")
    c.call("GET", logs, f"/tasks/{missing_id}/logs", 404, code="task_not_found")
    c.call("GET", logs, f"/tasks/{full_id}/logs?tail=-1", 400, code="invalid_query", note="tail=-1",
           request_valid=False)
    c.call("GET", logs, f"/tasks/{full_id}/logs?tail=abc", 400, code="invalid_query", note="tail=abc",
           request_valid=False)
    c.call("GET", logs, "/tasks/%00/logs", 400, code="invalid_task_id", note="NUL", request_valid=False)

    # -- what no operation describes: methods a path lacks, paths that name no route

    for method, path, allow in (("PUT", "/tasks", "GET, POST"), ("POST", f"/tasks/{dup_id}", "GET, DELETE"),
                                ("PATCH", "/nodes", "GET"), ("PUT", f"/nodes/{missing_id}", "GET, DELETE"),
                                ("GET", f"/nodes/{missing_id}/drain", "POST"),
                                ("OPTIONS", "/tasks/x/logs", "GET"), ("PATCH", "/services", "GET, POST"),
                                ("POST", f"/services/{missing_id}", "GET, PUT, DELETE"),
                                ("GET", f"/services/{missing_id}/rollback", "POST")):
        c.call_outside_spec(method, path, 405, "method_not_allowed", allow=allow,
                            body=json.dumps(task_file(f"oacheck-{run_id}-put")).encode() if method == "PUT" else None)
    for path, what in (("/nope", "unknown route"), ("/tasks/", "empty id"), ("/tasks//logs", "empty id"),
                       ("/services/", "empty name"), ("/services//rollback", "empty name")):
        c.call_outside_spec("GET", path, 404, "not_found", note=what)
    for refused in ("text", "put"):
        c.call("GET", "/tasks/{taskID}", f"/tasks/oacheck-{run_id}-{refused}", 404, code="task_not_found",
               note=f"the refused {'text/plain POST' if refused == 'text' else 'PUT'} submitted nothing")

    # -- ambiguous prefixes (the two tasks may exist from an earlier run: 200)

    for name in ("amb-1", "amb-2"):
        c.call("POST", "/tasks", "/tasks", (200, 201), note=f"{name}", body=task_file(name, ["sleep", "1"]))
    c.call("GET", "/tasks/{taskID}", "/tasks/amb-", 409, code="ambiguous_id", note="amb- matches amb-1 and amb-2")
    c.call("DELETE", "/tasks/{taskID}", "/tasks/amb-", 409, code="ambiguous_id", note="amb-")
    c.call("GET", logs, "/tasks/amb-/logs", 409, code="ambiguous_id", note="amb-")

    # -- listing

    def all_in(field: str, value: str) -> Callable[[Any], Optional[str]]:
        def check(r) -> Optional[str]:
            tasks = r.json()
            wrong = [t["id"] for t in tasks if t.get(field) != value]
            if wrong:
                return f"tasks whose {field} is not {value}: {wrong[:5]}"
            if any("events" in t for t in tasks):
                return "a listed task carries events"
            return None
        return check

    c.call("GET", "/tasks", "/tasks?state=pending", 200, note="state=pending", check=all_in("state", "pending"))

    link_holder: dict[str, str] = {}

    def first_page(r) -> Optional[str]:
        tasks = r.json()
        if len(tasks) != 1:
            return f"expected 1 task, got {len(tasks)}"
        link = r.headers.get("Link")
        expected = f'</tasks?limit=1&after={tasks[0]["id"]}>; rel="next"'
        if link != expected:
            return f"Link is {link!r}, expected {expected!r} (at least 2 tasks exist)"
        link_holder["next"] = link[1:link.index(">")]
        link_holder["first"] = tasks[0]["id"]
        return None

    c.call("GET", "/tasks", "/tasks?limit=1", 200, note="limit=1, Link to the next page", check=first_page)
    if "next" in link_holder:
        def second_page(r) -> Optional[str]:
            tasks = r.json()
            if len(tasks) != 1 or tasks[0]["id"] == link_holder["first"]:
                return f"the next page repeats or is empty: {[t['id'] for t in tasks]}"
            return None
        c.call("GET", "/tasks", link_holder["next"], 200, note="the Link's next page", check=second_page)
    else:
        c.fail("GET /tasks 200 (the Link's next page)", "no Link to follow")

    def no_link(r) -> Optional[str]:
        return f"a Link on the last page: {r.headers['Link']}" if "Link" in r.headers else None

    c.call("GET", "/tasks", "/tasks?limit=10000", 200, note="limit=10000, no Link", check=no_link)
    c.call("GET", "/tasks", "/tasks?state=bogus", 400, code="invalid_query", note="state=bogus", request_valid=False)
    c.call("GET", "/tasks", "/tasks?limit=0", 400, code="invalid_query", note="limit=0", request_valid=False)
    c.call("GET", "/tasks", "/tasks?limit=1000001", 400, code="invalid_query", note="limit=1000001", request_valid=False)
    c.call("GET", "/tasks", "/tasks?limit=abc", 400, code="invalid_query", note="limit=abc", request_valid=False)
    c.call("GET", "/tasks", f"/tasks?node={missing_id}", 404, code="node_not_found", note="unknown node")
    if nodes:
        node = nodes[0]
        c.call("GET", "/tasks", f"/tasks?node={node['id']}", 200, note="node=<a listed node>",
               check=all_in("node", node["id"]))
    else:
        c.note("GET /tasks 200 (node=<a listed node>)", "not exercised: no node is listed")

    # -- stopping

    def stopped(r) -> Optional[str]:
        task = r.json()
        if task["desiredState"] != "stop" or task["state"] not in ("stopping", "completed", "failed"):
            return f"desiredState {task['desiredState']}, state {task['state']} after a stop"
        return None

    c.call("DELETE", "/tasks/{taskID}", f"/tasks/{dup_id}", 202, check=stopped)
    c.call("DELETE", "/tasks/{taskID}", f"/tasks/{full_id}", 202, note="a pending task completes at once",
           check=lambda r: stopped(r) or (None if r.json()["state"] == "completed" else f"state {r.json()['state']}"))
    c.call("DELETE", "/tasks/{taskID}", f"/tasks/{missing_id}", 404, code="task_not_found")

    # -- names are identities while a task lives; an ended task is purged with its history

    named = task_file(name=f"oacheck-{run_id}-named", command=["sleep", "300"])
    response, _ = c.call("POST", "/tasks", "/tasks", 201, note="a named task", body=named)
    named_id = response.json()["id"] if response is not None and response.status_code == 201 else missing_id
    c.call("POST", "/tasks", "/tasks", 200, note="the same file under a live name: that task", body=named,
           check=lambda r: None if r.json()["id"] == named_id else f"another task: {r.json()['id']}")
    c.call("POST", "/tasks", "/tasks", 409, code="name_taken", note="another spec under a live name",
           body=task_file(name=f"oacheck-{run_id}-named", command=["sleep", "301"]))
    c.call("GET", "/tasks/{taskID}", f"/tasks/oacheck-{run_id}-named", 200, note="by name",
           check=lambda r: None if r.json()["id"] == named_id else f"another task: {r.json()['id']}")
    purge = "/tasks/{taskID}"
    c.call("DELETE", purge, f"/tasks/{named_id}?purge=true", 409, code="task_not_ended", note="purge=true, live")
    c.call("DELETE", purge, f"/tasks/{named_id}?purge=maybe", 400, code="invalid_query", note="purge=maybe", request_valid=False)
    c.call("DELETE", purge, f"/tasks/{named_id}", 202, note="stopped")
    wait_for(c, named_id, ("completed", "failed"), wait, "ended after its stop", lambda t: None)
    c.call("DELETE", purge, f"/tasks/{named_id}?purge=true", 204, note="purge=true, ended",
           check=lambda r: f"a body on 204: {r.text!r}" if r.content else None)
    c.call("GET", "/tasks/{taskID}", f"/tasks/{named_id}", 404, code="task_not_found", note="purged")

    # -- Cube's shape: a run event, then the stop event (State 3)

    def cube_created(r) -> Optional[str]:
        spec = r.json()["spec"]
        if spec["id"] != cube_id or spec.get("name") != "cube-web-1":
            return f"unexpected spec {spec}"
        if spec["ports"] != [{"containerPort": 8080, "protocol": "tcp"}] or spec.get("healthCheck", {}).get("path") != "/health":
            return f"Cube's ports or health check not translated: {spec}"
        return None

    c.call("POST", "/tasks", "/tasks", 201, note="Cube's task event", body=cube_event(cube_id, 2),
                               check=cube_created)

    if up_nodes:
        wait_for(c, cube_id, ("running",), wait, "running on a node, with its container and ports",
                 lambda t: None if t.get("container") and t.get("node") and t.get("nodeName") and t["ports"]
                 and t.get("startedAt") else f"a running task without container, node or ports: {t}")
    else:
        c.note("GET /tasks/{taskID} 200 (a running task)", "not exercised: no node is up")

    c.call("POST", "/tasks", "/tasks", 202, note="Cube's stop event, State 3", body=cube_event(cube_id, 3), check=stopped)
    c.call("POST", "/tasks", "/tasks", 404, code="task_not_found", note="Cube's stop event for an unknown task",
           body=cube_event(missing_id, 3))
    c.call("POST", "/tasks", "/tasks", 400, code="invalid_task", note="Cube's stop event without Task.ID",
           body=cube_event(None, 3))

    if up_nodes:
        wait_for(c, cube_id, ("completed",), wait, "completed after the stop",
                 lambda t: None if t.get("finishedAt") and t["desiredState"] == "stop" else f"no finishedAt: {t}")
        if oneshot_id:
            wait_for(c, oneshot_id, ("completed",), wait, "a one-shot task that exited 0",
                     lambda t: None if t.get("exitCode") == 0 and t.get("finishedAt") else f"no exitCode 0: {t}")
            hello = "hello from a one-shot task\n"
            c.call("GET", logs, f"/tasks/{oneshot_id}/logs", 200, note="a one-shot task's output",
                   check=lambda r: None if hello in r.text else f"the output lacks {hello!r}: {r.text!r}")
            c.call("GET", logs, f"/tasks/{oneshot_id}/logs?tail=1&follow=true", 200,
                   note="tail=1, follow=true on an ended task ends",
                   check=lambda r: None if r.text == hello else f"expected {hello!r}, got {r.text!r}")
        else:
            c.fail("GET /tasks/{taskID}/logs 200", "the one-shot task was not created")
    else:
        c.note("GET /tasks/{taskID} 200 (a completed task)", "not exercised: no node is up")
        c.note("GET /tasks/{taskID}/logs 200", "not exercised: no node is up")

    # -- services

    svc = f"oacheck-{run_id}-svc"
    svc_full = f"oacheck-{run_id}-svcfull"
    services = "/services/{name}"
    rollback = "/services/{name}/rollback"
    c.call("GET", "/services", "/services", 200,
           check=lambda r: "a listed service carries tasks" if any("tasks" in s for s in r.json()) else None)

    # A replica ignores SIGTERM, so that a removed service stays `removing` for its grace period.
    template = task_file(command=["sh", "-c", "trap '' TERM; sleep 600"], resources={"cpus": 0.05, "memory": "16MiB"},
                         stopGracePeriod="15s")
    update = {"parallelism": 1, "order": "start-first", "healthyDeadline": "30s", "minHealthyTime": "1s", "autoRollback": False}
    svc_file = {"name": svc, "replicas": 2, "task": template, "update": update}
    svc_normalized = {
        "name": svc, "replicas": 2,
        "task": {"image": IMAGE, "command": template["command"], "environment": {}, "ports": [],
                 "resources": {"cpus": 0.05, "memory": 16 << 20}, "restartPolicy": {"mode": "never"},
                 "stopGracePeriod": "15s", "constraints": {"labels": {}}},
        "update": update,
    }

    def service_created(name: str, normalized: dict) -> Callable[[Any], Optional[str]]:
        def check(r) -> Optional[str]:
            service = r.json()
            if r.headers.get("Location") != f"/services/{name}":
                return f"Location {r.headers.get('Location')!r} does not name /services/{name}"
            if service["spec"] != normalized:
                return f"spec not normalized as docs/SERVICES.md says: {service['spec']}"
            if (service["state"], service["version"], service["latestVersion"]) != ("active", 1, 1) or "deploy" in service:
                return f"a new service not active at version 1 without a deploy: {service}"
            header = r.headers.get("X-Orch-Revision", "")
            if not header.isdigit() or int(header) < service["revision"] or service["revision"] < 1:
                return f"X-Orch-Revision {header!r} does not cover the service's revision {service['revision']}"
            return None
        return check

    response, _ = c.call("POST", "/services", "/services", 201, note="a service file", body=svc_file,
                         check=service_created(svc, svc_normalized))
    svc_first = body_of(response, dict) or None

    def same_service(r) -> Optional[str]:
        if svc_first is None:
            return "the first creation failed"
        if r.json()["createdAt"] != svc_first["createdAt"]:
            return f"not the service created first: created {r.json()['createdAt']}"
        return service_created(svc, svc_normalized)(r)

    c.call("POST", "/services", "/services", 200, note="the same service file again", body=svc_file, check=same_service)
    c.call("POST", "/services", "/services", 409, code="service_conflict", note="same name, another spec",
           body={**svc_file, "replicas": 3})
    c.call("POST", "/services", "/services", 400, code="invalid_service", note="invalid service file, every problem",
           body={"name": "Bad_Name", "replicas": -1, "task": {"image": "", "id": "x"}, "update": {"order": "sideways", "parallelism": 0}},
           request_valid=False,
           check=details_check(["name", "replicas", "task.id", "task.image", "update.order", "update.parallelism"]))
    c.call("POST", "/services", "/services", 400, code="invalid_service", note="an invalid task template",
           body={"name": f"oacheck-{run_id}-bad", "task": {"image": "", "resources": {"memory": "1KiB"}}},
           check=details_check(["task.image", "task.resources.memory"]))
    c.call("POST", "/services", "/services", 400, code="invalid_service", note="no name, no task",
           body={}, request_valid=False, check=details_check(["name", "task"]))
    c.call("POST", "/services", "/services", 400, code="invalid_service", note="unknown field",
           body={**svc_file, "replica": 2}, request_valid=False, check=details_check(["replica"]))
    c.call("POST", "/services", "/services", 400, code="invalid_service", note="malformed JSON",
           raw_body=b'{"name": "web",', request_valid=False, check=details_check([""]))
    c.call("POST", "/services", "/services", 400, code="invalid_service", note="not an object",
           raw_body=b"[]", request_valid=False, check=details_check([""]))
    c.call("POST", "/services", "/services", 400, code="invalid_service", note="empty body",
           raw_body=b"", request_valid=False, check=details_check([""]))
    c.call("POST", "/services", "/services", 400, code="invalid_service", note="100,000 nested [",
           raw_body=b"[" * 100_000, request_valid=False, check=details_check([""]))
    big = json.dumps({"name": f"oacheck-{run_id}-big", "task": {"image": IMAGE, "name": "x" * (2 << 20)}}).encode()
    c.call("POST", "/services", "/services", 413, code="body_too_large", note="a 2 MiB body", raw_body=big, request_valid=None)
    c.call("POST", "/services", "/services", 415, code="unsupported_media_type", note="a service file sent as text/plain",
           raw_body=json.dumps({**svc_file, "name": f"oacheck-{run_id}-text"}).encode(),
           headers={"Content-Type": "text/plain"}, request_valid=False)
    c.call("GET", services, f"/services/oacheck-{run_id}-text", 404, code="service_not_found",
           note="the refused text/plain POST created nothing")

    # Every field, in short forms; its replica is pinned to a node that does not exist, so it never runs.
    full = {
        "name": svc_full, "replicas": 1,
        "task": {"name": "full", "image": IMAGE, "command": "echo hi", "environment": ["A=1", "B=x=y"],
                 "ports": [8080, "53/udp"], "resources": {"cpus": "250m", "memory": "32MiB"}, "restartPolicy": "on-failure",
                 "stopGracePeriod": 1.5, "healthCheck": "/health", "disconnect": {"stopAfter": "30s"},
                 "constraints": {"node": f"oacheck-{run_id}-nowhere", "labels": {"disk": "ssd"}}},
        "update": {"order": "stop-first", "healthyDeadline": 90, "minHealthyTime": "0s"},
    }
    full_normalized = {
        "name": svc_full, "replicas": 1,
        "task": {"name": "full", "image": IMAGE, "command": ["/bin/sh", "-c", "echo hi"], "environment": {"A": "1", "B": "x=y"},
                 "ports": [{"containerPort": 8080, "protocol": "tcp"}, {"containerPort": 53, "protocol": "udp"}],
                 "resources": {"cpus": 0.25, "memory": 32 << 20}, "restartPolicy": {"mode": "on-failure"},
                 "stopGracePeriod": "1.5s", "disconnect": {"stopAfter": "30s"},
                 "healthCheck": {"path": "/health", "port": 8080, "interval": "10s", "timeout": "2s", "failureThreshold": 3},
                 "constraints": {"node": f"oacheck-{run_id}-nowhere", "labels": {"disk": "ssd"}}},
        "update": {"parallelism": 1, "order": "stop-first", "healthyDeadline": "1m30s", "minHealthyTime": "0s",
                   "autoRollback": True},
    }
    c.call("POST", "/services", "/services", 201, note="every field, in short forms", body=full,
           check=service_created(svc_full, full_normalized))

    # -- reading one service, and its tasks

    def replicas_check(name: str, slots: list[int], version: int) -> Callable[[Any], Optional[str]]:
        def check(r) -> Optional[str]:
            service = r.json()
            if service["name"] != name:
                return f"got service {service['name']}, expected {name}"
            live = [t for t in service["tasks"] if t["desiredState"] == "run"]
            got = sorted((t["slot"], t["version"]) for t in live)
            expected = [(slot, version) for slot in slots]
            return None if got == expected else f"live replicas (slot, version) {got}, expected {expected}"
        return check

    c.call("GET", services, f"/services/{svc}", 200, note="with its tasks", check=replicas_check(svc, [1, 2], 1))
    # (openapi-core matches the path as sent, undecoded: the request is not validated.)
    c.call("GET", services, f"/services/{svc.replace('-', '%2D')}", 200, note="percent-encoded name",
           check=replicas_check(svc, [1, 2], 1), request_valid=None)
    c.call("GET", services, f"/services/{missing_id}", 404, code="service_not_found")
    for bad_name, what in (("Web", "uppercase"), ("-web", "a leading dash"), ("a" * 64, "64 characters"),
                           ("%00", "NUL"), ("%C3%A9", "unicode")):
        c.call("GET", services, f"/services/{bad_name}", 400, code="invalid_service_name", note=what, request_valid=False)

    def replicas_of(name: str) -> Callable[[Any], Optional[str]]:
        def check(r) -> Optional[str]:
            tasks = r.json()
            wrong = [t["id"] for t in tasks if t.get("service") != name or not t.get("slot") or not t.get("version")]
            if wrong or not tasks:
                return f"tasks that are not replicas of {name}: {wrong[:5]}" if wrong else f"no task of {name}"
            return all_in("service", name)(r)
        return check

    response, _ = c.call("GET", "/tasks", f"/tasks?service={svc}", 200, note="service=<our service>", check=replicas_of(svc))
    replica_ids = [t["id"] for t in body_of(response, list) if isinstance(t, dict) and "id" in t]
    service_link: dict[str, str] = {}

    def service_first_page(r) -> Optional[str]:
        tasks = r.json()
        link = r.headers.get("Link", "")
        expected = f'</tasks?limit=1&after={tasks[0]["id"]}&service={svc}>; rel="next"' if len(tasks) == 1 else "(one task)"
        if link != expected:
            return f"Link is {link!r}, expected {expected!r} (the service has 2 replicas)"
        service_link["next"] = link[1:link.index(">")]
        return replicas_of(svc)(r)

    c.call("GET", "/tasks", f"/tasks?service={svc}&limit=1", 200, note="service and limit=1, Link keeps the filter",
           check=service_first_page)
    if "next" in service_link:
        c.call("GET", "/tasks", service_link["next"], 200, note="the Link's next page of the service's tasks",
               check=replicas_of(svc))
    else:
        c.fail("GET /tasks 200 (the Link's next page of the service's tasks)", "no Link to follow")
    c.call("GET", "/tasks", f"/tasks?service={missing_id}", 404, code="service_not_found", note="unknown service")
    if replica_ids:
        c.call("GET", "/tasks/{taskID}", f"/tasks/{replica_ids[0]}", 200, note="a replica: service, version, slot",
               check=lambda r: None if r.json().get("service") == svc and r.json().get("version") == 1 and r.json().get("slot")
               else f"not a replica of {svc} at version 1: {r.text}")
    else:
        c.fail("GET /tasks/{taskID} 200 (a replica: service, version, slot)", "the service listed no task")
    c.call("GET", "/tasks/{taskID}", f"/tasks/{dup_id}", 200, note="a plain task has no service, version, slot",
           check=lambda r: None if not {"service", "version", "slot"} & set(r.json()) else f"service fields on a plain task: {r.text}")

    if up_nodes:
        wait_for_service(c, svc, wait, "its replicas run on nodes",
                         lambda s: s["replicas"]["running"] == 2,
                         lambda s: None if s["replicas"]["healthy"] == 2 and all(t.get("node") and t.get("nodeName")
                                   for t in s["tasks"] if t["state"] == "running")
                         else f"running replicas without node or nodeName, or not healthy: {s}")
    else:
        c.note("GET /services/{name} 200 (its replicas run on nodes)", "not exercised: no node is up")

    # -- the catalog: a service's endpoints, and a blocking query on them

    endpoints = "/services/{name}/endpoints"

    def endpoints_check(count: int) -> Callable[[Any], Optional[str]]:
        def check(r) -> Optional[str]:
            catalog = r.json()
            if r.headers.get("X-Orch-Index") != str(catalog["index"]):
                return f"X-Orch-Index {r.headers.get('X-Orch-Index')!r} is not the body's index {catalog['index']}"
            ready = [e for e in catalog["endpoints"] if e["ready"]]
            if catalog["service"] != svc or len(ready) != count:
                return f"expected {count} ready endpoints of {svc}: {catalog}"
            if any(not e["address"] or e["draining"] or e["health"] not in ("none", "healthy") for e in ready):
                return f"a ready endpoint without address, draining or not healthy: {ready}"
            return None
        return check

    response, _ = c.call("GET", endpoints, f"/services/{svc}/endpoints", 200,
                         note="its replicas' endpoints" if up_nodes else "no node up: none ready",
                         check=endpoints_check(2 if up_nodes else 0))
    index = body_of(response, dict).get("index", 0)
    started = time.monotonic()
    c.call("GET", endpoints, f"/services/{svc}/endpoints?index={index}&wait=1s", 200,
           note="a blocking query with the current index: answered after the wait, same index",
           check=lambda r: None if r.json()["index"] == index and time.monotonic() - started >= 0.9
           else f"index {r.json()['index']} (asked {index}) after {time.monotonic() - started:.2f} s")
    c.call("GET", endpoints, f"/services/{svc}/endpoints?index={index + 1000000}&wait=30s", 200,
           note="another index: answered at once", check=lambda r: None if r.json()["index"] == index else f"index {r.json()['index']}")
    c.call("GET", endpoints, f"/services/{svc}/endpoints?index=-1", 400, code="invalid_query", note="a negative index",
           request_valid=False)
    c.call("GET", endpoints, f"/services/{svc}/endpoints?index=1&wait=1h", 400, code="invalid_query", note="a wait over 5m")
    c.call("GET", endpoints, f"/services/{svc}/endpoints?index=1&wait=soon", 400, code="invalid_query", note="a wait that is no duration",
           request_valid=False)
    c.call("GET", endpoints, f"/services/{missing_id}/endpoints", 404, code="service_not_found")

    # -- changing a service

    def scaled(r) -> Optional[str]:
        service = r.json()
        if service["replicas"]["wanted"] != 1 or service["spec"]["replicas"] != 1 or "deploy" in service:
            return f"not scaled to 1 without a deploy: {service}"
        return None

    response, _ = c.call("PUT", services, f"/services/{svc}", 200, note="scale to 1", body={"replicas": 1}, check=scaled)
    svc_scaled = body_of(response, dict)
    c.call("PUT", services, f"/services/{svc}", 200, note="the same change again changes nothing", body={"replicas": 1},
           check=lambda r: scaled(r) or (None if (r.json()["updatedAt"], r.json()["revision"])
                                         == (svc_scaled.get("updatedAt"), svc_scaled.get("revision"))
                                         else f"changed: {r.json()['updatedAt']}, revision {r.json()['revision']}"))
    c.call("PUT", services, f"/services/{svc}", 400, code="invalid_service", note="another name",
           body={"name": f"oacheck-{run_id}-other"}, check=details_check(["name"]))
    c.call("PUT", services, f"/services/{svc}", 400, code="invalid_service", note="nothing to change",
           body={}, request_valid=False, check=details_check([""]))
    c.call("PUT", services, f"/services/{svc}", 400, code="invalid_service", note="its own name only: nothing to change",
           body={"name": svc}, check=details_check([""]))
    c.call("PUT", services, f"/services/{svc}", 400, code="invalid_service", note="invalid values, every problem",
           body={"replicas": 5000, "update": {"order": "sideways"}}, request_valid=False,
           check=details_check(["replicas", "update.order"]))
    c.call("PUT", services, f"/services/{svc}", 400, code="invalid_service", note="an invalid task template",
           body={"task": {"image": ""}}, check=details_check(["task.image"]))
    c.call("PUT", services, f"/services/{svc}", 400, code="invalid_service", note="unknown field",
           body={"replica": 2}, request_valid=False, check=details_check(["replica"]))
    c.call("PUT", services, f"/services/{svc}", 400, code="invalid_service", note="malformed JSON",
           raw_body=b'{"replicas": 2', request_valid=False, check=details_check([""]))
    c.call("PUT", services, f"/services/{svc}", 415, code="unsupported_media_type", note="a change sent as text/plain",
           raw_body=b'{"replicas": 3}', headers={"Content-Type": "text/plain"}, request_valid=False)
    c.call("GET", services, f"/services/{svc}", 200, note="the refused changes changed nothing",
           check=lambda r: None if r.json()["spec"]["replicas"] == 1 and r.json()["latestVersion"] == 1 else f"changed: {r.text}")
    c.call("PUT", services, f"/services/{missing_id}", 404, code="service_not_found", body={"replicas": 1})
    c.call("PUT", services, "/services/Web", 400, code="invalid_service_name", note="uppercase", body={"replicas": 1},
           request_valid=False)

    # -- deploys and rollbacks

    c.call("POST", rollback, f"/services/{svc}/rollback", 409, code="nothing_to_roll_back", note="one version only")
    template_v2 = {**template, "environment": {"VERSION": "2"}}

    def deploying(r) -> Optional[str]:
        service = r.json()
        deploy = service.get("deploy", {})
        if (service["version"], service["latestVersion"]) != (2, 2) or (deploy.get("from"), deploy.get("to")) != (1, 2):
            return f"not deploying version 2 from 1: {service}"
        if deploy["state"] != "running" or service["spec"]["task"]["environment"] != {"VERSION": "2"}:
            return f"the deploy is {deploy['state']}, the spec {service['spec']}"
        return None

    c.call("PUT", services, f"/services/{svc}", 200, note="a new template: the deploy of version 2",
           body={"task": template_v2}, check=deploying)
    if up_nodes:
        wait_for_service(c, svc, wait, "the deploy of version 2 succeeded",
                         lambda s: s["deploy"]["state"] != "running",
                         lambda s: None if s["deploy"]["state"] == "succeeded" and s["deploy"].get("endedAt")
                         and s["replicas"]["healthy"] == 1 else f"deploy {s['deploy']}")
    else:
        c.note("GET /services/{name} 200 (the deploy of version 2 succeeded)", "not exercised: no node is up")

    def rolling_back(r) -> Optional[str]:
        service = r.json()
        deploy = service.get("deploy", {})
        if service["version"] != 1 or service["latestVersion"] != 2 or deploy.get("state") != "rolling-back":
            return f"not rolling back to version 1: version {service['version']}, deploy {deploy}"
        return None

    c.call("POST", rollback, f"/services/{svc}/rollback", 200, note="back to version 1", check=rolling_back)
    c.call("POST", rollback, f"/services/{svc}/rollback", 409, code="nothing_to_roll_back", note="rolling back already")
    c.call("POST", rollback, f"/services/{missing_id}/rollback", 404, code="service_not_found")
    c.call("POST", rollback, "/services/Web/rollback", 400, code="invalid_service_name", note="uppercase",
           request_valid=False)

    # -- removing

    def removing(r) -> Optional[str]:
        service = r.json()
        if service["state"] != "removing" or service["replicas"]["wanted"] != 0:
            return f"state {service['state']}, {service['replicas']['wanted']} replicas wanted after a removal"
        if any(t["desiredState"] != "stop" for t in service["tasks"]):
            return f"tasks still to run: {service['tasks']}"
        return None

    def removing_or_gone(r) -> Optional[str]:
        if r.status_code == 404:
            return None
        service = r.json()
        if service["state"] != "removing" or any(t["state"] != "completed" for t in service["tasks"]):
            return f"state {service['state']}, tasks {[(t['id'], t['state']) for t in service['tasks']]}"
        return None

    c.call("DELETE", services, f"/services/{svc_full}", 202, note="a service whose replica never ran", check=removing)
    # Forgotten once its tasks have ended: a pending task ends at once.
    c.call("GET", services, f"/services/{svc_full}", (200, 404), note="its tasks ended at once, removing or forgotten",
           check=removing_or_gone)
    c.call("DELETE", services, f"/services/{svc}", 202, check=removing)
    if up_nodes:
        c.call("GET", services, f"/services/{svc}", 200, note="removing while its tasks stop",
               check=lambda r: None if r.json()["state"] == "removing" else f"state {r.json()['state']}")
        c.call("DELETE", services, f"/services/{svc}", 202, note="removing already", check=removing)
        c.call("PUT", services, f"/services/{svc}", 409, code="service_removing", body={"replicas": 2})
        c.call("POST", rollback, f"/services/{svc}/rollback", 409, code="service_removing")
        c.call("POST", "/services", "/services", 409, code="service_removing", note="the same file again", body=svc_file)
    else:
        c.call("GET", services, f"/services/{svc}", (200, 404), note="none of its tasks was placed, removing or forgotten",
               check=removing_or_gone)
        c.note("PUT /services/{name} 409 service_removing", "not exercised: no node is up")
    c.call("DELETE", services, f"/services/{missing_id}", 404, code="service_not_found")
    c.call("DELETE", services, "/services/%00", 400, code="invalid_service_name", note="NUL", request_valid=False)

    # -- tokens and roles

    no_token = {"Authorization": None}
    c.call("GET", "/tasks", "/tasks", 401, code="unauthorized", note="no token", headers=no_token, request_valid=None,
           check=lambda r: None if r.headers.get("WWW-Authenticate", "").startswith("Bearer") else "no WWW-Authenticate: Bearer")
    c.call("POST", "/tasks", "/tasks", 401, code="unauthorized", note="a token nobody made", body=task_file(),
           headers={"Authorization": "Bearer orch_" + "x" * 43}, request_valid=None)
    c.call("GET", "/services", "/services", 401, code="unauthorized", note="no token", headers=no_token, request_valid=None)
    c.call("GET", "/healthz", "/healthz", 200, note="no token: health needs none", headers=no_token)
    viewer_name = f"oacheck-{run_id}-viewer"
    response, _ = c.call("POST", "/tokens", "/tokens", 201, note="a viewer token", body={"name": viewer_name, "role": "viewer"})
    viewer = body_of(response, dict).get("token")
    c.call("POST", "/tokens", "/tokens", 409, code="token_exists", note="the same name again", body={"name": viewer_name})
    c.call("POST", "/tokens", "/tokens", 400, code="invalid_token", note="no name", body={"role": "viewer"}, request_valid=False)
    c.call("POST", "/tokens", "/tokens", 400, code="invalid_body", note="not JSON", raw_body=b"{name", request_valid=False)
    c.call("POST", "/tokens", "/tokens", 400, code="invalid_token", note="an unknown role",
           body={"name": f"oacheck-{run_id}-x", "role": "root"}, request_valid=False)
    c.call("GET", "/tokens", "/tokens", 200,
           check=lambda r: None if any(t["name"] == viewer_name for t in r.json()) else "the new token is not listed")
    if viewer:
        as_viewer = {"Authorization": f"Bearer {viewer}"}
        c.call("GET", "/tasks", "/tasks", 200, note="a viewer reads", headers=as_viewer)
        c.call("POST", "/tasks", "/tasks", 403, code="forbidden", note="a viewer may not submit", body=task_file(), headers=as_viewer)
        c.call("DELETE", "/tasks/{taskID}", f"/tasks/{missing_id}", 403, code="forbidden", note="a viewer may not stop", headers=as_viewer)
        c.call("GET", "/tokens", "/tokens", 403, code="forbidden", note="a viewer may not list tokens", headers=as_viewer)
        c.call("POST", "/join-token/rotate", "/join-token/rotate", 403, code="forbidden", note="a viewer may not rotate", headers=as_viewer)
        c.call("GET", "/services", "/services", 200, note="a viewer reads", headers=as_viewer)
        c.call("POST", "/services", "/services", 403, code="forbidden", note="a viewer may not create a service",
               body={**svc_file, "name": f"oacheck-{run_id}-viewer"}, headers=as_viewer)
        c.call("PUT", services, f"/services/{missing_id}", 403, code="forbidden", note="a viewer may not change a service",
               body={"replicas": 1}, headers=as_viewer)
        c.call("POST", rollback, f"/services/{missing_id}/rollback", 403, code="forbidden", note="a viewer may not roll back",
               headers=as_viewer)
        c.call("DELETE", services, f"/services/{missing_id}", 403, code="forbidden", note="a viewer may not remove a service",
               headers=as_viewer)
        c.call("DELETE", "/tokens/{name}", f"/tokens/{viewer_name}", 204)
        c.call("GET", "/tasks", "/tasks", 401, code="unauthorized", note="a revoked token", headers=as_viewer, request_valid=None)
    c.call("DELETE", "/tokens/{name}", f"/tokens/{viewer_name}", 404, code="token_not_found", note="revoked already")
    c.call("POST", "/join-token/rotate", "/join-token/rotate", 201,
           check=lambda r: None if r.json()["token"].startswith("ORCH1-") else f"not a join token: {r.text}")

    # -- events

    c.call("GET", "/events", "/events", 200, note="the newest",
           check=lambda r: None if r.json()["events"] and r.json()["events"][-1]["id"] == r.json()["last"] else f"no events or last is not the newest: {_short(r.text)}")
    c.call("GET", "/events", "/events?since=0&limit=2", 200, note="from the oldest, two",
           check=lambda r: None if len(r.json()["events"]) == 2 and r.json()["events"][0]["id"] < r.json()["events"][1]["id"] else f"not two in order: {_short(r.text)}")
    c.call("GET", "/events", f"/events?task={dup_id}", 200, note="one task's",
           check=lambda r: None if r.json()["events"] and all(e.get("task") == dup_id for e in r.json()["events"]) else f"another task's: {_short(r.text)}")
    c.call("GET", "/events", "/events?since=999999999&wait=1ms", 200, note="after a restart: from the oldest, with a gap",
           check=lambda r: None if r.json()["gap"] else "no gap")
    c.call("GET", "/events", "/events?since=-1", 400, code="invalid_query", request_valid=False)
    c.call("GET", "/events", "/events?since=9223372036854775808", 400, code="invalid_query", request_valid=False,
           note="past the largest id (2^63 - 1): found by schemathesis")
    c.call("GET", "/events", "/events?limit=0", 400, code="invalid_query", request_valid=False)
    c.call("GET", "/events", "/events?follow=maybe", 400, code="invalid_query", request_valid=False)
    c.call("GET", "/events", f"/events?task={missing_id}", 404, code="task_not_found")
    c.call("GET", "/events", f"/events?service=oacheck-{run_id}-nosuch", 404, code="service_not_found")

    # -- nodes

    c.call("DELETE", "/nodes/{nodeID}", f"/nodes/{missing_id}", 404, code="node_not_found")
    c.call("GET", "/nodes/{nodeID}", f"/nodes/{missing_id}", 404, code="node_not_found")
    c.call("POST", "/nodes/{nodeID}/drain", f"/nodes/{missing_id}/drain", 404, code="node_not_found")
    c.call("POST", "/nodes/{nodeID}/undrain", f"/nodes/{missing_id}/undrain", 404, code="node_not_found")
    if nodes:
        node = nodes[0]
        c.call("GET", "/nodes/{nodeID}", f"/nodes/{node['id']}", 200, note="by id",
               check=lambda r: None if r.json()["id"] == node["id"] else "another node")
        c.call("GET", "/nodes/{nodeID}", f"/nodes/{node['name']}", 200, note="by name",
               check=lambda r: None if r.json()["id"] == node["id"] else "another node")
        c.call("POST", "/nodes/{nodeID}/drain", f"/nodes/{node['id']}/drain?move=maybe", 400, code="invalid_query",
               note="move=maybe", request_valid=False)
        c.call("POST", "/nodes/{nodeID}/drain", f"/nodes/{node['id']}/drain", 200, note="drained",
               check=lambda r: None if r.json()["drained"] else "not drained")
        c.call("POST", "/nodes/{nodeID}/undrain", f"/nodes/{node['id']}/undrain", 200, note="undrained",
               check=lambda r: None if not r.json()["drained"] else "still drained")
    else:
        c.note("GET /nodes/{nodeID} 200", "not exercised: no node is listed")
    if up_nodes:
        c.call("DELETE", "/nodes/{nodeID}", f"/nodes/{up_nodes[0]['id']}", 409, code="node_is_up",
               note=f"node {up_nodes[0]['name']} is up")
        c.call("DELETE", "/nodes/{nodeID}", f"/nodes/{up_nodes[0]['id'][:8]}", 409, code="node_is_up",
               note="a unique prefix of the up node's id")
        c.call("GET", "/nodes", "/nodes", 200, note="the up node is still listed",
               check=lambda r: None if any(n["id"] == up_nodes[0]["id"] for n in r.json()) else "the node vanished")
    else:
        c.note("DELETE /nodes/{nodeID} 409 node_is_up", "not exercised: no node is up")
    if remove_down_nodes and down_nodes:
        node = down_nodes[0]
        response, _ = c.call("DELETE", "/nodes/{nodeID}", f"/nodes/{node['id']}", 204, note=f"down node {node['name']}",
                             check=lambda r: f"a body on 204: {r.text!r}" if r.content else None)
        c.call("GET", "/nodes", "/nodes", 200, note="the removed node is gone",
               check=lambda r: "the removed node is still listed" if any(n["id"] == node["id"] for n in r.json()) else None)
    else:
        c.note("DELETE /nodes/{nodeID} 204", "not exercised: needs a down node and --remove-down-nodes"
               if not remove_down_nodes else "not exercised: no node is down")


def wait_for(c: Checker, task_id: str, states: tuple[str, ...], wait: float, note: str,
             check: Callable[[dict], Optional[str]]) -> None:
    """Polls GET /tasks/{taskID} (each answer validated) until the task is in one of `states`."""
    label_note = f"{note}"
    deadline = time.monotonic() + wait
    last = None
    while True:
        response, good = c.call("GET", "/tasks/{taskID}", f"/tasks/{task_id}", 200, note=label_note, report=False)
        if not good:
            return  # already reported as FAIL
        last = response.json()
        if last["state"] in states:
            reason = check(last)
            if reason:
                c.fail(f"GET /tasks/{{taskID}} 200 ({label_note})", reason)
            else:
                c.ok(f"GET /tasks/{{taskID}} 200 ({label_note})")
            return
        if time.monotonic() > deadline:
            c.fail(f"GET /tasks/{{taskID}} 200 ({label_note})",
                   f"task {task_id} still {last['state']} after {wait:.0f} s (error: {last.get('error')})")
            return
        time.sleep(0.5)


def wait_for_service(c: Checker, name: str, wait: float, note: str, done: Callable[[dict], bool],
                     check: Callable[[dict], Optional[str]]) -> None:
    """Polls GET /services/{name} (each answer validated) until `done` holds for the service."""
    label = f"GET /services/{{name}} 200 ({note})"
    deadline = time.monotonic() + wait
    while True:
        response, good = c.call("GET", "/services/{name}", f"/services/{name}", 200, note=note, report=False)
        if not good:
            return  # already reported as FAIL
        service = response.json()
        if done(service):
            reason = check(service)
            if reason:
                c.fail(label, reason)
            else:
                c.ok(label)
            return
        if time.monotonic() > deadline:
            c.fail(label, f"service {name} not there after {wait:.0f} s: replicas {service['replicas']}, deploy {service.get('deploy')}")
            return
        time.sleep(0.5)


def local_token(url) -> Optional[str]:
    """The token a manager left for this user for the API at `url` (as orchctl finds it)."""
    path = os.path.join(os.path.expanduser("~"), ".orch", "tokens", f"{url.hostname}:{url.port or 80}")
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read().strip() or None
    except OSError:
        return None


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        description="Exercises a running manager's REST API and validates every response against the OpenAPI spec.")
    parser.add_argument("--api", required=True, help="the manager's REST address, e.g. http://127.0.0.1:5555")
    parser.add_argument("--spec", default=str(DEFAULT_SPEC), help="the OpenAPI document (default: %(default)s)")
    parser.add_argument("--token", default=os.environ.get("ORCH_TOKEN"),
                        help="an admin token (default: $ORCH_TOKEN, else the one the manager left in ~/.orch/tokens/HOST:PORT)")
    parser.add_argument("--wait", type=float, default=60.0,
                        help="seconds to wait for a task to run or complete when a node is up (default: %(default)s)")
    parser.add_argument("--remove-down-nodes", action="store_true",
                        help="also remove one node that is down, to check DELETE /nodes/{nodeID} 204")
    args = parser.parse_args(argv)
    url = urlparse(args.api)
    if url.scheme not in ("http", "https") or not url.netloc or url.path not in ("", "/") or url.query:
        parser.error(f"--api must be http://HOST:PORT, not {args.api!r}")
    if not os.path.isfile(args.spec):
        parser.error(f"--spec: no file {args.spec}")
    if args.wait <= 0:
        parser.error("--wait must be positive")

    try:
        import openapi_core  # noqa: F401
        import requests  # noqa: F401
        import yaml  # noqa: F401
    except ImportError as error:
        print(f"check_openapi.py: {error}; install tools/requirements-test.txt (pip install -r tools/requirements-test.txt)",
              file=sys.stderr)
        return 2

    try:
        checker = Checker(args.api, args.spec, args.token or local_token(url))
    except Exception as error:
        print(f"FAIL {args.spec}: not a valid OpenAPI document: {_summary_of(error)}", flush=True)
        print("check_openapi: FAILED (the spec cannot be loaded)")
        return 1
    print(f"checking {checker.api} against {args.spec}", flush=True)
    try:
        run(checker, args.wait, args.remove_down_nodes)
    except Unreachable:
        print(f"check_openapi: FAILED: the API at {checker.api} does not answer")
        return 1
    total = checker.passed + checker.failed
    extra = f", {checker.notes} not exercised" if checker.notes else ""
    verdict = "FAILED" if checker.failed else "passed"
    print(f"check_openapi: {verdict}: {checker.passed} of {total} checks passed, {checker.failed} failed{extra}")
    return 1 if checker.failed else 0


if __name__ == "__main__":
    sys.exit(main())
