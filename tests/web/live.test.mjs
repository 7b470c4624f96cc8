// The live mode's pure parts (service/web/static/fer.js): the opening message, the stream URL, the 30 s
// window of each person's points, the people list's line and the status line; run by `node --test tests/web/`.
// The mode itself, camera to canvas, runs in the real browser (tests/integration/test_web_live.py).
import assert from "node:assert/strict";
import { test } from "node:test";

import { liveOpening, livePersonText, liveStatus, liveStreamUrl, rememberLive } from "../../service/web/static/fer.js";

const face = (trackId, label, p, segment = { label, start_s: 1.25 }) => ({
  track_id: trackId,
  smoothed_expression: { label, probability: p },
  segment,
});

test("the opening message carries the options and the key, never an empty key or model", () => {
  assert.deepEqual(JSON.parse(liveOpening({ key: "  k-1 ", model: "poster" })), {
    type: "start", fps: 5, api_key: "k-1", model: "poster",
  });
  assert.deepEqual(JSON.parse(liveOpening({ key: "   ", model: "" })), { type: "start", fps: 5 });
  assert.deepEqual(JSON.parse(liveOpening()), { type: "start", fps: 5 });
});

test("the stream URL follows the page's origin, wss behind https, with no key in it", () => {
  assert.equal(liveStreamUrl({ protocol: "http:", host: "127.0.0.1:8080" }), "ws://127.0.0.1:8080/v1/stream");
  assert.equal(liveStreamUrl({ protocol: "https:", host: "fer.example" }), "wss://fer.example/v1/stream");
});

test("each person keeps the points of the last window only, person by person", () => {
  const people = new Map();
  for (let t = 0; t <= 40; t += 5) {
    const faces = t < 20 ? [face(1, "happiness", 0.5), face(2, "neutral", 0.9)] : [face(1, "sadness", 0.7)];
    rememberLive(people, { timestamp_s: t, faces }, 30);
  }
  assert.deepEqual(people.get(1).map((point) => point.t), [10, 15, 20, 25, 30, 35, 40]);
  assert.deepEqual(people.get(1).at(-1), { t: 40, label: "sadness", p: 0.7 });
  assert.deepEqual(people.get(2).map((point) => point.t), [0, 5, 10, 15]); // gone: kept as last seen
  rememberLive(people, { timestamp_s: 40, faces: [] }, 30);
  assert.equal(people.get(1).length, 7); // an answer without faces changes nobody
});

test("a point exactly one window old is kept, one just over is dropped", () => {
  const people = rememberLive(new Map(), { timestamp_s: 0, faces: [face(3, "fear", 0.4)] }, 30);
  rememberLive(people, { timestamp_s: 30, faces: [face(3, "fear", 0.4)] }, 30);
  assert.equal(people.get(3).length, 2);
  rememberLive(people, { timestamp_s: 30.5, faces: [face(3, "fear", 0.4)] }, 30);
  assert.deepEqual(people.get(3).map((point) => point.t), [30, 30.5]);
});

test("a person's line: smoothed expression in whole percent, then the current segment since when", () => {
  assert.equal(livePersonText(face(2, "happiness", 0.876, { label: "neutral", start_s: 3.04 })),
    "person 2: happiness 88%, neutral since 3.0 s");
  assert.match(livePersonText(face(11, "anger", 0.5)), /^person \d+: \w+ \d+%, \w+ since \d+\.\d s$/);
});

test("the status line says what each kind of answer says", () => {
  assert.equal(liveStatus({ type: "ready", model: "mini_xception_fer2013", fps: 5 }),
    "Live: mini_xception_fer2013 at up to 5 frames/s.");
  assert.equal(liveStatus({ type: "result", frame: 7, faces: [{}, {}], dropped_total: 3 }),
    "Live: frame 7, 2 face(s), 3 dropped.");
  assert.equal(liveStatus({ type: "error", frame: 8, error: { code: "invalid_image", message: "bad" } }),
    "Frame 8: invalid_image: bad");
  assert.equal(liveStatus({ type: "other" }), "");
});
