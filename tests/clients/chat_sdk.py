"""The OpenAI Python SDK's Chat Completions client through codex-proxy (POST /v1/chat/completions,
translated to the Responses API), checking both what the SDK gets back and, from the scenario
upstream's record, what the proxy sent upstream."""

import json

import openai

from harness import (
    GREETING,
    MODEL,
    SUMMARY,
    TIME_SCHEMA,
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
client = openai.OpenAI(base_url=env("OPENAI_BASE"), api_key="sk-client-dummy", max_retries=0, timeout=30)

WEATHER = {
    "type": "function",
    "function": {"name": "get_weather", "description": "Current weather for a city", "parameters": WEATHER_SCHEMA},
}
TIME = {
    "type": "function",
    "function": {"name": "get_time", "description": "Current time in a timezone", "parameters": TIME_SCHEMA},
}
ASK_WEATHER = "What is the weather in Paris? Use the get_weather tool."


@test
def test_chat_nonstream():
    record.mark()
    completion = client.chat.completions.create(
        model=MODEL,
        max_tokens=200,
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hello"}],
    )
    eq(completion.object, "chat.completion", "object")
    eq(len(completion.choices), 1, "choices")
    choice = completion.choices[0]
    eq(choice.message.role, "assistant", "role")
    eq(choice.message.content, GREETING + "Say hello", "content")
    eq(choice.finish_reason, "stop", "finish_reason")
    usage = completion.usage
    check(usage.prompt_tokens > 0 and usage.completion_tokens > 0, f"usage {usage}")
    eq(usage.total_tokens, usage.prompt_tokens + usage.completion_tokens, "total_tokens")
    eq(usage.prompt_tokens_details.cached_tokens, usage.prompt_tokens // 4, "cached_tokens (upstream: input/4)")
    body = record.one_response_request()
    eq(body.get("model"), MODEL, "upstream model")
    eq(body.get("max_output_tokens"), 200, "upstream max_output_tokens")
    eq(user_texts(body), ["Say hello"], "upstream user messages")
    instructions = body.get("instructions") or ""
    system = [m for m in items_of(body, "message") if m.get("role") in ("developer", "system")]
    check("Be brief." in instructions or len(system) == 1, f"system prompt not sent upstream: {body}")
    check("messages" not in body, "upstream body still has Chat `messages`")


@test
def test_chat_stream():
    record.mark()
    stream = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Say hello"}], stream=True
    )
    chunks = list(stream)
    check(len(chunks) > 2, f"expected several chunks, got {len(chunks)}")
    eq(chunks[0].choices[0].delta.role, "assistant", "first delta role")
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    eq(text, GREETING + "Say hello", "streamed content")
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    eq(finishes, ["stop"], "finish reasons")
    check(all(c.usage is None for c in chunks), "usage sent without stream_options.include_usage")
    eq(len({c.id for c in chunks}), 1, "one completion id across chunks")
    body = record.one_response_request()
    eq(body.get("stream"), True, "upstream stream")


@test
def test_chat_stream_include_usage():
    stream = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Say hello"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    last = chunks[-1]
    eq(last.choices, [], "the usage chunk has no choices")
    check(last.usage is not None, "no usage on the last chunk")
    check(last.usage.prompt_tokens > 0, f"prompt_tokens {last.usage}")
    eq(last.usage.completion_tokens, len(words(GREETING + "Say hello")), "completion_tokens (one per delta)")
    eq(last.usage.prompt_tokens_details.cached_tokens, last.usage.prompt_tokens // 4, "cached_tokens")
    check(all(c.usage is None for c in chunks[:-1]), "usage before the last chunk")
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    eq(text, GREETING + "Say hello", "streamed content")


def words(text):
    return text.split()


@test
def test_chat_tool_round_trip():
    record.mark()
    messages = [{"role": "user", "content": ASK_WEATHER}]
    first = client.chat.completions.create(model=MODEL, messages=messages, tools=[WEATHER])
    choice = first.choices[0]
    eq(choice.finish_reason, "tool_calls", "finish_reason")
    calls = choice.message.tool_calls or []
    eq(len(calls), 1, "tool calls")
    eq(calls[0].type, "function", "tool call type")
    eq(calls[0].function.name, "get_weather", "tool name")
    eq(json.loads(calls[0].function.arguments), {"location": "Paris"}, "arguments")
    messages.append(choice.message.model_dump(exclude_none=True))
    messages.append({"role": "tool", "tool_call_id": calls[0].id, "content": "22 C and sunny"})
    second = client.chat.completions.create(model=MODEL, messages=messages, tools=[WEATHER])
    eq(second.choices[0].message.content, TOOL_RESULT + "22 C and sunny", "answer after the tool")
    eq(second.choices[0].finish_reason, "stop", "finish_reason")
    bodies = record.responses_since_mark(wait_for=2)
    eq(len(bodies), 2, "upstream requests")
    eq(function_tool_names(bodies[0]), ["get_weather"], "upstream tools")
    tool = bodies[0]["tools"][0]
    eq(tool.get("parameters", {}).get("required"), ["location"], "upstream tool schema")
    call_items = items_of(bodies[1], "function_call")
    output_items = items_of(bodies[1], "function_call_output")
    eq([c["call_id"] for c in call_items], [calls[0].id], "upstream function_call call_id")
    eq([o["call_id"] for o in output_items], [calls[0].id], "upstream function_call_output call_id")
    contains(json.dumps(output_items[0]["output"]), "22 C and sunny", "upstream tool output")


@test
def test_chat_stream_tool_call():
    stream = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": ASK_WEATHER}], tools=[WEATHER], stream=True
    )
    calls = {}
    finish = None
    for chunk in stream:
        if not chunk.choices:
            continue
        delta = chunk.choices[0].delta
        for tc in delta.tool_calls or []:
            call = calls.setdefault(tc.index, {"id": None, "name": None, "arguments": ""})
            if tc.id:
                check(call["id"] is None, f"tool call id sent twice for index {tc.index}")
                call["id"] = tc.id
            if tc.function and tc.function.name:
                check(call["name"] is None, f"tool name sent twice for index {tc.index}")
                call["name"] = tc.function.name
            if tc.function and tc.function.arguments:
                call["arguments"] += tc.function.arguments
        finish = chunk.choices[0].finish_reason or finish
    eq(sorted(calls), [0], "tool call indices")
    eq(calls[0]["name"], "get_weather", "name")
    check(calls[0]["id"], "no tool call id")
    eq(json.loads(calls[0]["arguments"]), {"location": "Paris"}, "arguments")
    eq(finish, "tool_calls", "finish_reason")


@test
def test_chat_stream_parallel_tool_calls():
    record.mark()
    stream = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Use get_weather and get_time for Paris."}],
        tools=[WEATHER, TIME],
        stream=True,
    )
    calls = {}
    for chunk in stream:
        for tc in (chunk.choices[0].delta.tool_calls or []) if chunk.choices else []:
            call = calls.setdefault(tc.index, {"name": None, "arguments": ""})
            if tc.function and tc.function.name:
                call["name"] = tc.function.name
            if tc.function and tc.function.arguments:
                call["arguments"] += tc.function.arguments
    eq(sorted(calls), [0, 1], "dense tool call indices")
    eq([calls[0]["name"], calls[1]["name"]], ["get_weather", "get_time"], "names")
    eq(json.loads(calls[1]["arguments"]), {"timezone": "scenario-timezone"}, "second call's arguments")
    body = record.one_response_request()
    check(body.get("parallel_tool_calls") is not False, "parallel_tool_calls turned off upstream")


@test
def test_chat_reasoning_content():
    record.mark()
    completion = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Say hello"}], reasoning_effort="high"
    )
    message = completion.choices[0].message
    eq(message.content, GREETING + "Say hello", "content")
    eq((message.model_extra or {}).get("reasoning_content"), SUMMARY, "reasoning_content")
    details = completion.usage.completion_tokens_details
    check(details is not None and details.reasoning_tokens > 0, f"reasoning_tokens {completion.usage}")
    body = record.one_response_request()
    eq((body.get("reasoning") or {}).get("effort"), "high", "upstream reasoning.effort")


@test
def test_chat_length_finish_reason():
    completion = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Write a long answer"}], max_tokens=16
    )
    eq(completion.choices[0].finish_reason, "length", "finish_reason")
    eq(len(completion.choices[0].message.content.split()), 16, "words (one per upstream token)")


if __name__ == "__main__":
    run_all()
