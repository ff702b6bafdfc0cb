"""The Anthropic Python SDK through codex-proxy (POST /v1/messages, translated to the Responses
API), checking both what the SDK gets back and, from the scenario upstream's record, what the
proxy sent upstream."""

import json

import anthropic

from harness import (
    ENCRYPTED_PREFIX,
    GREETING,
    MODEL,
    SUMMARY,
    TOOL_RESULT,
    WEATHER_SCHEMA,
    Record,
    check,
    contains,
    env,
    eq,
    function_tool_names,
    items_of,
    run_all,
    test,
    user_texts,
)

record = Record(env("RECORD"))
client = anthropic.Anthropic(base_url=env("ANTHROPIC_BASE"), api_key="sk-ant-client-dummy", max_retries=0, timeout=30)

WEATHER = {"name": "get_weather", "description": "Current weather for a city", "input_schema": WEATHER_SCHEMA}
ASK_WEATHER = "What is the weather in Paris? Use the get_weather tool."
THINKING = {"type": "enabled", "budget_tokens": 2048}


def check_usage(usage, what):
    """Anthropic input_tokens exclude cached tokens; the scenario upstream caches a quarter."""
    total_input = usage.input_tokens + (usage.cache_read_input_tokens or 0)
    check(usage.input_tokens > 0 and usage.output_tokens > 0, f"{what}: usage {usage}")
    eq(usage.cache_read_input_tokens, total_input // 4, f"{what}: cache_read_input_tokens (upstream: input/4)")


@test
def test_messages_create():
    record.mark()
    message = client.messages.create(
        model=MODEL,
        max_tokens=256,
        system="Be brief.",
        messages=[{"role": "user", "content": "Say hello"}],
    )
    eq(message.type, "message", "type")
    eq(message.role, "assistant", "role")
    eq([b.type for b in message.content], ["text"], "content blocks")
    eq(message.content[0].text, GREETING + "Say hello", "text")
    eq(message.stop_reason, "end_turn", "stop_reason")
    check_usage(message.usage, "usage")
    body = record.one_response_request()
    eq(body.get("model"), MODEL, "upstream model")
    eq(body.get("max_output_tokens"), 256, "upstream max_output_tokens")
    eq(user_texts(body), ["Say hello"], "upstream user messages")
    instructions = body.get("instructions") or ""
    system = [m for m in items_of(body, "message") if m.get("role") in ("developer", "system")]
    check("Be brief." in instructions or len(system) == 1, f"system prompt not sent upstream: {body}")


@test
def test_messages_stream():
    record.mark()
    with client.messages.stream(
        model=MODEL, max_tokens=256, messages=[{"role": "user", "content": "Say hello"}]
    ) as stream:
        pieces = list(stream.text_stream)
        final = stream.get_final_message()
    check(len(pieces) > 1, f"expected several text deltas, got {pieces}")
    eq("".join(pieces), GREETING + "Say hello", "streamed text")
    eq([b.type for b in final.content], ["text"], "final content blocks")
    eq(final.content[0].text, GREETING + "Say hello", "final text")
    eq(final.stop_reason, "end_turn", "stop_reason")
    check_usage(final.usage, "final usage")
    body = record.one_response_request()
    eq(body.get("stream"), True, "upstream stream")


@test
def test_messages_tool_use_round_trip():
    record.mark()
    messages = [{"role": "user", "content": ASK_WEATHER}]
    first = client.messages.create(model=MODEL, max_tokens=256, messages=messages, tools=[WEATHER])
    eq(first.stop_reason, "tool_use", "stop_reason")
    uses = [b for b in first.content if b.type == "tool_use"]
    eq(len(uses), 1, "tool_use blocks")
    eq(uses[0].name, "get_weather", "name")
    eq(uses[0].input, {"location": "Paris"}, "input")
    messages.append({"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in first.content]})
    messages.append(
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": uses[0].id, "content": "22 C and sunny"}]}
    )
    second = client.messages.create(model=MODEL, max_tokens=256, messages=messages, tools=[WEATHER])
    eq([b.type for b in second.content], ["text"], "content blocks after the tool")
    eq(second.content[0].text, TOOL_RESULT + "22 C and sunny", "answer after the tool")
    eq(second.stop_reason, "end_turn", "stop_reason")
    bodies = record.responses_since_mark(wait_for=2)
    eq(len(bodies), 2, "upstream requests")
    eq(function_tool_names(bodies[0]), ["get_weather"], "upstream tools")
    calls = items_of(bodies[1], "function_call")
    outputs = items_of(bodies[1], "function_call_output")
    eq(len(calls), 1, "upstream function_call items")
    eq([o["call_id"] for o in outputs], [calls[0]["call_id"]], "upstream function_call_output call_id")
    contains(json.dumps(outputs[0]["output"]), "22 C and sunny", "upstream tool output")
    eq(json.loads(calls[0]["arguments"]), {"location": "Paris"}, "upstream function_call arguments")


@test
def test_messages_stream_tool_use():
    with client.messages.stream(
        model=MODEL, max_tokens=256, messages=[{"role": "user", "content": ASK_WEATHER}], tools=[WEATHER]
    ) as stream:
        partial = [e.partial_json for e in stream if e.type == "input_json"]
        final = stream.get_final_message()
    eq(final.stop_reason, "tool_use", "stop_reason")
    uses = [b for b in final.content if b.type == "tool_use"]
    eq([(u.name, u.input) for u in uses], [("get_weather", {"location": "Paris"})], "tool_use blocks")
    check(len(partial) > 1, f"input JSON should stream in pieces, got {partial}")


@test
def test_messages_thinking_round_trip():
    record.mark()
    question = {"role": "user", "content": "Think, then say hello"}
    first = client.messages.create(model=MODEL, max_tokens=4096, thinking=THINKING, messages=[question])
    eq([b.type for b in first.content], ["thinking", "text"], "content blocks")
    thinking = first.content[0]
    eq(thinking.thinking, SUMMARY, "thinking text")
    check(thinking.signature.startswith(ENCRYPTED_PREFIX), f"signature {thinking.signature[:40]!r}")
    eq(first.content[1].text, GREETING + "Think, then say hello", "text")
    # The signed thinking block goes back with the next turn and becomes a reasoning item.
    second = client.messages.create(
        model=MODEL,
        max_tokens=4096,
        thinking=THINKING,
        messages=[
            question,
            {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in first.content]},
            {"role": "user", "content": "Again"},
        ],
    )
    eq(second.content[-1].text, GREETING + "Again", "second answer")
    bodies = record.responses_since_mark(wait_for=2)
    eq(len(bodies), 2, "upstream requests")
    reasoning = bodies[0].get("reasoning") or {}
    check(reasoning.get("effort") not in (None, "none"), f"upstream reasoning {reasoning}")
    check("reasoning.encrypted_content" in (bodies[0].get("include") or []), "upstream include")
    sent_back = [r.get("encrypted_content") for r in items_of(bodies[1], "reasoning")]
    eq(sent_back, [thinking.signature], "reasoning item sent back upstream")


@test
def test_messages_stream_thinking():
    with client.messages.stream(
        model=MODEL, max_tokens=4096, thinking=THINKING, messages=[{"role": "user", "content": "Say hello"}]
    ) as stream:
        kinds = [e.type for e in stream]
        final = stream.get_final_message()
    check("thinking" in kinds, f"no thinking events in {sorted(set(kinds))}")
    check("signature" in kinds, f"no signature event in {sorted(set(kinds))}")
    eq([b.type for b in final.content], ["thinking", "text"], "content blocks")
    eq(final.content[0].thinking, SUMMARY, "thinking text")
    check(final.content[0].signature.startswith(ENCRYPTED_PREFIX), "signature")
    eq(final.content[1].text, GREETING + "Say hello", "text")


@test
def test_messages_max_tokens_stop_reason():
    message = client.messages.create(
        model=MODEL, max_tokens=16, messages=[{"role": "user", "content": "Write a long answer"}]
    )
    eq(message.stop_reason, "max_tokens", "stop_reason")
    eq(len(message.content[0].text.split()), 16, "words (one per upstream token)")


if __name__ == "__main__":
    run_all()
