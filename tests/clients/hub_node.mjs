// openai-node over an Anthropic provider, through codex-proxy's Responses hub: Chat Completions
// and Responses, streamed and not, each with a tool round trip, answered by the offline
// Anthropic Messages mock (examples/mock_upstream --wire anthropic; see tests/clients/hub_sdk.py
// for what it says).
//
// Environment: NODE_SDKS, OPENAI_BASE (the proxy's /v1 base), HUB_TEXT, HUB_MODEL.

import { WEATHER_SCHEMA, check, env, eq, runAll, sdk, test } from "./harness.mjs";

const OpenAI = sdk("openai");
const client = new OpenAI({ baseURL: env("OPENAI_BASE"), apiKey: "sk-client-dummy", maxRetries: 0, timeout: 30_000 });
const TEXT = env("HUB_TEXT");
const MODEL = env("HUB_MODEL");
const ASK_WEATHER = "What is the weather in Paris? Use the get_weather tool.";
const RESULT = "sunny, 21 degrees";

const CHAT_WEATHER = {
  type: "function",
  function: { name: "get_weather", description: "Current weather for a city", parameters: WEATHER_SCHEMA },
};
const RESPONSES_WEATHER = {
  type: "function",
  name: "get_weather",
  description: "Current weather for a city",
  parameters: WEATHER_SCHEMA,
};

test("node_hub_chat_nonstream", async () => {
  const completion = await client.chat.completions.create({
    model: MODEL,
    messages: [
      { role: "system", content: "Be brief." },
      { role: "user", content: "Say hello" },
    ],
  });
  eq(completion.model, MODEL, "model");
  eq(completion.choices[0].message.content, TEXT, "content");
  eq(completion.choices[0].finish_reason, "stop", "finish_reason");
  check(completion.usage.prompt_tokens > 0 && completion.usage.completion_tokens > 0, `usage ${JSON.stringify(completion.usage)}`);
});

test("node_hub_chat_stream", async () => {
  const stream = await client.chat.completions.create({
    model: MODEL,
    messages: [{ role: "user", content: "Say hello" }],
    stream: true,
    stream_options: { include_usage: true },
  });
  const chunks = [];
  for await (const chunk of stream) chunks.push(chunk);
  const text = chunks.map((c) => (c.choices.length ? c.choices[0].delta.content || "" : "")).join("");
  eq(text, TEXT, "streamed content");
  const finishes = chunks.filter((c) => c.choices.length && c.choices[0].finish_reason).map((c) => c.choices[0].finish_reason);
  eq(finishes, ["stop"], "finish reasons");
  const last = chunks[chunks.length - 1];
  check(last.usage && last.usage.prompt_tokens > 0, `usage ${JSON.stringify(last.usage)}`);
});

async function chatToolRoundTrip(stream) {
  const messages = [{ role: "user", content: ASK_WEATHER }];
  let call;
  let finish;
  if (stream) {
    const calls = new Map();
    for await (const chunk of await client.chat.completions.create({ model: MODEL, messages, tools: [CHAT_WEATHER], stream: true })) {
      if (!chunk.choices.length) continue;
      finish = chunk.choices[0].finish_reason || finish;
      for (const delta of chunk.choices[0].delta.tool_calls || []) {
        const entry = calls.get(delta.index) || { id: null, name: null, arguments: "" };
        entry.id = delta.id || entry.id;
        entry.name = (delta.function && delta.function.name) || entry.name;
        entry.arguments += (delta.function && delta.function.arguments) || "";
        calls.set(delta.index, entry);
      }
    }
    eq(calls.size, 1, "streamed tool calls");
    call = calls.get(0);
  } else {
    const completion = await client.chat.completions.create({ model: MODEL, messages, tools: [CHAT_WEATHER] });
    finish = completion.choices[0].finish_reason;
    const c = completion.choices[0].message.tool_calls[0];
    call = { id: c.id, name: c.function.name, arguments: c.function.arguments };
  }
  eq(finish, "tool_calls", "finish_reason");
  eq(call.name, "get_weather", "tool name");
  eq(JSON.parse(call.arguments), { location: "mock" }, "tool arguments");
  messages.push({ role: "assistant", content: null, tool_calls: [{ id: call.id, type: "function", function: { name: call.name, arguments: call.arguments } }] });
  messages.push({ role: "tool", tool_call_id: call.id, content: RESULT });
  let text = "";
  if (stream) {
    for await (const chunk of await client.chat.completions.create({ model: MODEL, messages, tools: [CHAT_WEATHER], stream: true })) {
      if (chunk.choices.length) text += chunk.choices[0].delta.content || "";
    }
  } else {
    text = (await client.chat.completions.create({ model: MODEL, messages, tools: [CHAT_WEATHER] })).choices[0].message.content;
  }
  eq(text, `The tool returned: ${RESULT}`, "answer after the tool result");
}

test("node_hub_chat_tool_round_trip_nonstream", () => chatToolRoundTrip(false));
test("node_hub_chat_tool_round_trip_stream", () => chatToolRoundTrip(true));

test("node_hub_responses_create", async () => {
  const response = await client.responses.create({ model: MODEL, input: [{ role: "user", content: "Say hello" }] });
  eq(response.model, MODEL, "model");
  eq(response.output_text, TEXT, "output_text");
  eq(response.status, "completed", "status");
  eq(response.usage.total_tokens, response.usage.input_tokens + response.usage.output_tokens, "total tokens");
});

test("node_hub_responses_stream", async () => {
  const stream = client.responses.stream({ model: MODEL, input: "Say hello", instructions: "Be brief." });
  const deltas = [];
  for await (const event of stream) {
    if (event.type === "response.output_text.delta") deltas.push(event.delta);
  }
  const final = await stream.finalResponse();
  eq(final.output_text, TEXT, "output_text");
  eq(deltas.join(""), TEXT, "joined deltas");
  check(deltas.length > 1, `expected several deltas, got ${deltas.length}`);
});

async function responsesToolRoundTrip(stream) {
  const input = [{ role: "user", content: ASK_WEATHER }];
  const call = async () => {
    if (!stream) return client.responses.create({ model: MODEL, input, tools: [RESPONSES_WEATHER] });
    const s = client.responses.stream({ model: MODEL, input, tools: [RESPONSES_WEATHER] });
    for await (const _ of s);
    return s.finalResponse();
  };
  const first = await call();
  const calls = first.output.filter((item) => item.type === "function_call");
  eq(calls.map((c) => c.name), ["get_weather"], "function calls");
  eq(JSON.parse(calls[0].arguments), { location: "mock" }, "tool arguments");
  input.push(...first.output);
  input.push({ type: "function_call_output", call_id: calls[0].call_id, output: RESULT });
  const second = await call();
  eq(second.output_text, `The tool returned: ${RESULT}`, "answer after the tool result");
}

test("node_hub_responses_tool_round_trip_nonstream", () => responsesToolRoundTrip(false));
test("node_hub_responses_tool_round_trip_stream", () => responsesToolRoundTrip(true));

await runAll();
