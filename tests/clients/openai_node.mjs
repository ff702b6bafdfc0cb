// openai-node (the pinned `openai` package, on Node's built-in fetch) through codex-proxy: Chat
// Completions (translated) and Responses (passed through), each streamed and not, checking what
// the SDK gets back and, from the scenario upstream's record, what the proxy sent upstream.
// Node's fetch sends `sec-fetch-mode: cors` on every request: the proxy must not take it for a
// browser.

import { GREETING, MODEL, WEATHER_SCHEMA, Record, check, contains, env, eq, headerValues, itemsOf, runAll, sdk, test, userTexts } from "./harness.mjs";

const OpenAI = sdk("openai");
const record = new Record(env("RECORD"));
const client = new OpenAI({ baseURL: env("OPENAI_BASE"), apiKey: "sk-client-dummy", maxRetries: 0, timeout: 30_000 });

const WEATHER = {
  type: "function",
  function: { name: "get_weather", description: "Current weather for a city", parameters: WEATHER_SCHEMA },
};

test("node_openai_chat_nonstream", async () => {
  record.mark();
  const completion = await client.chat.completions.create({
    model: MODEL,
    max_tokens: 200,
    messages: [
      { role: "system", content: "Be brief." },
      { role: "user", content: "Say hello" },
    ],
  });
  eq(completion.object, "chat.completion", "object");
  eq(completion.choices.length, 1, "choices");
  const choice = completion.choices[0];
  eq(choice.message.role, "assistant", "role");
  eq(choice.message.content, GREETING + "Say hello", "content");
  eq(choice.finish_reason, "stop", "finish_reason");
  const usage = completion.usage;
  check(usage.prompt_tokens > 0 && usage.completion_tokens > 0, `usage ${JSON.stringify(usage)}`);
  const request = await record.oneResponseRequest();
  eq(request.body.model, MODEL, "upstream model");
  eq(request.body.max_output_tokens, 200, "upstream max_output_tokens");
  eq(userTexts(request.body), ["Say hello"], "upstream user messages");
  check(!("messages" in request.body), "upstream body still has Chat `messages`");
  // Proof that this client is the one the browser rule must let through.
  eq(headerValues(request, "sec-fetch-mode"), ["cors"], "sec-fetch-mode Node sent (relayed upstream)");
  eq(headerValues(request, "authorization"), ["Bearer sk-e2e-fake-key-not-real"], "upstream authorization");
});

test("node_openai_chat_stream", async () => {
  record.mark();
  const stream = await client.chat.completions.create({
    model: MODEL,
    messages: [{ role: "user", content: "Say hello" }],
    stream: true,
    stream_options: { include_usage: true },
  });
  const chunks = [];
  for await (const chunk of stream) chunks.push(chunk);
  check(chunks.length > 2, `expected several chunks, got ${chunks.length}`);
  eq(chunks[0].choices[0].delta.role, "assistant", "first delta role");
  const text = chunks.map((c) => (c.choices.length ? c.choices[0].delta.content || "" : "")).join("");
  eq(text, GREETING + "Say hello", "streamed content");
  const finishes = chunks.filter((c) => c.choices.length && c.choices[0].finish_reason).map((c) => c.choices[0].finish_reason);
  eq(finishes, ["stop"], "finish reasons");
  const last = chunks[chunks.length - 1];
  eq(last.choices, [], "the usage chunk has no choices");
  check(last.usage && last.usage.prompt_tokens > 0, `usage ${JSON.stringify(last.usage)}`);
  eq(new Set(chunks.map((c) => c.id)).size, 1, "one completion id across chunks");
  const request = await record.oneResponseRequest();
  eq(request.body.stream, true, "upstream stream");
});

test("node_openai_chat_tool_round_trip", async () => {
  record.mark();
  const messages = [{ role: "user", content: "What is the weather in Paris? Use the get_weather tool." }];
  const first = await client.chat.completions.create({ model: MODEL, messages, tools: [WEATHER] });
  eq(first.choices[0].finish_reason, "tool_calls", "finish_reason");
  const calls = first.choices[0].message.tool_calls || [];
  eq(calls.map((c) => c.function.name), ["get_weather"], "tool calls");
  eq(JSON.parse(calls[0].function.arguments).location.length > 0, true, "arguments have a location");
  messages.push(first.choices[0].message);
  messages.push({ role: "tool", tool_call_id: calls[0].id, content: "18 C and sunny" });
  const second = await client.chat.completions.create({ model: MODEL, messages, tools: [WEATHER] });
  contains(second.choices[0].message.content, "18 C and sunny", "answer after the tool");
  const bodies = (await record.sinceMark(2)).map((r) => r.body);
  const outputs = itemsOf(bodies[bodies.length - 1], "function_call_output");
  eq(outputs.map((o) => o.call_id), [calls[0].id], "function_call_output sent upstream");
});

test("node_openai_responses_create", async () => {
  record.mark();
  const response = await client.responses.create({ model: MODEL, input: [{ role: "user", content: "Say hello" }] });
  eq(response.output_text, GREETING + "Say hello", "output_text");
  eq(response.status, "completed", "status");
  eq(response.usage.total_tokens, response.usage.input_tokens + response.usage.output_tokens, "total tokens");
  const request = await record.oneResponseRequest();
  check(!request.body.stream, `upstream stream should be off, got ${request.body.stream}`);
  eq(headerValues(request, "sec-fetch-mode"), ["cors"], "sec-fetch-mode Node sent (relayed upstream)");
});

test("node_openai_responses_stream", async () => {
  record.mark();
  const stream = client.responses.stream({ model: MODEL, input: "Say hello", instructions: "Be brief." });
  const deltas = [];
  for await (const event of stream) {
    if (event.type === "response.output_text.delta") deltas.push(event.delta);
  }
  const final = await stream.finalResponse();
  eq(final.output_text, GREETING + "Say hello", "output_text");
  eq(deltas.join(""), final.output_text, "joined deltas");
  check(deltas.length > 1, `expected several deltas, got ${deltas.length}`);
  eq(final.status, "completed", "status");
  const request = await record.oneResponseRequest();
  eq(request.body.stream, true, "upstream stream");
  eq(request.body.model, MODEL, "upstream model");
});

test("node_openai_responses_create_stream_events", async () => {
  const stream = await client.responses.create({ model: MODEL, input: "Say hello", stream: true });
  const types = [];
  for await (const event of stream) types.push(event.type);
  const deduped = types.filter((t, i) => i === 0 || types[i - 1] !== t);
  eq(
    deduped,
    [
      "response.created",
      "response.in_progress",
      "response.output_item.added",
      "response.content_part.added",
      "response.output_text.delta",
      "response.output_text.done",
      "response.content_part.done",
      "response.output_item.done",
      "response.completed",
    ],
    "event order",
  );
});

test("node_openai_models_list", async () => {
  const ids = [];
  for await (const model of client.models.list()) ids.push(model.id);
  check(ids.length > 0, "no models listed");
});

await runAll();
