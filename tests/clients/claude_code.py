"""Claude Code (`claude -p`, the pinned @anthropic-ai/claude-code) through codex-proxy, hermetic:
its HOME and config dir in a temporary directory, a fake ANTHROPIC_API_KEY, non-essential traffic
(telemetry, error reports, auto-update) off, every run bounded by a timeout. Runs as root: tool
permission comes from --allowedTools (--dangerously-skip-permissions is refused as root).

Environment: CLAUDE_BIN (the claude executable), ANTHROPIC_BASE (the proxy, no /v1), RECORD;
TOKEN_BASE (optional): a proxy started with --client-token, whose token Claude is not given.
"""

import json
import os
import time

from harness import (
    GREETING,
    TOOL_RESULT,
    Record,
    check,
    contains,
    env,
    eq,
    function_tool_names,
    items_of,
    one_line,
    run_all,
    run_claude,
    test,
    user_texts,
)

CLAUDE = env("CLAUDE_BIN")
BASE = env("ANTHROPIC_BASE")
record = Record(env("RECORD"))
TIMEOUT_S = 120
# Only a shell that ran the scenario upstream's `echo tool-ran-$((6*7))` prints this.
MARKER = "tool-ran-42"


def claude(prompt, *args):
    """Runs `claude -p PROMPT --output-format json ARGS…` through the proxy; the parsed result."""
    done = run_claude(CLAUDE, BASE, prompt, *args, timeout=TIMEOUT_S)
    if done.returncode != 0:
        raise AssertionError(
            f"claude exit status {done.returncode}; stdout: {one_line(done.stdout)}; stderr: {one_line(done.stderr)}"
        )
    try:
        result = json.loads(done.stdout)
    except json.JSONDecodeError:
        raise AssertionError(f"stdout is not JSON: {one_line(done.stdout)}") from None
    check(not result.get("is_error"), f"claude reported an error: {one_line(json.dumps(result))}")
    return result


@test
def test_claude_code_prompt():
    record.mark()
    result = claude("say hi")
    eq(result.get("result"), GREETING + "say hi", "result")
    bodies = record.responses_since_mark(wait_for=1)
    check(bodies, "nothing reached the upstream")
    body = bodies[0]
    eq(body.get("stream"), True, "upstream stream")
    contains("\n".join(user_texts(body)), "say hi", "upstream user text")
    check("Bash" in function_tool_names(body), f"Claude Code's tools not sent upstream: {function_tool_names(body)}")
    check("x-anthropic-billing-header" not in json.dumps(body), "billing header line forwarded upstream")


@test
def test_claude_code_tool_round_trip():
    record.mark()
    result = claude("Use the Bash tool to print a marker.", "--allowedTools", "Bash", "--model", "gpt-5.4")
    contains(result.get("result"), TOOL_RESULT, "result")
    contains(result.get("result"), MARKER, "result (the command's output)")
    eq(result.get("num_turns"), 2, "turns")
    bodies = record.responses_since_mark(wait_for=2)
    calls = [c for b in bodies for c in items_of(b, "function_call") if c.get("name") == "Bash"]
    check(calls, "no Bash function_call sent back upstream")
    command = json.loads(calls[-1]["arguments"]).get("command")
    eq(command, "echo tool-ran-$((6*7))", "Bash command")
    outputs = [o for b in bodies for o in items_of(b, "function_call_output")]
    check(any(o["call_id"] == calls[-1]["call_id"] and MARKER in json.dumps(o["output"]) for o in outputs),
          f"no function_call_output with {MARKER} upstream")
    eq(bodies[-1].get("model"), "gpt-5.4", "upstream model")


@test
def test_claude_code_without_the_client_token_fails_within_5_s():
    # The proxy's 401 says `x-should-retry: false`; without it Claude Code retried for minutes
    # (11 attempts, 177 s) and printed nothing.
    token_base = os.environ.get("TOKEN_BASE")
    check(token_base, "TOKEN_BASE (a proxy started with --client-token) is not set")
    record.mark()
    start = time.monotonic()
    done = run_claude(CLAUDE, token_base, "say hi", timeout=30)
    elapsed = time.monotonic() - start
    output = done.stdout + done.stderr
    check(done.returncode != 0, f"claude exited 0 without the token: {one_line(output)}")
    check(elapsed < 5, f"claude took {elapsed:.1f} s to give up (limit 5 s): {one_line(output)}")
    try:
        result = json.loads(done.stdout)
    except json.JSONDecodeError:
        raise AssertionError(f"stdout is not JSON: {one_line(output)}") from None
    eq(result.get("is_error"), True, "is_error")
    eq(result.get("api_error_status"), 401, "api_error_status")
    # Claude Code shows its own words for a 401 ("Invalid API key · Fix external API key").
    contains(result.get("result"), "API key", "the message claude printed")
    eq(record.since_mark(), [], "requests that reached the upstream")


@test
def test_claude_code_with_v1_in_the_base_url_is_told_to_drop_it():
    # ANTHROPIC_BASE_URL=http://127.0.0.1:PORT/v1 makes Claude Code request /v1/v1/messages.
    record.mark()
    start = time.monotonic()
    done = run_claude(CLAUDE, BASE + "/v1", "say hi", timeout=30)
    elapsed = time.monotonic() - start
    output = done.stdout + done.stderr
    check(done.returncode != 0, f"claude exited 0 with /v1 in its base URL: {one_line(output)}")
    check(elapsed < 5, f"claude took {elapsed:.1f} s to give up (limit 5 s): {one_line(output)}")
    try:
        result = json.loads(done.stdout)
    except json.JSONDecodeError:
        raise AssertionError(f"stdout is not JSON: {one_line(output)}") from None
    eq(result.get("api_error_status"), 403, "api_error_status")
    contains(result.get("result"), f"Did you mean base URL {BASE} without /v1?", "the message claude printed")
    eq(record.since_mark(), [], "requests that reached the upstream")


if __name__ == "__main__":
    run_all()
