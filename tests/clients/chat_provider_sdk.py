"""The OpenAI and Anthropic Python SDKs over a keyless `chat` provider (a Chat Completions
server: examples/mock_upstream --wire chat --style vllm --tools), through codex-proxy:
Chat Completions by passthrough, Responses and Anthropic Messages through the Responses hub,
streamed and not, with tool round trips.

The mock says CHAT_TEXT after the reasoning "Thinking it over." (in `reasoning_content`);
given tools and a prompt naming one it calls that tool with its required fields filled
(`{"location": "mock"}` here); after a tool result it answers "The tool returned: <result>".
It refuses any Authorization header, so every answer also shows that none reached it.

Environment: OPENAI_BASE (the proxy's /v1 base), ANTHROPIC_BASE (the proxy, no /v1),
CHAT_TEXT, CHAT_MODEL (a model the config routes to the chat provider).
"""

import json

import anthropic
import openai

from harness import WEATHER_SCHEMA, check, env, eq, run_all, test

client = openai.OpenAI(base_url=env("OPENAI_BASE"), api_key="sk-client-dummy", max_retries=0, timeout=30)
claude = anthropic.Anthropic(base_url=env("ANTHROPIC_BASE"), api_key="sk-ant-client-dummy", max_retries=0, timeout=30)
TEXT = env("CHAT_TEXT")
MODEL = env("CHAT_MODEL")
REASONING = "Thinking it over."
ASK_WEATHER = "What is the weather in Paris? Use the get_weather tool."
RESULT = "sunny, 21 degrees"
CHAT_WEATHER = {
    "type": "function",
    "function": {"name": "get_weather", "description": "Current weather for a city", "parameters": WEATHER_SCHEMA},
}


@test
def test_chat_provider_chat_nonstream():
    completion = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Say hello"}])
    eq(completion.object, "chat.completion", "object")
    message = completion.choices[0].message
    eq(message.content, TEXT, "content")
    eq((message.model_extra or {}).get("reasoning_content"), REASONING, "reasoning_content (passed through)")
    eq(completion.choices[0].finish_reason, "stop", "finish_reason")
    check(completion.usage.prompt_tokens > 0, f"usage {completion.usage}")


@test
def test_chat_provider_chat_stream_without_usage():
    chunks = list(client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Say hello"}], stream=True))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    eq(text, TEXT, "streamed content")
    reasoning = "".join((c.choices[0].delta.model_extra or {}).get("reasoning_content") or "" for c in chunks if c.choices)
    eq(reasoning, REASONING, "streamed reasoning_content")
    eq([c for c in chunks if c.usage], [], "usage chunks the client did not ask for")
    eq([c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason], ["stop"], "finish")


@test
def test_chat_provider_chat_stream_with_usage():
    chunks = list(
        client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "Say hello"}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    usage = [c.usage for c in chunks if c.usage]
    eq(len(usage), 1, "usage chunks")
    check(usage[0].prompt_tokens > 0 and usage[0].completion_tokens > 0, f"usage {usage[0]}")


@test
def test_chat_provider_chat_tool_round_trip_stream():
    messages = [{"role": "user", "content": ASK_WEATHER}]
    chunks = list(client.chat.completions.create(model=MODEL, messages=messages, tools=[CHAT_WEATHER], stream=True))
    calls = {}
    for chunk in chunks:
        for call in (chunk.choices[0].delta.tool_calls or []) if chunk.choices else []:
            entry = calls.setdefault(call.index, {"id": None, "name": None, "arguments": ""})
            entry["id"] = call.id or entry["id"]
            entry["name"] = (call.function.name if call.function else None) or entry["name"]
            entry["arguments"] += (call.function.arguments if call.function else None) or ""
    eq(len(calls), 1, "tool calls")
    call = calls[0]
    eq(call["name"], "get_weather", "tool name")
    eq(json.loads(call["arguments"]), {"location": "mock"}, "tool arguments")
    messages.append(
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [{"id": call["id"], "type": "function", "function": {"name": call["name"], "arguments": call["arguments"]}}],
        }
    )
    messages.append({"role": "tool", "tool_call_id": call["id"], "content": RESULT})
    completion = client.chat.completions.create(model=MODEL, messages=messages, tools=[CHAT_WEATHER])
    eq(completion.choices[0].message.content, "The tool returned: " + RESULT, "answer after the tool result")


@test
def test_chat_provider_responses_stream_through_the_hub():
    with client.responses.stream(model=MODEL, input="Say hello") as stream:
        text = "".join(e.delta for e in stream if e.type == "response.output_text.delta")
        final = stream.get_final_response()
    eq(text, TEXT, "streamed output_text")
    eq(final.output_text, TEXT, "final output_text")
    eq(final.status, "completed", "status")
    check(final.usage.input_tokens > 0, f"usage {final.usage}")


@test
def test_chat_provider_responses_nonstream_through_the_hub():
    response = client.responses.create(model=MODEL, input="Say hello")
    eq(response.output_text, TEXT, "output_text")
    eq(response.model, MODEL, "model")


@test
def test_chat_provider_anthropic_tool_use_through_the_hub():
    tools = [{"name": "get_weather", "description": "Current weather for a city", "input_schema": WEATHER_SCHEMA}]
    messages = [{"role": "user", "content": ASK_WEATHER}]
    message = claude.messages.create(model=MODEL, max_tokens=256, tools=tools, messages=messages)
    eq(message.stop_reason, "tool_use", "stop_reason")
    uses = [b for b in message.content if b.type == "tool_use"]
    eq(len(uses), 1, "tool_use blocks")
    eq(uses[0].name, "get_weather", "tool name")
    eq(uses[0].input, {"location": "mock"}, "tool input")
    messages.append({"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in message.content]})
    messages.append({"role": "user", "content": [{"type": "tool_result", "tool_use_id": uses[0].id, "content": RESULT}]})
    with claude.messages.stream(model=MODEL, max_tokens=256, tools=tools, messages=messages) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    eq(text, "The tool returned: " + RESULT, "streamed answer after the tool result")
    eq(final.stop_reason, "end_turn", "stop_reason")


if __name__ == "__main__":
    run_all()
