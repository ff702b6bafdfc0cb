// @anthropic-ai/sdk (the pinned package, on Node's built-in fetch) through codex-proxy's
// POST /v1/messages (translated to Responses) and /v1/messages/count_tokens, streamed and not.
// Node's fetch sends `sec-fetch-mode: cors` on every request: the proxy must not take it for a
// browser.

import { GREETING, MODEL, WEATHER_SCHEMA, Record, check, contains, env, eq, headerValues, itemsOf, runAll, sdk, test, userTexts } from "./harness.mjs";

const Anthropic = sdk("@anthropic-ai/sdk");
const record = new Record(env("RECORD"));
const client = new Anthropic({ baseURL: env("ANTHROPIC_BASE"), apiKey: "sk-ant-client-dummy", maxRetries: 0, timeout: 30_000 });

const WEATHER = { name: "get_weather", description: "Current weather for a city", input_schema: WEATHER_SCHEMA };

function checkUsage(usage, what) {
  check(usage.input_tokens >= 0 && usage.output_tokens > 0, `${what}: ${JSON.stringify(usage)}`);
}

test("node_anthropic_messages_create", async () => {
  record.mark();
  const message = await client.messages.create({
    model: MODEL,
    max_tokens: 256,
    system: "Be brief.",
    messages: [{ role: "user", content: "Say hello" }],
  });
  eq(message.type, "message", "type");
  eq(message.role, "assistant", "role");
  eq(message.content.map((b) => b.type), ["text"], "content blocks");
  eq(message.content[0].text, GREETING + "Say hello", "text");
  eq(message.stop_reason, "end_turn", "stop_reason");
  checkUsage(message.usage, "usage");
  const request = await record.oneResponseRequest();
  eq(request.body.model, MODEL, "upstream model");
  eq(request.body.max_output_tokens, 256, "upstream max_output_tokens");
  eq(userTexts(request.body), ["Say hello"], "upstream user messages");
  eq(headerValues(request, "sec-fetch-mode"), ["cors"], "sec-fetch-mode Node sent (relayed upstream)");
  eq(headerValues(request, "x-api-key"), [], "client x-api-key forwarded");
});

test("node_anthropic_messages_stream", async () => {
  record.mark();
  const stream = client.messages.stream({ model: MODEL, max_tokens: 256, messages: [{ role: "user", content: "Say hello" }] });
  const pieces = [];
  stream.on("text", (text) => pieces.push(text));
  const final = await stream.finalMessage();
  check(pieces.length > 1, `expected several text deltas, got ${JSON.stringify(pieces)}`);
  eq(pieces.join(""), GREETING + "Say hello", "streamed text");
  eq(final.content.map((b) => b.type), ["text"], "final content blocks");
  eq(final.content[0].text, GREETING + "Say hello", "final text");
  eq(final.stop_reason, "end_turn", "stop_reason");
  checkUsage(final.usage, "final usage");
  const request = await record.oneResponseRequest();
  eq(request.body.stream, true, "upstream stream");
});

test("node_anthropic_messages_create_stream_events", async () => {
  const stream = await client.messages.create({ model: MODEL, max_tokens: 256, messages: [{ role: "user", content: "Say hello" }], stream: true });
  const types = [];
  for await (const event of stream) types.push(event.type);
  const deduped = types.filter((t, i) => i === 0 || types[i - 1] !== t);
  eq(
    deduped,
    ["message_start", "content_block_start", "content_block_delta", "content_block_stop", "message_delta", "message_stop"],
    "event order",
  );
});

test("node_anthropic_tool_use_round_trip", async () => {
  record.mark();
  const messages = [{ role: "user", content: "What is the weather in Paris? Use the get_weather tool." }];
  const first = await client.messages.create({ model: MODEL, max_tokens: 256, messages, tools: [WEATHER] });
  eq(first.stop_reason, "tool_use", "stop_reason");
  const uses = first.content.filter((b) => b.type === "tool_use");
  eq(uses.map((u) => u.name), ["get_weather"], "tool uses");
  check(typeof uses[0].input.location === "string", `input ${JSON.stringify(uses[0].input)}`);
  messages.push({ role: "assistant", content: first.content });
  messages.push({ role: "user", content: [{ type: "tool_result", tool_use_id: uses[0].id, content: "18 C and sunny" }] });
  const second = await client.messages.create({ model: MODEL, max_tokens: 256, messages, tools: [WEATHER] });
  contains(second.content.find((b) => b.type === "text")?.text, "18 C and sunny", "answer after the tool");
  const bodies = (await record.sinceMark(2)).map((r) => r.body);
  const outputs = itemsOf(bodies[bodies.length - 1], "function_call_output");
  eq(outputs.map((o) => o.call_id), [uses[0].id], "function_call_output sent upstream");
});

test("node_anthropic_count_tokens", async () => {
  record.mark();
  const counted = await client.messages.countTokens({ model: MODEL, messages: [{ role: "user", content: "Say hello" }] });
  check(Number.isInteger(counted.input_tokens) && counted.input_tokens > 0, `count ${JSON.stringify(counted)}`);
  eq(await record.sinceMark(), [], "count_tokens is answered locally (upstream requests)");
});

await runAll();
