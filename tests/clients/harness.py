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
import sys
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
