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
  removeAttribute(name) {
    delete this[name];
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

async function chooseVideo(size, expected) {
  $("error").textContent = "";
  requests.length = 0;
  const file = new File([new Uint8Array(size)], "talk.avi", { type: "video/x-msvideo" });
  $("file-input").dispatch("change", { target: { files: [file] } });
  for (let i = 0; i < 600 && $("error").textContent === ""; i += 1) {
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
  assert.equal($("error").textContent, expected, "the page never showed the job's error");
  return requests.map((r) => `${r.options.method || "GET"} ${r.url.split("?")[0]}`);
}

const queued = { id: "j1", state: "queued", progress: {}, status_url: "/v1/jobs/j1", result_url: "/v1/jobs/j1/result" };

test("a video with the job option ticked goes to POST /v1/jobs, is followed, and a failure is shown", async () => {
  $("job-input").checked = true;
  $("prompts-input").value = "a smug face";
  const error = { code: "invalid_video", message: "no frame of the video could be decoded" };
  replies.push({ status: 202, body: queued }, { status: 200, body: { ...queued, state: "failed", error } });
  const sent = await chooseVideo(3, "Failed: no frame of the video could be decoded");
  $("job-input").checked = false;
  assert.deepEqual(sent, ["POST /v1/jobs", "GET /v1/jobs/j1"]);
  const query = queryOf(requests[0].url);
  assert.deepEqual(query.getAll("prompts"), ["a smug face"]);
  assert.deepEqual(query.getAll("include"), ["timeline", "tracks"]);
  assert.equal($("job-progress")["data-state"], "failed");
  assert.equal($("job-cancel").hidden, true);
});

test("a video that /predict refuses as too long for a clip is sent on as a job", async () => {
  const tooLong = { error: { code: "video_too_long", message: "the clip lasts 300 s; at most 60 s" } };
  const full = { error: { code: "job_queue_full", message: "100 jobs are waiting" } };
  // No limits from this server: /predict decides, and its refusal sends the video to /v1/jobs.
  replies.push({ status: 404, body: {} }, { status: 422, body: tooLong }, { status: 429, body: full });
  const sent = await chooseVideo(3, "100 jobs are waiting");
  assert.deepEqual(sent, ["GET /v1/limits", "POST /predict", "POST /v1/jobs"]);
});

test("a video over the clip size limit from GET /v1/limits goes straight to a job", async () => {
  replies.push({ status: 200, body: { clip_max_bytes: 2, clip_max_duration_s: null } });
  replies.push({ status: 413, body: { error: { code: "payload_too_large", message: "over 2 GiB" } } });
  const sent = await chooseVideo(3, "over 2 GiB");
  assert.deepEqual(sent, ["GET /v1/limits", "POST /v1/jobs"]);
  assert.equal($("job").hidden, true); // a refused submission leaves no progress bar behind
});
