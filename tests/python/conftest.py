"""The proxy as its users run it, for tests with real clients: the function binary that
`cargo test` built, run under `cargo lambda watch`'s Lambda emulator (its HTTP front and
Runtime API, `--only-lambda-apis`) on a free port, over a redis-server of its own, with the
built-in echo upstream, so no key, no network and no second build are needed.

`make test` runs these after the Rust suite: .venv/bin/pytest tests/python
"""

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

CALLERS = {"alice": "sk-alice-test-1", "bob": "sk-bob-test-2", "burst": "sk-burst-test-3"}
RATE_LIMIT_PER_MINUTE = 30


def node_test(test_file, env=None):
    """Runs a `node --test` file of tests/js on the Node 22 that `npm ci` put there (or, on
    a machine it could not, the `node` on the PATH); answers its report, asserting every
    case passed."""
    js = ROOT / "tests" / "js"
    bundled = js / "node_modules" / ".bin" / "node"
    node = str(bundled) if bundled.exists() else shutil.which("node")
    assert node, "no Node.js: make test installs tests/js (npm ci), or put Node 22 on the PATH"
    done = subprocess.run([node, "--test", "--test-reporter=spec", test_file], cwd=js,
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, **(env or {})})
    report = done.stdout + done.stderr
    assert done.returncode == 0, report
    return report


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(url, process, seconds, log):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args[0]} exited:\n{Path(log).read_text()}")
        try:
            with urllib.request.urlopen(url, timeout=seconds) as answer:
                if answer.status == 200:
                    return
        except OSError:
            # Refused: the emulator is not listening yet.
            time.sleep(0.25)
    raise RuntimeError(f"{url} did not answer in {seconds} s:\n{Path(log).read_text()}")


class RedisServer:
    def __init__(self):
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="chat-proxy-redis-")
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", self.dir],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while self.cli("PING") != "PONG":
            if time.monotonic() > deadline:
                raise RuntimeError("redis-server did not start")
            time.sleep(0.05)

    @property
    def url(self):
        return f"redis://127.0.0.1:{self.port}"

    def cli(self, *args):
        done = subprocess.run(["redis-cli", "-e", "-p", str(self.port), "--raw", *args],
                              capture_output=True, text=True)
        return done.stdout.strip() if done.returncode == 0 else None

    def stop(self):
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def close(self):
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


class Proxy:
    """The function binary behind `cargo lambda watch --only-lambda-apis` on a free port,
    with `tools/lambda_events.py` as Lambda's Invoke API for its Event invocations.
    `instances=2` runs two instances side by side, as Lambda would, so that a background
    response's run (another invocation) goes on while the other instance answers; one
    instance answers requests in the order they come, as the playground's tests expect."""

    def __init__(self, env, instances=1):
        self.port = free_port()
        self.log = tempfile.NamedTemporaryFile(prefix="chat-proxy-watch-", suffix=".log", delete=False).name
        path = f"{ROOT / '.venv-lambda' / 'bin'}{os.pathsep}{os.environ['PATH']}"
        target = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
        binary = target / "debug" / "bootstrap"
        if not binary.exists():
            raise RuntimeError(f"{binary} is missing: cargo test (or cargo build) builds it")
        log = open(self.log, "w")
        self.emulator = subprocess.Popen(
            ["cargo", "lambda", "watch", "--only-lambda-apis", "--invoke-address", "127.0.0.1",
             "--invoke-port", str(self.port)],
            cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
            env={**os.environ, "PATH": path}, start_new_session=True,
        )
        # The function exits if the Runtime API is not there yet: wait for the emulator.
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or self.emulator.poll() is not None:
                    raise RuntimeError(f"cargo lambda did not start:\n{Path(self.log).read_text()}")
                time.sleep(0.05)
        events_port = free_port()
        self.events = subprocess.Popen(
            [sys.executable, str(ROOT / "tools" / "lambda_events.py"), str(events_port),
             f"http://127.0.0.1:{self.port}", "_"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        function_env = {
            "PATH": os.environ["PATH"],
            "AWS_LAMBDA_FUNCTION_NAME": "chat-proxy",
            "AWS_LAMBDA_FUNCTION_VERSION": "1",
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "128",
            "AWS_LAMBDA_RUNTIME_API": f"http://127.0.0.1:{self.port}/.rt",
            # Lambda's Invoke API, for background responses: the stand-in above, which the
            # SDK signs its calls to with these (unchecked) credentials.
            "AWS_ENDPOINT_URL_LAMBDA": f"http://127.0.0.1:{events_port}",
            "AWS_REGION": "us-east-1",
            "AWS_ACCESS_KEY_ID": "local",
            "AWS_SECRET_ACCESS_KEY": "local",
            "LOG_FORMAT": "json",
            **env,
        }
        self.functions = [
            subprocess.Popen(
                [str(binary)], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                env=function_env, start_new_session=True,
            )
            for _ in range(instances)
        ]
        # One probe that waits as long as it takes: a client that gives up leaves the
        # emulator an invocation nobody waits for.
        wait_for(f"{self.url}/", self.emulator, 60, self.log)

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"

    def logs(self):
        return Path(self.log).read_text()

    def close(self):
        if os.environ.get("SHOW_PROXY_LOGS"):
            print(self.logs())
        for process in (*self.functions, self.events, self.emulator):
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
                try:
                    process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
        os.unlink(self.log)


@pytest.fixture(scope="module")
def redis():
    server = RedisServer()
    yield server
    server.close()


@pytest.fixture(scope="module")
def proxy(redis):
    """With callers' keys (`CALLERS`) and a rate limit."""
    keys = ",".join(f"{name}:{secret}" for name, secret in CALLERS.items())
    server = Proxy({
        "OPENAI_BASE_URL": "echo",
        "REDIS_URL": redis.url,
        "PROXY_API_KEYS": keys,
        "RATE_LIMIT_PER_MINUTE": str(RATE_LIMIT_PER_MINUTE),
        "REDIS_TIMEOUT_MS": "500",
    }, instances=2)
    yield server
    server.close()


@pytest.fixture(scope="module")
def open_proxy(redis):
    """An open API, as `make watch` runs it."""
    server = Proxy({"OPENAI_BASE_URL": "echo", "REDIS_URL": redis.url})
    yield server
    server.close()
