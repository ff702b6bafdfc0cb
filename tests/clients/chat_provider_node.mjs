// openai-node over a keyless `chat` provider (examples/mock_upstream --wire chat --style vllm
// --tools; see tests/clients/chat_provider_sdk.py for what it says): Chat Completions by
// passthrough, streamed and not, with a tool round trip; Responses through the hub.
//
// Environment: NODE_SDKS, OPENAI_BASE (the proxy's /v1 base), CHAT_TEXT, CHAT_MODEL.

import { WEATHER_SCHEMA, check, env, eq, runAll, sdk, test } from "./harness.mjs";

const OpenAI = sdk("openai");
const client = new OpenAI({ baseURL: env("OPENAI_BASE"), apiKey: "sk-client-dummy", maxRetries: 0, timeout: 30_000 });
const TEXT = env("CHAT_TEXT");
const MODEL = env("CHAT_MODEL");
const RESULT = "sunny, 21 degrees";
const CHAT_WEATHER = {
  type: "function",
  function: { name: "get_weather", description: "Current weather for a city", parameters: WEATHER_SCHEMA },
};

test("node_chat_provider_chat_nonstream", async () => {
  const completion = await client.chat.completions.create({ model: MODEL, messages: [{ role: "user", content: "Say hello" }] });
  eq(completion.choices[0].message.content, TEXT, "content");
  eq(completion.choices[0].message.reasoning_content, "Thinking it over.", "reasoning_content");
  eq(completion.choices[0].finish_reason, "stop", "finish_reason");
});

test("node_chat_provider_chat_stream", async () => {
  const stream = await client.chat.completions.create({
    model: MODEL,
    messages: [{ role: "user", content: "Say hello" }],
    stream: true,
    stream_options: { include_usage: true },
  });
  const chunks = [];
  for await (const chunk of stream) chunks.push(chunk);
  const text = chunks.map((c) => (c.choices[0] && c.choices[0].delta.content) || "").join("");
  eq(text, TEXT, "streamed content");
  eq(chunks.filter((c) => c.usage).length, 1, "usage chunks");
});

test("node_chat_provider_chat_tool_round_trip", async () => {
  const messages = [{ role: "user", content: "What is the weather in Paris? Use the get_weather tool." }];
  const first = await client.chat.completions.create({ model: MODEL, messages, tools: [CHAT_WEATHER] });
  eq(first.choices[0].finish_reason, "tool_calls", "finish_reason");
  const call = first.choices[0].message.tool_calls[0];
  eq(call.function.name, "get_weather", "tool name");
  eq(JSON.parse(call.function.arguments), { location: "mock" }, "tool arguments");
  messages.push({ role: "assistant", content: null, tool_calls: [call] });
  messages.push({ role: "tool", tool_call_id: call.id, content: RESULT });
  const stream = await client.chat.completions.create({ model: MODEL, messages, tools: [CHAT_WEATHER], stream: true });
  let text = "";
  for await (const chunk of stream) text += (chunk.choices[0] && chunk.choices[0].delta.content) || "";
  eq(text, "The tool returned: " + RESULT, "answer after the tool result");
});

test("node_chat_provider_responses_through_the_hub", async () => {
  const response = await client.responses.create({ model: MODEL, input: "Say hello" });
  eq(response.output_text, TEXT, "output_text");
  const stream = await client.responses.create({ model: MODEL, input: "Say hello", stream: true });
  let text = "";
  let completed = false;
  for await (const event of stream) {
    if (event.type === "response.output_text.delta") text += event.delta;
    if (event.type === "response.completed") completed = true;
  }
  eq(text, TEXT, "streamed output_text");
  check(completed, "no response.completed");
});

await runAll();
