"""Real clients over providers (`--config`): Claude Code and the Anthropic Python SDK on the
native Anthropic passthrough (an `anthropic` provider for claude-*, whose upstream is
`mock_upstream --wire anthropic --record`), the OpenAI SDK on the same proxy's second provider
(an `openai` provider for gpt-*, the scenario upstream), and a model no provider serves.

Every client talks to the proxy through tests/clients/tee.py, so a test can check that the
client received exactly the bytes the mock sent (harness.same_exchanges).

Environment (set by scripts/e2e-clients): ANTHROPIC_BASE and OPENAI_BASE (the tee in front of
the providers proxy), CLAUDE_BIN, RECORD (the scenario upstream's record), ANTHROPIC_RECORD
(the Anthropic mock's --record), TEE_RECORD, ANTHROPIC_PROVIDER_KEY and OPENAI_PROVIDER_KEY
(the keys the proxy got on stdin: what each upstream must receive), ANTHROPIC_TEXT (what the
Anthropic mock says).
"""

import json

import anthropic
import openai

from harness import (
    CLAUDE_CLIENT_KEY,
    GREETING,
    MODEL,
    WEATHER_SCHEMA,
    Record,
    check,
    contains,
    env,
    eq,
    one_line,
    run_all,
    run_claude,
    same_exchanges,
    test,
)

CLAUDE = env("CLAUDE_BIN")
ANTHROPIC_BASE = env("ANTHROPIC_BASE")
TEXT = env("ANTHROPIC_TEXT")
ANTHROPIC_KEY = env("ANTHROPIC_PROVIDER_KEY")
OPENAI_KEY = env("OPENAI_PROVIDER_KEY")
CLIENT_KEYS = ("sk-ant-client-dummy", "sk-client-dummy", CLAUDE_CLIENT_KEY)
CLAUDE_MODEL = "claude-sonnet-4-5"
UNSERVED_MODEL = "llama-3-8b"

scenario = Record(env("RECORD"))
journal = Record(env("ANTHROPIC_RECORD"))
tee = Record(env("TEE_RECORD"))
claude = anthropic.Anthropic(base_url=ANTHROPIC_BASE, api_key="sk-ant-client-dummy", max_retries=0, timeout=30)
gpt = openai.OpenAI(base_url=env("OPENAI_BASE"), api_key="sk-client-dummy", max_retries=0, timeout=30)

WEATHER = {"name": "get_weather", "description": "Current weather for a city", "input_schema": WEATHER_SCHEMA}


def mark():
    for record in (scenario, journal, tee):
        record.mark()


def exchanges(want):
    return same_exchanges(tee, journal, want, ANTHROPIC_KEY, CLIENT_KEYS)


def answer_of(entry):
    """The mock's answer as JSON (a JSON answer), or its events' data (a stream)."""
    if entry["answer"].startswith("event:"):
        return [json.loads(line[5:]) for line in entry["answer"].splitlines() if line.startswith("data:")]
    return json.loads(entry["answer"])


@test
def test_passthrough_sdk_messages_create():
    mark()
    message = claude.messages.create(
        model=CLAUDE_MODEL, max_tokens=256, system="Be brief.", messages=[{"role": "user", "content": "Say hello"}]
    )
    eq([b.type for b in message.content], ["text"], "content blocks")
    eq(message.content[0].text, TEXT, "text")
    eq(message.model, CLAUDE_MODEL, "model (the mock echoes the request's)")
    (entry,) = exchanges(1)
    eq(message.id, answer_of(entry)["id"], "the message is the mock's")
    eq(entry["path"], "/v1/messages", "path upstream")
    eq(scenario.since_mark(), [], "requests the gpt-* provider's upstream got")


@test
def test_passthrough_sdk_messages_stream():
    mark()
    with claude.messages.stream(
        model=CLAUDE_MODEL, max_tokens=256, messages=[{"role": "user", "content": "Say hello"}]
    ) as stream:
        pieces = list(stream.text_stream)
        final = stream.get_final_message()
    check(len(pieces) > 1, f"expected several text deltas, got {pieces}")
    eq("".join(pieces), TEXT, "streamed text")
    eq(final.stop_reason, "end_turn", "stop_reason")
    (entry,) = exchanges(1)
    eq(entry["body"].get("stream"), True, "stream upstream")
    eq(final.id, answer_of(entry)[0]["message"]["id"], "the stream is the mock's")


@test
def test_passthrough_sdk_tool_use_round_trip():
    mark()
    messages = [{"role": "user", "content": "What is the weather in Paris? Use the get_weather tool."}]
    with claude.messages.stream(model=CLAUDE_MODEL, max_tokens=256, messages=messages, tools=[WEATHER]) as stream:
        partial = [e.partial_json for e in stream if e.type == "input_json"]
        first = stream.get_final_message()
    eq(first.stop_reason, "tool_use", "stop_reason")
    uses = [b for b in first.content if b.type == "tool_use"]
    eq([(u.name, u.input) for u in uses], [("get_weather", {"location": "mock"})], "tool_use blocks")
    check(len(partial) > 1, f"input JSON should stream in pieces, got {partial}")
    messages.append({"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in first.content]})
    messages.append({"role": "user", "content": [{"type": "tool_result", "tool_use_id": uses[0].id, "content": "18 C"}]})
    second = claude.messages.create(model=CLAUDE_MODEL, max_tokens=256, messages=messages, tools=[WEATHER])
    eq(second.content[0].text, "The tool returned: 18 C", "answer after the tool")
    exchanges(2)


@test
def test_passthrough_sdk_count_tokens():
    mark()
    counted = claude.messages.count_tokens(model=CLAUDE_MODEL, messages=[{"role": "user", "content": "Count me"}])
    (entry,) = exchanges(1)
    eq(entry["path"], "/v1/messages/count_tokens", "path upstream")
    eq(counted.input_tokens, answer_of(entry)["input_tokens"], "the upstream's exact count")


@test
def test_passthrough_claude_code_prompt():
    mark()
    done = run_claude(CLAUDE, ANTHROPIC_BASE, "say hi", "--model", CLAUDE_MODEL)
    check(done.returncode == 0, f"claude exit status {done.returncode}: {one_line(done.stdout + done.stderr)}")
    result = json.loads(done.stdout)
    check(not result.get("is_error"), f"claude reported an error: {one_line(done.stdout)}")
    eq(result.get("result"), TEXT, "result")
    entries = exchanges(1)
    streamed = [e for e in entries if e["body"].get("stream") is True]
    check(streamed, "Claude Code sent no streamed request")
    models = sorted({e["body"].get("model") for e in entries})
    check(all(m.startswith("claude-") for m in models), f"models upstream {models}")
    check("Bash" in [t.get("name") for t in streamed[-1]["body"].get("tools") or []], "Claude Code's tools upstream")
    eq(scenario.since_mark(), [], "requests the gpt-* provider's upstream got")


@test
def test_routing_openai_sdk_gpt_goes_to_the_openai_provider():
    mark()
    response = gpt.responses.create(model=MODEL, input="Say hello")
    eq(response.output_text, GREETING + "Say hello", "output_text")
    with gpt.responses.stream(model=MODEL, input="Say hello again") as stream:
        deltas = [e.delta for e in stream if e.type == "response.output_text.delta"]
    eq("".join(deltas), GREETING + "Say hello again", "streamed text")
    requests = scenario.since_mark(wait_for=2)
    eq(len(requests), 2, "requests the gpt-* provider's upstream got")
    for r in requests:
        auth = [v for k, v in r["headers"] if k.lower() == "authorization"]
        eq(auth, [f"Bearer {OPENAI_KEY}"], "authorization upstream (the openai provider's key)")
        check(ANTHROPIC_KEY not in json.dumps(r), "the claude provider's key reached the openai upstream")
    eq(journal.since_mark(), [], "requests the claude-* provider's upstream got")


@test
def test_model_not_found_openai_sdk():
    mark()
    try:
        gpt.responses.create(model=UNSERVED_MODEL, input="hi")
    except openai.BadRequestError as e:
        eq(e.status_code, 400, "status")
        eq(e.code, "model_not_found", "error code")
        contains(e.message, UNSERVED_MODEL, "message")
    else:
        raise AssertionError("no error for a model no provider serves")
    eq(scenario.since_mark(), [], "upstream requests (openai)")
    eq(journal.since_mark(), [], "upstream requests (claude)")


@test
def test_model_not_found_anthropic_sdk():
    mark()
    try:
        claude.messages.create(model=UNSERVED_MODEL, max_tokens=16, messages=[{"role": "user", "content": "hi"}])
    except anthropic.BadRequestError as e:
        eq(e.status_code, 400, "status")
        eq(e.body["error"]["type"], "not_found_error", "error type")
        check(e.body["error"]["message"].startswith("model_not_found: "), f"message {e.body}")
    else:
        raise AssertionError("no error for a model no provider serves")
    eq(scenario.since_mark(), [], "upstream requests (openai)")
    eq(journal.since_mark(), [], "upstream requests (claude)")


if __name__ == "__main__":
    run_all()
