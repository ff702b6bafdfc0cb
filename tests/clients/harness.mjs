// Shared by the Node.js real-client tests in tests/clients/*.mjs (run by scripts/e2e-clients
// with Node 20, no test framework), the Node twin of harness.py.
//
// Each test is registered with test(fn); runAll() runs them in order and prints
// `test NAME ... ok (T s)` or `test NAME ... FAILED: reason`, then exits with the number of
// failures.
//
// Environment (set by scripts/e2e-clients):
//   NODE_SDKS       the directory scripts/install-clients node installed the SDKs into
//   OPENAI_BASE     base URL for openai-node, e.g. http://127.0.0.1:PORT/v1
//   ANTHROPIC_BASE  base URL for @anthropic-ai/sdk, e.g. http://127.0.0.1:PORT (no /v1)
//   RECORD          the scenario upstream's --record file: what reached the upstream
//   TEST_FILTER     run only tests whose name contains this

import { readFileSync, statSync, existsSync } from "node:fs";
import { createRequire } from "node:module";
import { join, resolve } from "node:path";

// What the scenario upstream (examples/scenario_upstream.rs) says; keep in step with it.
export const GREETING = "Hello from the scenario upstream. You said: ";
export const TOOL_RESULT = "The tool returned: ";
export const MODEL = "gpt-5.4";

export const WEATHER_SCHEMA = {
  type: "object",
  properties: {
    location: { type: "string", description: "City name" },
    unit: { type: "string", enum: ["celsius", "fahrenheit"] },
  },
  required: ["location"],
};

export function env(name) {
  const value = process.env[name];
  if (value === undefined) {
    console.error(`${process.argv[1]}: environment variable ${name} is required`);
    process.exit(1);
  }
  return value;
}

/** Loads a package from the pinned install in NODE_SDKS (not from this repository). */
export function sdk(name) {
  return createRequire(join(resolve(env("NODE_SDKS")), "package.json"))(name);
}

export class Failure extends Error {}

export function check(condition, message) {
  if (!condition) throw new Failure(message);
}

export function eq(actual, expected, what) {
  const a = JSON.stringify(actual);
  const e = JSON.stringify(expected);
  if (a !== e) throw new Failure(`${what}: expected ${e}, got ${a}`);
}

export function contains(haystack, needle, what) {
  if (typeof haystack !== "string" || !haystack.includes(needle)) {
    throw new Failure(`${what}: expected to contain ${JSON.stringify(needle)}, got ${JSON.stringify(haystack)}`);
  }
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** The scenario upstream's --record file, read from a mark on. */
export class Record {
  constructor(path) {
    this.path = path;
    this.offset = 0;
  }

  mark() {
    this.offset = existsSync(this.path) ? statSync(this.path).size : 0;
  }

  /** Requests recorded since mark(); waits (up to 5 s) until at least `waitFor` are there. */
  async sinceMark(waitFor = 0) {
    const deadline = Date.now() + 5000;
    for (;;) {
      const text = readFileSync(this.path).subarray(this.offset).toString("utf8");
      const lines = text.split("\n").filter((l) => l.trim()).map((l) => JSON.parse(l));
      if (lines.length >= waitFor || Date.now() > deadline) return lines;
      await sleep(50);
    }
  }

  /** The one POST /v1/responses request since mark(). */
  async oneResponseRequest() {
    const requests = (await this.sinceMark(1)).filter(
      (r) => r.method === "POST" && ["/v1/responses", "/responses"].includes(r.path.split("?")[0]),
    );
    eq(requests.length, 1, "upstream requests for this call");
    return requests[0];
  }
}

/** The input items of a Responses request body of this type (messages may lack one). */
export function itemsOf(body, kind) {
  let items = body.input;
  if (typeof items === "string") items = [{ type: "message", role: "user", content: items }];
  return (items || []).filter((item) => (item.type || (item.role ? "message" : undefined)) === kind);
}

export function userTexts(body) {
  return itemsOf(body, "message")
    .filter((m) => m.role === "user")
    .map((m) => (typeof m.content === "string" ? m.content : (m.content || []).map((p) => p.text || "").join("")));
}

/** A recorded request's header values by lower-cased name. */
export function headerValues(request, name) {
  return request.headers.filter(([k]) => k.toLowerCase() === name).map(([, v]) => v);
}

/**
 * The passthrough check (harness.py's same_exchanges, for Node): every POST /v1/messages… the
 * client made, as tests/clients/tee.py saw it, pairs in order with a request the Anthropic mock
 * journaled since the marks, at least `want` of them; the client received exactly the status
 * and bytes the mock sent; the body arrived byte for byte; the mock got `key` as the only x-api-key,
 * no Authorization and none of `clientKeys`. The mock's journal entries.
 */
export async function sameExchanges(tee, journal, want, key, clientKeys) {
  const mocked = await journal.sinceMark(want);
  const seen = (await tee.sinceMark(mocked.length)).filter((e) => e.path.startsWith("/v1/messages"));
  check(mocked.length >= want, `the mock answered ${mocked.length} requests, expected at least ${want}`);
  eq(seen.length, mocked.length, "messages exchanges the client made vs requests the mock answered");
  seen.forEach((client, i) => {
    const mock = mocked[i];
    const where = `exchange ${i + 1} (${client.method} ${client.path})`;
    eq(client.status, mock.status, `${where}: status`);
    eq(client.response, mock.answer, `${where}: the bytes the client received`);
    eq(mock.raw_body, client.request, `${where}: the body the mock received (bytes)`);
    eq(headerValues(mock, "x-api-key"), [key], `${where}: x-api-key the mock received`);
    eq(headerValues(mock, "authorization"), [], `${where}: authorization the mock received`);
    for (const clientKey of clientKeys) {
      check(!JSON.stringify(mock.headers).includes(clientKey), `${where}: the client's credential reached the mock`);
    }
  });
  return mocked;
}

const tests = [];

export function test(name, fn) {
  tests.push([name, fn]);
}

export function oneLine(e) {
  const text = String(e && e.message !== undefined ? e.message : e).split(/\s+/).join(" ");
  return text.length > 400 ? `${text.slice(0, 400)}…` : text;
}

export async function runAll() {
  const only = process.env.TEST_FILTER || "";
  let failures = 0;
  for (const [name, fn] of tests) {
    if (only && !name.includes(only)) continue;
    const start = performance.now();
    try {
      await fn();
      console.log(`test ${name} ... ok (${((performance.now() - start) / 1000).toFixed(2)} s)`);
    } catch (e) {
      failures += 1;
      const kind = e instanceof Failure ? "" : `${e && e.constructor ? e.constructor.name : "Error"}: `;
      console.log(`test ${name} ... FAILED: ${kind}${oneLine(e)}`);
      if (process.env.TEST_VERBOSE) console.error(e);
    }
  }
  process.exit(Math.min(failures, 100));
}
