// Unit tests of the page's pure functions (service/web/static/fer.js), run by node's own test runner:
// `node --test tests/web/` (tests/unit/test_web_js.py runs it inside pytest).
import assert from "node:assert/strict";
import { test } from "node:test";

import {
  LINE_STYLES,
  authHeaders,
  boxStyle,
  chartScale,
  errorMessage,
  faceCaption,
  imageModels,
  modelOption,
  lineStyle,
  needsKey,
  nextPoint,
  parsePrompts,
  percent,
  predictUrl,
  ranked,
  rejectsPrompts,
  segmentsOf,
  seriesLines,
  seriesByTrack,
  thinPoints,
} from "../../service/web/static/fer.js";

const face = (label, probability, extra = {}) => ({
  expression: { label, probability },
  expressions: [
    { label: "neutral", probability: 1 - probability },
    { label, probability },
  ],
  ...extra,
});

test("prompts: one per line, trimmed, blanks and repeats dropped, order kept", () => {
  assert.deepEqual(parsePrompts(" a happy face \n\n\r\na sad face\na happy face\n"), ["a happy face", "a sad face"]);
  assert.deepEqual(parsePrompts(""), []);
});

test("the request URL repeats prompts= and asks for the timeline and the tracks", () => {
  const url = predictUrl("/predict", { model: "fer_former", prompts: ["a b", "c&d"] });
  const query = new URLSearchParams(url.split("?")[1]);
  assert.equal(url.split("?")[0], "/predict");
  assert.equal(query.get("model"), "fer_former");
  assert.deepEqual(query.getAll("prompts"), ["a b", "c&d"]);
  assert.deepEqual(query.getAll("include"), ["timeline", "tracks"]);
  assert.equal(new URLSearchParams(predictUrl("/predict").split("?")[1]).has("model"), false);
});

test("errors show the API's error.message, or the status when the body is not the envelope", () => {
  const body = JSON.stringify({ error: { code: "invalid_image", message: "image data is truncated" } });
  assert.equal(errorMessage(422, body), "image data is truncated");
  assert.equal(errorMessage(502, "<html>Bad gateway</html>"), "the server answered HTTP 502");
});

test("a refusal of prompts= is recognised, other 422s are not", () => {
  const refusal = JSON.stringify({ error: { code: "invalid_request", message: "query.prompts: Extra inputs are not permitted" } });
  const other = JSON.stringify({ error: { code: "invalid_image", message: "truncated" } });
  assert.equal(rejectsPrompts(422, refusal), true);
  assert.equal(rejectsPrompts(422, other), false);
  assert.equal(rejectsPrompts(400, refusal), false);
  assert.equal(rejectsPrompts(422, "not json"), false);
});

test("boxes become percentages of the picture", () => {
  assert.deepEqual(boxStyle({ x1: 50, y1: 25, x2: 150, y2: 75 }, 200, 100), {
    left: "25.000%",
    top: "25.000%",
    width: "50.000%",
    height: "50.000%",
  });
});

test("captions and percentages", () => {
  assert.equal(percent(0.317449), "32%");
  assert.equal(faceCaption(face("anger", 0.317), 0), "1 anger 32%");
  assert.equal(faceCaption(face("sadness", 0.68, { track_id: 3 }), 0), "#3 sadness 68%");
  assert.deepEqual(ranked(face("anger", 0.9).expressions).map((e) => e.label), ["anger", "neutral"]);
});

const timeline = [
  { frame_index: 3, timestamp_s: 0.2, faces: [face("sadness", 0.7, { track_id: 1 }), face("anger", 0.6, { track_id: 2 })] },
  { frame_index: 9, timestamp_s: 0.4, faces: [face("anger", 0.8, { track_id: 2 })] },
  { frame_index: 14, timestamp_s: 0.6, faces: [face("sadness", 0.9, { track_id: 1 })] },
];

test("each track's series has a point only where that person was seen, from one pass", () => {
  const series = seriesByTrack(timeline);
  assert.deepEqual([...series.keys()], [1, 2]);
  const first = series.get(1);
  assert.deepEqual(first.map((p) => [p.t, p.frameIndex, p.top.label]), [[0.2, 3, "sadness"], [0.6, 14, "sadness"]]);
  assert.equal(first[1].probabilities.sadness, 0.9);
  assert.deepEqual(series.get(2).map((p) => [p.t, p.frameIndex, p.top.label]), [[0.2, 3, "anger"], [0.4, 9, "anger"]]);
  assert.equal(seriesByTrack(null).size, 0);
  assert.equal(seriesByTrack(undefined).size, 0);
});

test("a long series is thinned to exactly max points, evenly, keeping its first and last", () => {
  const series = Array.from({ length: 14400 }, (_, index) => ({ t: index / 4 }));
  const { points, step } = thinPoints(series, 400);
  assert.equal(points.length, 400);
  assert.ok(Math.abs(step - 14399 / 399) < 1e-9);
  assert.equal(points[0], series[0]);
  assert.equal(points[399], series[14399]);
  const gaps = points.slice(1).map((point, i) => (point.t - points[i].t) * 4);
  assert.ok(gaps.every((gap) => gap === 36 || gap === 37), `gaps ${[...new Set(gaps)]}`);
  const short = series.slice(0, 400);
  assert.deepEqual(thinPoints(short, 400), { points: short, step: 1 });
  assert.equal(thinPoints(series.slice(0, 401), 400).points.length, 400);
  assert.equal(new Set(thinPoints(series.slice(0, 401), 400).points).size, 400); // no point twice
});

test("chart scale: time left to right, probability bottom to top, inside the padding", () => {
  const scale = chartScale({ width: 120, height: 60, pad: 10, t0: 0, t1: 2 });
  assert.equal(scale.x(0), 10);
  assert.equal(scale.x(2), 110);
  assert.equal(scale.y(0), 50);
  assert.equal(scale.y(1), 10);
  const lines = seriesLines(seriesByTrack(timeline).get(1), ["neutral", "sadness", "fear"], scale);
  assert.equal(lines.sadness, "20.0,22.0 40.0,14.0");
  assert.equal(lines.fear, "20.0,50.0 40.0,50.0"); // a label missing from a face counts as 0
});

test("segments are read when present, under either naming, and absent segments are no segments", () => {
  assert.deepEqual(segmentsOf({}), []);
  assert.deepEqual(
    segmentsOf({ segments: [{ label: "happiness", start_s: 0.5, end_s: 1.5 }, { label: "x", first_s: 2, last_s: 1 }] }),
    [{ label: "happiness", start: 0.5, end: 1.5 }],
  );
  assert.deepEqual(segmentsOf({ segments: [{ expression: { label: "fear" }, first_s: 1, last_s: 2 }] }), [
    { label: "fear", start: 1, end: 2 },
  ]);
});

test("line styles follow the model's label order, and keys walk the points", () => {
  assert.equal(lineStyle("sadness", ["neutral", "happiness", "sadness"]), LINE_STYLES[2]);
  assert.equal(nextPoint("ArrowRight", 0, 3), 1);
  assert.equal(nextPoint("ArrowRight", 2, 3), 2);
  assert.equal(nextPoint("ArrowLeft", 0, 3), 0);
  assert.equal(nextPoint("End", 0, 3), 2);
  assert.equal(nextPoint("a", 0, 3), null);
});

test("the model picker lists ready image models, trained first", () => {
  const listing = {
    default_model: "mini",
    models: [
      { name: "fer_former", state: "READY", info: { task: "image", trained: false } },
      { name: "stt", state: "READY", info: { task: "video", trained: false } },
      { name: "broken", state: "UNAVAILABLE", info: null },
      { name: "mini", state: "READY", info: { task: "image", trained: true } },
    ],
  };
  assert.deepEqual(imageModels(listing), [
    { name: "mini", trained: true, isDefault: true, clipEncoder: "" },
    { name: "fer_former", trained: false, isDefault: false, clipEncoder: "" },
  ]);
});

test("the model picker says which models are CLIP and which text tower scores their prompts", () => {
  const listing = {
    default_model: "clip_b32",
    models: [
      {
        name: "clip_b32",
        state: "READY",
        info: { task: "image", trained: true, clip: true, caller_prompt_encoder: "clip_b32_text" },
      },
      { name: "mini", state: "READY", info: { task: "image", trained: true, clip: false } },
    ],
  };
  const [clip, mini] = imageModels(listing);
  assert.equal(modelOption(clip), "clip_b32 (trained, default, CLIP: prompts scored by clip_b32_text)");
  assert.equal(modelOption(mini), "mini (trained)");
});

test("an API key typed into the page becomes a bearer header; a blank one sends nothing", () => {
  assert.deepEqual(authHeaders("  k3y "), { Authorization: "Bearer k3y" });
  assert.deepEqual(authHeaders(""), {});
  assert.deepEqual(authHeaders(undefined), {});
  assert.equal(needsKey(401), true);
  assert.equal(needsKey(403), true);
  assert.equal(needsKey(422), false);
});
