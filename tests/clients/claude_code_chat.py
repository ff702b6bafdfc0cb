"""Claude Code (`claude -p`) over a keyless `chat` provider, through codex-proxy's Responses hub
(Messages → Responses → Chat Completions and back), hermetic as in claude_code.py.

The proxy's config routes Claude Code's model to the chat provider by an alias
(`"claude-sonnet-4-5" = "qwen3-coder"`, and `default = true` for its background model); the
server is examples/mock_upstream --wire chat --tools, which refuses any Authorization, answers
CHAT_TEXT, calls the tool a prompt names (Bash: `echo tool-ran-$((6*7))`), and after the tool's
result says "The tool returned: <output>".

Environment: CLAUDE_BIN, ANTHROPIC_BASE (the proxy, no /v1), CHAT_TEXT.
"""

import json
import os
import subprocess
import tempfile

from harness import check, contains, env, eq, one_line, run_all, test

CLAUDE = env("CLAUDE_BIN")
BASE = env("ANTHROPIC_BASE")
TEXT = env("CHAT_TEXT")
MODEL = "claude-sonnet-4-5"
TIMEOUT_S = 120


def claude(prompt, *args):
    """`claude -p PROMPT --output-format json --model MODEL ARGS…` in a fresh home; the result."""
    with tempfile.TemporaryDirectory(prefix="claude-chat-e2e.") as home:
        work = os.path.join(home, "work")
        os.mkdir(work)
        keep = ("PATH", "LANG", "LC_ALL", "TERM", "TMPDIR", "USER", "LOGNAME", "SHELL")
        run_env = {k: v for k, v in os.environ.items() if k in keep}
        run_env.update(
            HOME=home,
            CLAUDE_CONFIG_DIR=os.path.join(home, ".claude"),
            ANTHROPIC_BASE_URL=BASE,
            ANTHROPIC_API_KEY="sk-ant-e2e-dummy",
            CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC="1",
            DISABLE_AUTOUPDATER="1",
            DISABLE_TELEMETRY="1",
            DISABLE_ERROR_REPORTING="1",
        )
        try:
            done = subprocess.run(
                [CLAUDE, "-p", prompt, "--output-format", "json", "--model", MODEL, *args],
                cwd=work,
                env=run_env,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=TIMEOUT_S,
            )
        except subprocess.TimeoutExpired:
            raise AssertionError(f"claude -p did not finish in {TIMEOUT_S} s") from None
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
def test_claude_code_prompt_over_a_keyless_chat_provider():
    result = claude("say hi")
    eq(result.get("result"), TEXT, "result")


@test
def test_claude_code_bash_round_trip_over_a_keyless_chat_provider():
    result = claude("Use the Bash tool to print a marker.", "--allowedTools", "Bash")
    contains(result.get("result"), "The tool returned: ", "result")
    contains(result.get("result"), "tool-ran-42", "result (the command's output)")
    eq(result.get("num_turns"), 2, "turns")


if __name__ == "__main__":
    run_all()
