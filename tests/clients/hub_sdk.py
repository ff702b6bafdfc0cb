"""The OpenAI Python SDK over an Anthropic provider, through codex-proxy's Responses hub: Chat
Completions and Responses calls, streamed and not, and a tool round trip on each, answered by
the offline Anthropic Messages mock (examples/mock_upstream --wire anthropic).

The mock says HUB_TEXT; given tools and a prompt naming one it calls that tool with its
required fields filled (`{"location": "mock"}` here); given a tool result it answers
"The tool returned: <result>". The proxy's config routes `claude-*` to the mock.

Environment: OPENAI_BASE (the proxy's /v1 base), HUB_TEXT, HUB_MODEL (a claude-* name).
"""

import json

import openai

from harness import WEATHER_SCHEMA, check, env, eq, run_all, test

client = openai.OpenAI(base_url=env("OPENAI_BASE"), api_key="sk-client-dummy", max_retries=0, timeout=30)
TEXT = env("HUB_TEXT")
MODEL = env("HUB_MODEL")
ASK_WEATHER = "What is the weather in Paris? Use the get_weather tool."
RESULT = "sunny, 21 degrees"

CHAT_WEATHER = {
    "type": "function",
    "function": {"name": "get_weather", "description": "Current weather for a city", "parameters": WEATHER_SCHEMA},
}
RESPONSES_WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "Current weather for a city",
    "parameters": WEATHER_SCHEMA,
}


@test
def test_hub_chat_nonstream():
    completion = client.chat.completions.create(
        model=MODEL,
        max_tokens=200,
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hello"}],
    )
    eq(completion.object, "chat.completion", "object")
    eq(completion.model, MODEL, "model")
    choice = completion.choices[0]
    eq(choice.message.role, "assistant", "role")
    eq(choice.message.content, TEXT, "content")
    eq(choice.finish_reason, "stop", "finish_reason")
    usage = completion.usage
    check(usage.prompt_tokens > 0 and usage.completion_tokens > 0, f"usage {usage}")
    eq(usage.total_tokens, usage.prompt_tokens + usage.completion_tokens, "total_tokens")


@test
def test_hub_chat_stream():
    stream = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Say hello"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    check(len(chunks) > 2, f"expected several chunks, got {len(chunks)}")
    eq(chunks[0].choices[0].delta.role, "assistant", "first delta role")
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    eq(text, TEXT, "streamed content")
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    eq(finishes, ["stop"], "finish reasons")
    usage = [c.usage for c in chunks if c.usage]
    eq(len(usage), 1, "usage chunks")
    check(usage[0].prompt_tokens > 0 and usage[0].completion_tokens > 0, f"usage {usage[0]}")


def chat_tool_round_trip(stream):
    messages = [{"role": "user", "content": ASK_WEATHER}]
    if stream:
        chunks = list(client.chat.completions.create(model=MODEL, messages=messages, tools=[CHAT_WEATHER], stream=True))
        calls = {}
        finish = None
        for chunk in chunks:
            if not chunk.choices:
                continue
            choice = chunk.choices[0]
            finish = choice.finish_reason or finish
            for call in choice.delta.tool_calls or []:
                entry = calls.setdefault(call.index, {"id": None, "name": None, "arguments": ""})
                entry["id"] = call.id or entry["id"]
                if call.function:
                    entry["name"] = call.function.name or entry["name"]
                    entry["arguments"] += call.function.arguments or ""
        eq(len(calls), 1, "streamed tool calls")
        call = calls[0]
    else:
        completion = client.chat.completions.create(model=MODEL, messages=messages, tools=[CHAT_WEATHER])
        finish = completion.choices[0].finish_reason
        eq(len(completion.choices[0].message.tool_calls or []), 1, "tool calls")
        tool_call = completion.choices[0].message.tool_calls[0]
        call = {"id": tool_call.id, "name": tool_call.function.name, "arguments": tool_call.function.arguments}
    eq(finish, "tool_calls", "finish_reason")
    eq(call["name"], "get_weather", "tool name")
    eq(json.loads(call["arguments"]), {"location": "mock"}, "tool arguments")
    check(call["id"], "tool call id")
    messages.append(
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [{"id": call["id"], "type": "function", "function": {"name": call["name"], "arguments": call["arguments"]}}],
        }
    )
    messages.append({"role": "tool", "tool_call_id": call["id"], "content": RESULT})
    if stream:
        chunks = list(client.chat.completions.create(model=MODEL, messages=messages, tools=[CHAT_WEATHER], stream=True))
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    else:
        text = client.chat.completions.create(model=MODEL, messages=messages, tools=[CHAT_WEATHER]).choices[0].message.content
    eq(text, "The tool returned: " + RESULT, "answer after the tool result")


@test
def test_hub_chat_tool_round_trip_nonstream():
    chat_tool_round_trip(False)


@test
def test_hub_chat_tool_round_trip_stream():
    chat_tool_round_trip(True)


@test
def test_hub_responses_nonstream():
    response = client.responses.create(model=MODEL, instructions="Be brief.", input="Say hello")
    eq(response.status, "completed", "status")
    eq(response.model, MODEL, "model")
    eq(response.output_text, TEXT, "output_text")
    check(response.usage.input_tokens > 0 and response.usage.output_tokens > 0, f"usage {response.usage}")


@test
def test_hub_responses_stream():
    deltas = []
    with client.responses.stream(model=MODEL, input="Say hello") as stream:
        for event in stream:
            if event.type == "response.output_text.delta":
                deltas.append(event.delta)
        final = stream.get_final_response()
    check(len(deltas) > 1, f"expected several deltas, got {deltas}")
    eq("".join(deltas), TEXT, "streamed text")
    eq(final.output_text, TEXT, "final output_text")
    eq(final.status, "completed", "final status")
    check(final.usage and final.usage.output_tokens > 0, f"usage {final.usage}")


def responses_tool_round_trip(stream):
    history = [{"role": "user", "content": ASK_WEATHER}]

    def call(**kwargs):
        if not stream:
            return client.responses.create(model=MODEL, input=history, tools=[RESPONSES_WEATHER], **kwargs)
        with client.responses.stream(model=MODEL, input=history, tools=[RESPONSES_WEATHER], **kwargs) as s:
            for _ in s:
                pass
            return s.get_final_response()

    first = call()
    calls = [item for item in first.output if item.type == "function_call"]
    eq(len(calls), 1, "function calls")
    eq(calls[0].name, "get_weather", "tool name")
    eq(json.loads(calls[0].arguments), {"location": "mock"}, "tool arguments")
    history += [item.model_dump(exclude_none=True) for item in first.output]
    history.append({"type": "function_call_output", "call_id": calls[0].call_id, "output": RESULT})
    second = call()
    eq(second.output_text, "The tool returned: " + RESULT, "answer after the tool result")


@test
def test_hub_responses_tool_round_trip_nonstream():
    responses_tool_round_trip(False)


@test
def test_hub_responses_tool_round_trip_stream():
    responses_tool_round_trip(True)


@test
def test_hub_responses_refusal_is_an_openai_error():
    try:
        client.responses.create(model=MODEL, input="hi", previous_response_id="resp_123")
    except openai.BadRequestError as e:
        eq(e.status_code, 400, "status")
        eq(e.code, "unsupported_parameter", "code")
    else:
        raise AssertionError("previous_response_id over an Anthropic provider was not refused")


run_all()
