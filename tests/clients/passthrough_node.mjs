// @anthropic-ai/sdk (the pinned package, on Node's built-in fetch) on the native Anthropic
// passthrough: a providers proxy (`--config`) whose `anthropic` provider serves claude-* from
// `mock_upstream --wire anthropic --record`, reached through tests/clients/tee.py, so each test
// checks that the SDK received exactly the bytes the mock sent. Messages streamed and not,
// count_tokens. Environment: see tests/clients/passthrough.py.

import { Record, check, env, eq, runAll, sameExchanges, sdk, test } from "./harness.mjs";

const Anthropic = sdk("@anthropic-ai/sdk");
const TEXT = env("ANTHROPIC_TEXT");
const KEY = env("ANTHROPIC_PROVIDER_KEY");
const MODEL = "claude-sonnet-4-5";
const CLIENT_KEY = "sk-ant-client-dummy";
const journal = new Record(env("ANTHROPIC_RECORD"));
const tee = new Record(env("TEE_RECORD"));
const client = new Anthropic({ baseURL: env("ANTHROPIC_BASE"), apiKey: CLIENT_KEY, maxRetries: 0, timeout: 30_000 });

function mark() {
  journal.mark();
  tee.mark();
}

const exchanges = (want) => sameExchanges(tee, journal, want, KEY, [CLIENT_KEY]);

/** The data of each event of a journaled stream. */
const eventsOf = (entry) =>
  entry.answer.split("\n").filter((l) => l.startsWith("data:")).map((l) => JSON.parse(l.slice(5)));

test("node_passthrough_messages_create", async () => {
  mark();
  const message = await client.messages.create({
    model: MODEL,
    max_tokens: 256,
    system: "Be brief.",
    messages: [{ role: "user", content: "Say hello" }],
  });
  eq(message.content.map((b) => b.type), ["text"], "content blocks");
  eq(message.content[0].text, TEXT, "text");
  const [entry] = await exchanges(1);
  eq(message.id, JSON.parse(entry.answer).id, "the message is the mock's");
});

test("node_passthrough_messages_stream", async () => {
  mark();
  const stream = client.messages.stream({ model: MODEL, max_tokens: 256, messages: [{ role: "user", content: "Say hello" }] });
  const pieces = [];
  stream.on("text", (text) => pieces.push(text));
  const final = await stream.finalMessage();
  check(pieces.length > 1, `expected several text deltas, got ${JSON.stringify(pieces)}`);
  eq(pieces.join(""), TEXT, "streamed text");
  eq(final.stop_reason, "end_turn", "stop_reason");
  const [entry] = await exchanges(1);
  eq(final.id, eventsOf(entry)[0].message.id, "the stream is the mock's");
});

test("node_passthrough_messages_create_stream_events", async () => {
  mark();
  const stream = await client.messages.create({ model: MODEL, max_tokens: 256, messages: [{ role: "user", content: "Say hello" }], stream: true });
  const types = [];
  for await (const event of stream) types.push(event.type);
  const [entry] = await exchanges(1);
  // The SDK yields every event but `ping` (a keep-alive it skips).
  const sent = eventsOf(entry).map((e) => e.type);
  check(sent.includes("ping"), `the mock sent no ping: ${JSON.stringify(sent)}`);
  eq(types, sent.filter((t) => t !== "ping"), "the events, as the mock sent them");
});

test("node_passthrough_count_tokens", async () => {
  mark();
  const counted = await client.messages.countTokens({ model: MODEL, messages: [{ role: "user", content: "Count me" }] });
  const [entry] = await exchanges(1);
  eq(entry.path, "/v1/messages/count_tokens", "path upstream");
  eq(counted.input_tokens, JSON.parse(entry.answer).input_tokens, "the upstream's exact count");
});

await runAll();
