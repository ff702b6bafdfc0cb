"""Shared by the real-client tests in tests/clients/ (run by scripts/e2e-clients, no pytest).

Each test is a function registered with @test; run_all() runs them in order and prints
`test NAME ... ok` or `test NAME ... FAILED: reason`, then exits with the number of failures.

Environment (set by scripts/e2e-clients):
  OPENAI_BASE     base URL for the OpenAI SDK, e.g. http://127.0.0.1:PORT/v1
  ANTHROPIC_BASE  base URL for the Anthropic SDK, e.g. http://127.0.0.1:PORT (no /v1)
  RECORD          the scenario upstream's --record file: what reached the upstream
  TEST_PREFIX     prepended to every test name (to run one suite against two targets)
  TEST_FILTER     run only tests whose name contains this
"""

import json
import os
import subprocess
import sys
import tempfile
import time
import traceback

# What the scenario upstream (examples/scenario_upstream.rs) says; keep in step with it.
GREETING = "Hello from the scenario upstream. You said: "
TOOL_RESULT = "The tool returned: "
SUMMARY = "Thinking it over: the user wants a short, direct answer from the scenario."
ENCRYPTED_PREFIX = "gAAAAB"
MODEL = "gpt-5.4"

WEATHER_SCHEMA = {
    "type": "object",
    "properties": {
        "location": {"type": "string", "description": "City name"},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
    },
    "required": ["location"],
}
TIME_SCHEMA = {
    "type": "object",
    "properties": {"timezone": {"type": "string"}},
    "required": ["timezone"],
}

# The credential Claude Code is given (run_claude); it must never reach an upstream.
CLAUDE_CLIENT_KEY = "sk-ant-e2e-dummy"

_tests = []


def test(fn):
    _tests.append(fn)
    return fn


class Failure(Exception):
    pass


def check(condition, message):
    if not condition:
        raise Failure(message)


def eq(actual, expected, what):
    if actual != expected:
        raise Failure(f"{what}: expected {expected!r}, got {actual!r}")


def contains(haystack, needle, what):
    if haystack is None or needle not in haystack:
        raise Failure(f"{what}: expected to contain {needle!r}, got {haystack!r}")


def env(name, default=None):
    value = os.environ.get(name, default)
    if value is None:
        sys.exit(f"{sys.argv[0]}: environment variable {name} is required")
    return value


class Record:
    """The scenario upstream's --record file, read from a mark on."""

    def __init__(self, path):
        self.path = path
        self.offset = 0

    def mark(self):
        self.offset = os.path.getsize(self.path) if os.path.exists(self.path) else 0

    def since_mark(self, wait_for=0, timeout=5.0):
        """Requests recorded since mark(); waits until at least `wait_for` are there."""
        deadline = time.monotonic() + timeout
        while True:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                data = f.read()
            lines = [json.loads(line) for line in data.decode().splitlines() if line.strip()]
            if len(lines) >= wait_for or time.monotonic() > deadline:
                return lines

    def responses_since_mark(self, wait_for=0):
        """Bodies of the POST …/responses requests since mark()."""
        return [
            r["body"]
            for r in self.since_mark(wait_for)
            if r["method"] == "POST" and r["path"].split("?")[0] in ("/v1/responses", "/responses")
        ]

    def one_response_request(self):
        bodies = self.responses_since_mark(wait_for=1)
        eq(len(bodies), 1, "upstream requests for this call")
        return bodies[0]


def same_exchanges(tee, journal, want, key, client_keys):
    """The passthrough check, for the exchanges since each record's mark: every POST
    /v1/messages… the client made (as `tee`, tests/clients/tee.py, saw it) pairs in order with
    a request the Anthropic mock journaled (`mock_upstream --record`), at least `want` of them;
    the client received exactly the status and bytes the mock sent; the request body arrived
    as the client sent it, byte for byte; the mock got `key` as the only `x-api-key`, no
    `Authorization`, and none of `client_keys` anywhere in its headers. The mock's entries."""
    mocked = journal.since_mark(wait_for=want)
    seen = [e for e in tee.since_mark(wait_for=len(mocked)) if e["path"].startswith("/v1/messages")]
    check(len(mocked) >= want, f"the mock answered {len(mocked)} requests, expected at least {want}")
    eq(len(seen), len(mocked), "messages exchanges the client made vs requests the mock answered")
    for n, (client, mock) in enumerate(zip(seen, mocked), 1):
        where = f"exchange {n} ({client['method']} {client['path']})"
        eq(client["status"], mock["status"], f"{where}: status")
        eq(client["response"], mock["answer"], f"{where}: the bytes the client received")
        eq(mock["raw_body"], client["request"], f"{where}: the body the mock received (bytes)")
        headers = {}
        for name, value in mock["headers"]:
            headers.setdefault(name.lower(), []).append(value)
        eq(headers.get("x-api-key"), [key], f"{where}: x-api-key the mock received")
        eq(headers.get("authorization"), None, f"{where}: authorization the mock received")
        for client_key in client_keys:
            check(client_key not in json.dumps(mock["headers"]), f"{where}: the client's credential reached the mock")
    return mocked


def items_of(body, kind):
    """The input items of a Responses request body with this type (messages may lack one)."""
    items = body.get("input")
    if isinstance(items, str):
        items = [{"type": "message", "role": "user", "content": items}]
    out = []
    for item in items or []:
        item_type = item.get("type") or ("message" if "role" in item else None)
        if item_type == kind:
            out.append(item)
    return out


def message_text(item):
    content = item.get("content")
    if isinstance(content, str):
        return content
    return "".join(part.get("text", "") for part in content or [])


def user_texts(body):
    return [message_text(m) for m in items_of(body, "message") if m.get("role") == "user"]


def function_tool_names(body):
    return [t.get("name") for t in body.get("tools") or [] if t.get("type") == "function"]


def run_claude(claude, base, prompt, *args, timeout=120):
    """Runs `claude -p PROMPT --output-format json ARGS…` against `base` (no /v1) in a fresh
    home, hermetic: a temporary HOME and config dir, a fake ANTHROPIC_API_KEY, non-essential
    traffic (telemetry, error reports, auto-update) off. The finished process."""
    with tempfile.TemporaryDirectory(prefix="claude-e2e.") as home:
        work = os.path.join(home, "work")
        os.mkdir(work)
        keep = ("PATH", "LANG", "LC_ALL", "TERM", "TMPDIR", "USER", "LOGNAME", "SHELL")
        run_env = {k: v for k, v in os.environ.items() if k in keep}
        run_env.update(
            HOME=home,
            CLAUDE_CONFIG_DIR=os.path.join(home, ".claude"),
            ANTHROPIC_BASE_URL=base,
            ANTHROPIC_API_KEY=CLAUDE_CLIENT_KEY,
            CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC="1",
            DISABLE_AUTOUPDATER="1",
            DISABLE_TELEMETRY="1",
            DISABLE_ERROR_REPORTING="1",
        )
        try:
            return subprocess.run(
                [claude, "-p", prompt, "--output-format", "json", *args],
                cwd=work,
                env=run_env,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=timeout,
            )
        except subprocess.TimeoutExpired:
            raise AssertionError(f"claude -p did not finish in {timeout} s") from None


def run_all():
    prefix = os.environ.get("TEST_PREFIX", "")
    only = os.environ.get("TEST_FILTER", "")
    failures = 0
    for fn in _tests:
        name = prefix + fn.__name__.removeprefix("test_")
        if only and only not in name:
            continue
        start = time.monotonic()
        try:
            fn()
        except Failure as e:
            failures += 1
            print(f"test {name} ... FAILED: {e}", flush=True)
        except Exception as e:  # an SDK error is a failure of this test, not of the run
            failures += 1
            print(f"test {name} ... FAILED: {type(e).__name__}: {one_line(e)}", flush=True)
            if os.environ.get("TEST_VERBOSE"):
                traceback.print_exc()
        else:
            print(f"test {name} ... ok ({time.monotonic() - start:.2f} s)", flush=True)
    sys.exit(min(failures, 100))


def one_line(e):
    text = " ".join(str(e).split())
    return text[:400] + ("…" if len(text) > 400 else "")
