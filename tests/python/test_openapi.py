"""The contract, openapi.json, against the proxy that serves it: the served document is valid
Open API, and schemathesis fuzzes every operation from it (documented examples, boundary
values, random and invalid bodies, headers and paths, and stateful sequences through the
document's links), checking each answer against the document: status, content type,
headers, body and stream events, no 5xx, invalid input refused, valid input accepted.

What the fuzzer cannot see is tested elsewhere: streams over time and clients that leave
(tests/api/streams.rs), upstream and Redis faults (upstream_faults.rs, redis_faults.rs),
and what is sent upstream (every tests/api suite asserts on the fake upstream's record).
The few answers the fuzzer may not count as failures are in schemathesis_hooks.py, each
with why.

Reports (JUnit, and an NDJSON log of every request) are written to target/schemathesis/.
"""

import json
import os
import shutil
import subprocess
import sys
import re
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from openapi_spec_validator import validate

from conftest import ROOT, Proxy

FUZZ_SECRET = "sk-fuzz-test-4"
# The models the fuzzed proxies serve; the hooks excuse a refusal of any other name.
FUZZ_MODELS = "gpt-4o-mini"
REPORTS = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target")) / "schemathesis"
# Bounded so `make test` stays short; FUZZ_MAX_EXAMPLES and FUZZ_SEED widen a local run.
MAX_EXAMPLES = os.environ.get("FUZZ_MAX_EXAMPLES", "25")
MAX_SECONDS = os.environ.get("FUZZ_MAX_SECONDS", "120")
SEED = os.environ.get("FUZZ_SEED", "20261125")


def fuzz_env(redis):
    # Fuzzed bodies go up to the 1 MiB body limit; a chat of a few of them is over the
    # default prompt budget, which a schema cannot express (tests/api/budget.rs covers it).
    return {"OPENAI_BASE_URL": "echo", "REDIS_URL": redis.url, "MAX_PROMPT_TOKENS": "2000000",
            "ALLOWED_MODELS": FUZZ_MODELS}


@pytest.fixture(scope="module")
def fuzz_open_proxy(redis):
    server = Proxy(fuzz_env(redis), instances=2)
    yield server
    server.close()


@pytest.fixture(scope="module")
def fuzz_keyed_proxy(redis):
    server = Proxy({**fuzz_env(redis), "PROXY_API_KEYS": f"fuzz:{FUZZ_SECRET}"}, instances=2)
    yield server
    server.close()


def test_the_served_document_is_valid_open_api_and_the_one_in_the_repository(fuzz_open_proxy):
    with urllib.request.urlopen(f"{fuzz_open_proxy.url}/openapi.json") as answer:
        assert answer.status == 200
        assert answer.headers["Content-Type"] == "application/json"
        served = json.load(answer)
    validate(served)
    assert served == json.loads((ROOT / "openapi.json").read_text())


def known_things(proxy, headers=None):
    """What the routes that read a stored thing by id need to exist, made before the run and
    handed to the hooks (schemathesis_hooks.py), so that each is reached past its 404s
    whichever order the fuzzer takes the operations in: stored responses, read-only links
    of a chat, and a background response cancelled while it ran (cancelled again, it is a
    200; the fuzzer's own background responses end in about a second)."""
    headers = {"Content-Type": "application/json", **(headers or {})}

    def post(path, body=None):
        request = urllib.request.Request(f"{proxy.url}{path}", method="POST", headers=headers,
                                         data=json.dumps(body).encode() if body else None)
        with urllib.request.urlopen(request) as answer:
            return json.load(answer)

    responses = [post("/v1/responses", {"model": FUZZ_MODELS, "input": f"known {n}"})["id"]
                 for n in range(3)]
    post("/known-shared/chat", {"content": "a chat to share"})
    links = [f"known-shared:{post('/known-shared/share')['token']}" for _ in range(3)]
    words = " ".join(f"word{n}" for n in range(200))
    queued = post("/v1/responses", {"model": FUZZ_MODELS, "input": words, "background": True})
    cancelled = post(f"/v1/responses/{queued['id']}/cancel")
    assert cancelled["status"] == "cancelled", cancelled
    return {"FUZZ_KNOWN_RESPONSES": ",".join(responses), "FUZZ_KNOWN_LINKS": ",".join(links),
            "FUZZ_CANCELLED_RESPONSE": queued["id"]}


def run_schemathesis(proxy, name, *extra, document=None, headers=None):
    """Fuzzes `proxy` from the document it serves, or from `document` when given."""
    reports = REPORTS / name
    shutil.rmtree(reports, ignore_errors=True)
    reports.mkdir(parents=True)
    source = f"{proxy.url}/openapi.json"
    if document is not None:
        source = str(reports / "openapi.json")
        Path(source).write_text(json.dumps(document))
    command = [
        str(Path(sys.executable).parent / "schemathesis"), "run", source,
        "--url", proxy.url,
        "--checks", "all",
        "--phases", "examples,coverage,fuzzing,stateful",
        "--max-examples", MAX_EXAMPLES,
        "--max-time", MAX_SECONDS,
        "--seed", SEED,
        "--generation-database", "none",
        "--request-timeout", "30",
        "--report", "junit,ndjson",
        "--report-dir", str(reports),
        "--no-color",
        *extra,
    ]
    env = {**os.environ, "SCHEMATHESIS_HOOKS": "schemathesis_hooks",
           "PYTHONPATH": str(Path(__file__).parent),
           "FUZZ_FILTERED_LOG": str(reports / "dropped.json"),
           "FUZZ_ALLOWED_MODELS": FUZZ_MODELS,
           **known_things(proxy, headers)}
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT)
    output = done.stdout + done.stderr
    (reports / "output.txt").write_text(output)
    # The run did test: every operation was selected and requests were answered.
    assert "Operations:" in output and "selected" in output, output
    complaints = [line for line in proxy.logs().splitlines() if '"level":"INFO"' not in line]
    assert done.returncode == 0, f"{output}\n--- proxy log, but INFO ---\n" + "\n".join(complaints[-40:])
    return answers_by_operation(reports)


def documented_operations():
    """"METHOD /template" -> a regular expression for its request paths."""
    doc = json.loads((ROOT / "openapi.json").read_text())
    return {
        f"{method.upper()} {path}": re.compile("^" + re.sub(r"\\\{[a-z_]+\\\}", "[^/]+", re.escape(path)) + "$")
        for path, item in doc["paths"].items()
        for method in item
        if method in ("get", "post")
    }


def answers_by_operation(reports):
    """(status, content type) of every answer the run got, by the operation whose method
    and path the request had, stateful sequences included."""
    operations = documented_operations()
    answers = {}
    for report in reports.glob("*.ndjson"):
        for line in report.read_text().splitlines():
            scenario = json.loads(line).get("ScenarioFinished")
            if scenario is None:
                continue
            for interaction in scenario["recorder"].get("interactions", {}).values():
                request, response = interaction["request"], interaction["response"]
                if response is None:
                    continue
                path = urllib.parse.urlsplit(request["uri"]).path
                kind = response["headers"].get("content-type", [""])[0].split(";")[0]
                answer = (response["status_code"], kind)
                # By method too: the unsupported_method check's requests match no operation.
                answers.setdefault(request["method"], set()).add(answer)
                for operation, pattern in operations.items():
                    if operation.startswith(request["method"] + " ") and pattern.match(path):
                        answers.setdefault(operation, set()).add(answer)
    return answers


def checks_that_ran(reports):
    return {
        check["name"]
        for report in reports.glob("*.ndjson")
        for line in report.read_text().splitlines()
        if "ScenarioFinished" in line
        for checks in json.loads(line)["ScenarioFinished"]["recorder"].get("checks", {}).values()
        for check in checks
    }


def assert_it_exercised_every_operation(answers, refusals=frozenset({400, 405})):
    """The run tested what it should have: each operation answered 2xx at least once,
    each turn also as a stream, and invalid requests were sent and refused. (schemathesis
    does not fuzz the document it was given; the first test checks GET /openapi.json.)"""
    for operation in documented_operations():
        if operation == "GET /openapi.json":
            continue
        statuses = {status for status, _ in answers.get(operation, ())}
        # A read-only link lives only while its chat does, and the fuzzer lists every chat
        # (GET /chats) and deletes what it lists as it goes, the links made before the run
        # among them: whether one is left when it reads is chance. What a link answers is
        # tested in tests/api/shares.rs; here its refusals are checked against the document.
        if operation == "GET /shared/{token}":
            continue
        # Following or stopping a turn needs one being written at that moment (a streamed
        # turn holds an instance while it streams, which would take one of the run's two):
        # tests/api/live.rs and the playground's tests test both; here their refusals are
        # checked against the document.
        if operation in ("GET /{chat_id}/live", "POST /{chat_id}/stop"):
            continue
        assert any(200 <= s < 300 for s in statuses), f"{operation}: {sorted(statuses)}"
    for turn in ("POST /{chat_id}/chat", "POST /{chat_id}/img", "POST /v1/chat/completions"):
        assert (200, "text/event-stream") in answers[turn], f"{turn}: {sorted(answers[turn])}"
    refused = {status for found in answers.values() for status, _ in found if 400 <= status < 500}
    assert refusals.issubset(refused), sorted(refused)


def test_fuzzing_an_open_proxy_finds_nothing_the_document_does_not_promise(fuzz_open_proxy):
    assert_it_exercised_every_operation(run_schemathesis(fuzz_open_proxy, "open"))


def test_fuzzing_a_keyed_proxy_finds_nothing_the_document_does_not_promise(fuzz_keyed_proxy):
    # The document lets a caller go without a key, as an open proxy does; with
    # PROXY_API_KEYS set, one is required, so the fuzzer gets that deployment's contract
    # and its ignored_auth check sends requests without the key, or with a wrong one.
    document = json.loads((ROOT / "openapi.json").read_text())
    assert {} in document["security"]
    document["security"] = [scheme for scheme in document["security"] if scheme]
    answers = run_schemathesis(fuzz_keyed_proxy, "keyed",
                               "--header", f"Authorization: Bearer {FUZZ_SECRET}",
                               document=document,
                               headers={"Authorization": f"Bearer {FUZZ_SECRET}"})
    assert_it_exercised_every_operation(answers, {400, 401, 405})
    assert "ignored_auth" in checks_that_ran(REPORTS / "keyed")
