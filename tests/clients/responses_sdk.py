"""The OpenAI Python SDK's Responses client against OPENAI_BASE.

scripts/e2e-clients runs this twice: straight at the scenario upstream (TEST_PREFIX=upstream_,
which checks that the mock's answers parse cleanly in the SDK) and through codex-proxy's
passthrough route POST /v1/responses (TEST_PREFIX=proxy_responses_).
"""

import json
import typing
import urllib.request

import openai
import pydantic
from openai.types.responses import Response, ResponseStreamEvent

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
    items_of,
    one_line,
    run_all,
    test,
)

BASE = env("OPENAI_BASE")
record = Record(env("RECORD"))
client = openai.OpenAI(base_url=BASE, api_key="sk-client-dummy", max_retries=0, timeout=30)

WEATHER_TOOL = {
    "type": "function",
    "name": "get_weather",
    "description": "Current weather for a city",
    "parameters": WEATHER_SCHEMA,
}
REASONING = {"effort": "high", "summary": "auto"}
INCLUDE = ["reasoning.encrypted_content"]


def _event_classes():
    """Each event class of the SDK's ResponseStreamEvent union, by its `type` literal."""
    union = typing.get_args(ResponseStreamEvent)[0]  # Annotated[Union[...], discriminator]
    classes = {}
    for cls in typing.get_args(union):
        (literal,) = typing.get_args(cls.model_fields["type"].annotation)
        classes[literal] = cls
    return classes


EVENT_CLASSES = _event_classes()


def raw_events(body):
    """POSTs body (stream:true) with urllib; every SSE event, each validated strictly
    against the SDK's event union (a missing required field or unknown type fails)."""
    events = []
    request = urllib.request.Request(
        f"{BASE}/responses",
        data=json.dumps(body).encode(),
        headers={"authorization": "Bearer sk-client-dummy", "content-type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as r:
        eq(r.status, 200, "status")
        contains(r.headers.get("content-type"), "text/event-stream", "content-type")
        for raw in r:
            line = raw.decode().rstrip("\r\n")
            if line.startswith("data:"):
                data = json.loads(line[5:])
                cls = EVENT_CLASSES.get(data.get("type"))
                check(cls is not None, f"event type {data.get('type')!r} unknown to the SDK")
                try:
                    cls.model_validate(data)
                except pydantic.ValidationError as e:
                    raise AssertionError(f"event {data.get('type')} does not validate: {one_line(e)}") from None
                events.append(data)
    eq([e["sequence_number"] for e in events], list(range(len(events))), "sequence numbers")
    return events


@test
def test_responses_stream_text():
    record.mark()
    with client.responses.stream(model=MODEL, input="Say hello", instructions="Be brief.") as stream:
        deltas = [e.delta for e in stream if e.type == "response.output_text.delta"]
        final = stream.get_final_response()
    eq(final.output_text, GREETING + "Say hello", "output_text")
    eq("".join(deltas), final.output_text, "joined deltas")
    check(len(deltas) > 1, f"expected several deltas, got {len(deltas)}")
    eq(final.status, "completed", "status")
    usage = final.usage
    check(usage.input_tokens > 0 and usage.output_tokens == len(deltas), f"usage {usage}")
    eq(usage.input_tokens_details.cached_tokens, usage.input_tokens // 4, "cached tokens")
    body = record.one_response_request()
    eq(body.get("stream"), True, "upstream stream")
    eq(body.get("model"), MODEL, "upstream model")


@test
def test_responses_create_stream_events():
    stream = client.responses.create(model=MODEL, input="Say hello", stream=True)
    types = [e.type for e in stream]
    expected_order = [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    deduped = [t for i, t in enumerate(types) if i == 0 or types[i - 1] != t]
    eq(deduped, expected_order, "event order")


@test
def test_responses_create_json():
    record.mark()
    response = client.responses.create(model=MODEL, input=[{"role": "user", "content": "Say hello"}])
    eq(response.output_text, GREETING + "Say hello", "output_text")
    eq(response.status, "completed", "status")
    check(response.usage.total_tokens == response.usage.input_tokens + response.usage.output_tokens, "total")
    body = record.one_response_request()
    check(not body.get("stream"), f"upstream stream should be off, got {body.get('stream')!r}")


@test
def test_responses_tool_round_trip():
    record.mark()
    with client.responses.stream(
        model=MODEL, input="What is the weather in Paris? Use the get_weather tool.", tools=[WEATHER_TOOL]
    ) as stream:
        arg_deltas = [e.delta for e in stream if e.type == "response.function_call_arguments.delta"]
        first = stream.get_final_response()
    calls = [o for o in first.output if o.type == "function_call"]
    eq(len(calls), 1, "function calls")
    call = calls[0]
    eq(call.name, "get_weather", "name")
    eq(json.loads(call.arguments), {"location": "Paris"}, "arguments")
    check(len(arg_deltas) > 1, f"arguments should stream in pieces, got {arg_deltas}")
    eq("".join(arg_deltas), call.arguments, "joined argument deltas")
    second = client.responses.create(
        model=MODEL,
        tools=[WEATHER_TOOL],
        input=[
            {"role": "user", "content": "What is the weather in Paris? Use the get_weather tool."},
            {"type": "function_call", "call_id": call.call_id, "name": call.name, "arguments": call.arguments},
            {"type": "function_call_output", "call_id": call.call_id, "output": "22 C and sunny"},
        ],
    )
    eq(second.output_text, TOOL_RESULT + "22 C and sunny", "answer after the tool")
    bodies = record.responses_since_mark(wait_for=2)
    eq(len(bodies), 2, "upstream requests")
    eq([t["name"] for t in bodies[0]["tools"]], ["get_weather"], "upstream tools")
    outputs = items_of(bodies[1], "function_call_output")
    eq([o["call_id"] for o in outputs], [call.call_id], "upstream function_call_output call_id")


@test
def test_responses_reasoning_round_trip():
    record.mark()
    with client.responses.stream(model=MODEL, input="Think, then say hello", reasoning=REASONING, include=INCLUDE) as s:
        summary = "".join(e.delta for e in s if e.type == "response.reasoning_summary_text.delta")
        first = s.get_final_response()
    eq(summary, SUMMARY, "summary deltas")
    reasoning = [o for o in first.output if o.type == "reasoning"]
    eq(len(reasoning), 1, "reasoning items")
    item = reasoning[0]
    check((item.encrypted_content or "").startswith(ENCRYPTED_PREFIX), f"encrypted_content {item.encrypted_content!r}")
    eq([s.text for s in item.summary], [SUMMARY], "summary")
    eq(first.output[1].type, "message", "second item")
    check(first.usage.output_tokens_details.reasoning_tokens > 0, f"reasoning tokens {first.usage}")
    # Sending the reasoning item back (stateless continuation) is accepted.
    second = client.responses.create(
        model=MODEL,
        reasoning=REASONING,
        include=INCLUDE,
        store=False,
        input=[
            {"role": "user", "content": "Think, then say hello"},
            {"type": "reasoning", "id": item.id, "summary": [], "encrypted_content": item.encrypted_content},
            {"role": "assistant", "content": first.output_text},
            {"role": "user", "content": "Again"},
        ],
    )
    contains(second.output_text, GREETING + "Again", "second answer")
    bodies = record.responses_since_mark(wait_for=2)
    eq([r.get("encrypted_content") for r in items_of(bodies[1], "reasoning")], [item.encrypted_content], "upstream reasoning")


@test
def test_responses_incomplete_at_max_output_tokens():
    stream = client.responses.create(model=MODEL, input="Write a long answer", max_output_tokens=16, stream=True)
    events = list(stream)
    eq(events[-1].type, "response.incomplete", "terminal event")
    eq(events[-1].response.incomplete_details.reason, "max_output_tokens", "reason")
    eq(sum(1 for e in events if e.type == "response.output_text.delta"), 16, "deltas")


@test
def test_responses_json_schema():
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
        "required": ["city", "days"],
        "additionalProperties": False,
    }
    response = client.responses.create(
        model=MODEL,
        input="Plan a trip as JSON",
        text={"format": {"type": "json_schema", "name": "trip", "schema": schema, "strict": True}},
    )
    value = json.loads(response.output_text)
    check(isinstance(value.get("city"), str) and isinstance(value.get("days"), int), f"JSON {value}")


@test
def test_responses_rejects_unpaired_tool_output():
    try:
        client.responses.create(
            model=MODEL, input=[{"type": "function_call_output", "call_id": "call_missing", "output": "x"}]
        )
    except openai.BadRequestError as e:
        contains(str(e), "No tool call found", "error")
    else:
        raise AssertionError("expected a 400")


@test
def test_responses_sse_events_validate():
    # Text, tool call, reasoning + text: every raw event validates against the SDK's types.
    scenarios = [
        {"model": MODEL, "input": "Say hello", "stream": True},
        {"model": MODEL, "input": "Use the get_weather tool", "tools": [WEATHER_TOOL], "stream": True},
        {"model": MODEL, "input": "Say hello", "reasoning": REASONING, "include": INCLUDE, "stream": True},
    ]
    for body in scenarios:
        events = raw_events(body)
        eq(events[-1]["type"], "response.completed", "terminal event")
        usage = events[-1]["response"]["usage"]
        check("cached_tokens" in usage["input_tokens_details"], "cached_tokens")
        check("reasoning_tokens" in usage["output_tokens_details"], "reasoning_tokens")
        # The same request without streaming: the JSON Response object validates too.
        body = dict(body, stream=False)
        request = urllib.request.Request(
            f"{BASE}/responses",
            data=json.dumps(body).encode(),
            headers={"authorization": "Bearer sk-client-dummy", "content-type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as r:
            try:
                Response.model_validate(json.load(r))
            except pydantic.ValidationError as e:
                raise AssertionError(f"Response object does not validate: {one_line(e)}") from None


if __name__ == "__main__":
    run_all()
