// The page's wiring (service/web/static/app.js) without a browser: a minimal stand-in DOM and fetch, the
// module imported for real, and the requests it sends inspected. Catches a page that builds the right URL
// in fer.js but does not pass the caller's prompts to it (tests/integration/test_web_page.py checks the
// same in a real browser, where Selenium is available).
import assert from "node:assert/strict";
import { test } from "node:test";

class FakeElement {
  constructor(id = "") {
    this.id = id;
    this.value = "";
    this.textContent = "";
    this.hidden = false;
    this.open = false;
    this.src = "";
    this.options = id === "model-select" ? [new FakeElement()] : [];
    this.children = [];
    this.listeners = {};
    this.classList = { add() {}, remove() {} };
  }
  addEventListener(type, listener) {
    (this.listeners[type] ||= []).push(listener);
  }
  dispatch(type, event = {}) {
    for (const listener of this.listeners[type] || []) listener({ preventDefault() {}, target: this, ...event });
  }
  setAttribute(name, value) {
    this[name] = value;
  }
  replaceChildren(...children) {
    this.children = children;
  }
  append(...children) {
    this.children.push(...children);
  }
  focus() {}
  click() {}
}

const elements = new Map();
const $ = (id) => {
  if (!elements.has(id)) elements.set(id, new FakeElement(id));
  return elements.get(id);
};
const requests = [];
const replies = []; // queued (url) => {status, body} for /predict and /annotate

globalThis.document = {
  getElementById: $,
  createElement: () => new FakeElement(),
  createElementNS: () => new FakeElement(),
};
Object.defineProperty(globalThis, "navigator", { value: {}, configurable: true, writable: true });
globalThis.fetch = async (url, options = {}) => {
  requests.push({ url, options });
  if (url.startsWith("/v1/models")) return new Response("{}", { status: 503 });
  const reply = replies.shift() || { status: 503, body: { error: { code: "inference_unavailable", message: "down" } } };
  return new Response(JSON.stringify(reply.body), { status: reply.status });
};

await import("../../service/web/static/app.js");

function queryOf(url) {
  return new URLSearchParams(url.split("?")[1]);
}

async function chooseFile(prompts) {
  $("prompts-input").value = prompts;
  $("error").textContent = "";
  requests.length = 0;
  $("file-input").dispatch("change", { target: { files: [new File([new Uint8Array([1, 2, 3])], "face.png")] } });
  // Every exchange here ends with the fake's 503, which the page shows as an error: wait for it (bounded).
  for (let i = 0; i < 400 && $("error").textContent === ""; i += 1) {
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
  assert.equal($("error").textContent, "down", "the page never finished its request");
}

test("the page sends the caller's prompts with the picture, one prompts= each", async () => {
  await chooseFile(" a smug face \n\na tired face\na smug face\n");
  const predicts = requests.filter((r) => r.url.startsWith("/predict"));
  assert.equal(predicts.length, 1);
  assert.equal(predicts[0].options.method, "POST");
  assert.deepEqual(queryOf(predicts[0].url).getAll("prompts"), ["a smug face", "a tired face"]);
  assert.ok(predicts[0].options.body instanceof FormData && predicts[0].options.body.get("file"));
});

test("without prompts typed the page sends none", async () => {
  await chooseFile("  \n");
  const predicts = requests.filter((r) => r.url.startsWith("/predict"));
  assert.equal(predicts.length, 1);
  assert.deepEqual(queryOf(predicts[0].url).getAll("prompts"), []);
});

test("a server that refuses prompts= is asked again without them", async () => {
  replies.push({ status: 422, body: { error: { code: "invalid_request", message: "query.prompts: extra" } } });
  await chooseFile("a smug face");
  const predicts = requests.filter((r) => r.url.startsWith("/predict"));
  assert.equal(predicts.length, 2);
  assert.deepEqual(queryOf(predicts[0].url).getAll("prompts"), ["a smug face"]);
  assert.deepEqual(queryOf(predicts[1].url).getAll("prompts"), []);
});
