"""Local users through the real SDKs: scripts/e2e-clients runs this file as several local users
(setpriv) against a proxy started with --allow-user (and once with --user nobody and
--client-token), and says what each user must get. The kernel tells the proxy who owns each
connection; no client sends anything to say who it is.

Environment (besides harness.py's):
  EXPECT        served | 403 | 401: what every request of this run must get
  CLIENT_TOKEN  the proxy's --client-token token to send (as the SDKs send API keys), if any
"""

import anthropic
import openai

from harness import GREETING, MODEL, check, contains, env, eq, run_all, test

expect = env("EXPECT")
key = env("CLIENT_TOKEN", "") or "sk-client-dummy"
responses = openai.OpenAI(base_url=env("OPENAI_BASE"), api_key=key, max_retries=0, timeout=30)
messages = anthropic.Anthropic(base_url=env("ANTHROPIC_BASE"), api_key=key, max_retries=0, timeout=30)

# What each refusal carries (README, "Who may use the port"; "Client token mode"): the code on
# OpenAI routes, the error type on Anthropic ones.
CODES = {"403": "user_not_allowed", "401": "invalid_client_token"}
ANTHROPIC_TYPES = {"403": "permission_error", "401": "authentication_error"}


def refused(call, sdk_error, what, error_of):
    """`call` must raise the SDK's status error with the expected status and error."""
    try:
        call()
    except sdk_error as e:
        eq(str(e.status_code), expect, f"{what}: status")
        eq(error_of(e), (CODES if sdk_error is openai.APIStatusError else ANTHROPIC_TYPES)[expect], f"{what}: error")
        return
    raise AssertionError(f"{what}: served, expected {expect}")


def openai_code(e):
    return e.code


def anthropic_type(e):
    return (e.body or {}).get("error", {}).get("type") if isinstance(e.body, dict) else None


@test
def test_responses_create():
    call = lambda: responses.responses.create(model=MODEL, input="Say hello")
    if expect == "served":
        contains(call().output_text, GREETING, "output_text")
    else:
        refused(call, openai.APIStatusError, "responses", openai_code)


@test
def test_messages_create():
    call = lambda: messages.messages.create(
        model=MODEL, max_tokens=64, messages=[{"role": "user", "content": "Say hello"}]
    )
    if expect == "served":
        message = call()
        check(message.content and message.content[0].type == "text", f"content {message.content}")
        contains(message.content[0].text, GREETING, "text")
    else:
        refused(call, anthropic.APIStatusError, "messages", anthropic_type)


if __name__ == "__main__":
    run_all()
