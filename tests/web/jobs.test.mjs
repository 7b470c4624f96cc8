// The page's choice between a clip (/predict) and a job (/v1/jobs), the job's progress line and the
// result's paging: pure functions of service/web/static/fer.js, run by `node --test tests/web/`.
import assert from "node:assert/strict";
import { test } from "node:test";

import {
  clipLimits,
  isVideoFile,
  jobPercent,
  jobProgressText,
  jobReason,
  nextPageOffset,
  refusedAsClip,
  resultPageUrl,
} from "../../service/web/static/fer.js";

const MiB = 1024 * 1024;
const limits = clipLimits({ max_images: 16, clip_max_bytes: 20 * MiB, clip_max_duration_s: 60 });

test("the clip limits come from GET /v1/limits; a server that does not state them gives nulls", () => {
  assert.deepEqual(limits, { maxBytes: 20 * MiB, maxDurationS: 60 });
  assert.deepEqual(clipLimits({ max_images: 16, max_body_bytes: 5 }), { maxBytes: null, maxDurationS: null });
  assert.deepEqual(clipLimits(null), { maxBytes: null, maxDurationS: null });
});

test("videos are told apart by type, or by extension when the browser gives none", () => {
  assert.equal(isVideoFile({ name: "a.avi", type: "video/x-msvideo" }), true);
  assert.equal(isVideoFile({ name: "Megamind.avi", type: "" }), true);
  assert.equal(isVideoFile({ name: "talk.MKV" }), true);
  assert.equal(isVideoFile({ name: "face.png", type: "image/png" }), false);
  assert.equal(isVideoFile({ name: "notes.txt", type: "" }), false);
});

test("a video goes to a job when asked, over the clip size, or over the clip duration; else it is a clip", () => {
  assert.equal(jobReason({ size: 1000, asked: true }, limits), "as you asked");
  assert.equal(jobReason({ size: 21 * MiB }, limits), "it is larger than the 20 MiB a clip may be");
  assert.equal(jobReason({ size: 1000, durationS: 61 }, limits), "it is longer than the 60 s a clip may last");
  assert.equal(jobReason({ size: 20 * MiB, durationS: 60 }, limits), "");
  assert.equal(jobReason({ size: 1000, durationS: null }, limits), ""); // unknown duration: /predict decides
  assert.equal(jobReason({ size: 10 ** 12, durationS: 10 ** 6 }, clipLimits({})), ""); // limits unknown
});

test("only /predict's clip-limit refusals send a video on as a job", () => {
  const envelope = (code) => JSON.stringify({ error: { code, message: "m" } });
  assert.equal(refusedAsClip(413, envelope("payload_too_large")), true);
  assert.equal(refusedAsClip(422, envelope("video_too_long")), true);
  assert.equal(refusedAsClip(422, envelope("video_too_large")), false); // too many pixels: a job refuses it too
  assert.equal(refusedAsClip(415, envelope("unsupported_media_type")), false);
  assert.equal(refusedAsClip(422, "<html>"), false);
});

const status = (state, progress = {}, extra = {}) => ({
  state,
  progress: { frames_analysed: 0, frames_expected: 0, percent: 0, elapsed_s: 0, eta_s: null, ...progress },
  ...extra,
});

test("the progress bar: unknown while nothing is expected, the percent while running, full on success", () => {
  assert.equal(jobPercent(status("queued")), null);
  assert.equal(jobPercent(status("running", { frames_analysed: 12, frames_expected: 57, percent: 21.05 })), 21.05);
  assert.equal(jobPercent(status("running", { frames_analysed: 70, frames_expected: 57, percent: 122 })), 100);
  assert.equal(jobPercent(status("succeeded", { frames_analysed: 57, frames_expected: 57, percent: 100 })), 100);
});

test("the progress line says frames, percent, elapsed and what is left, or why it ended", () => {
  assert.equal(jobProgressText(status("queued")), "Queued: waiting for a worker …");
  const running = { frames_analysed: 12, frames_expected: 57, percent: 21.05, elapsed_s: 3.4, eta_s: 12.75 };
  assert.equal(jobProgressText(status("running", running)), "Analysing: 12 of 57 frames (21%), 3 s elapsed, about 13 s left");
  assert.equal(jobProgressText(status("running", { ...running, eta_s: null })), "Analysing: 12 of 57 frames (21%), 3 s elapsed");
  const done = { frames_analysed: 57, frames_expected: 57, percent: 100, elapsed_s: 9.6, eta_s: 0 };
  assert.equal(jobProgressText(status("succeeded", done)), "Analysed: 57 of 57 frames (100%), 10 s elapsed.");
  const failed = status("failed", {}, { error: { code: "invalid_video", message: "no frame could be decoded" } });
  assert.equal(jobProgressText(failed), "Failed: no frame could be decoded");
  assert.equal(jobProgressText(status("cancelled")), "Cancelled.");
});

test("result pages: the next offset until the timeline's total, then none", () => {
  const page = (n, total) => ({ timeline: Array.from({ length: n }, (_, i) => ({ frame_index: i })), timeline_frames: total });
  assert.equal(nextPageOffset(page(16, 57), 0), 16);
  assert.equal(nextPageOffset(page(16, 57), 32), 48);
  assert.equal(nextPageOffset(page(9, 57), 48), null);
  assert.equal(nextPageOffset(page(0, 57), 57), null); // an empty page never loops
  assert.equal(nextPageOffset({ tracks: [] }, 0), null); // a result without a timeline
  assert.equal(resultPageUrl("/v1/jobs/ab/result", 0), "/v1/jobs/ab/result");
  assert.equal(resultPageUrl("/v1/jobs/ab/result", 16), "/v1/jobs/ab/result?offset=16");
});

// The job's exchanges (service/web/static/jobs.js) against a stand-in fetch that answers from a script.
const { cancelJob, followJob, jobResult } = await import("../../service/web/static/jobs.js");
const sent = [];
let script = [];
globalThis.fetch = async (url, options = {}) => {
  sent.push({ url, method: options.method || "GET" });
  const [status, body] = script.shift();
  return new Response(JSON.stringify(body), { status });
};

test("following a job polls its status URL until it ends, reporting every status", async () => {
  sent.length = 0;
  const urls = { status_url: "/v1/jobs/j1", result_url: "/v1/jobs/j1/result" };
  script = [
    [200, status("running", { frames_analysed: 8, frames_expected: 57, percent: 14 }, urls)],
    [200, status("succeeded", { frames_analysed: 57, frames_expected: 57, percent: 100 }, urls)],
  ];
  const seen = [];
  const last = await followJob(status("queued", {}, urls), {}, (s) => seen.push(s.state), 0);
  assert.equal(last.state, "succeeded");
  assert.deepEqual(seen, ["queued", "running", "succeeded"]);
  assert.deepEqual(sent.map((r) => r.url), ["/v1/jobs/j1", "/v1/jobs/j1"]);
});

test("a refused poll ends the following with the status and body the page shows", async () => {
  script = [[404, { error: { code: "job_not_found", message: "no job 'j1' for this API key" } }]];
  const refused = await followJob(status("queued", {}, { status_url: "/v1/jobs/j1" }), {}, () => {}, 0).catch((e) => e);
  assert.equal(refused.status, 404);
  assert.match(refused.text, /job_not_found/);
});

test("the result is read page by page and its timelines joined in order", async () => {
  sent.length = 0;
  const frames = (from, to) => Array.from({ length: to - from }, (_, i) => ({ frame_index: from + i }));
  script = [
    [200, { media: "video", tracks: [{ track_id: 1 }], timeline: frames(0, 2), timeline_frames: 5 }],
    [200, { media: "video", tracks: [{ track_id: 1 }], timeline: frames(2, 4), timeline_frames: 5 }],
    [200, { media: "video", tracks: [{ track_id: 1 }], timeline: frames(4, 5), timeline_frames: 5 }],
  ];
  const body = await jobResult("/v1/jobs/j1/result", {});
  assert.deepEqual(body.timeline.map((f) => f.frame_index), [0, 1, 2, 3, 4]);
  assert.deepEqual(sent.map((r) => r.url), ["/v1/jobs/j1/result", "/v1/jobs/j1/result?offset=2", "/v1/jobs/j1/result?offset=4"]);
});

test("cancelling sends DELETE to the job's status URL", async () => {
  sent.length = 0;
  script = [[200, status("cancelled", {}, { status_url: "/v1/jobs/j1" })]];
  assert.equal((await cancelJob("/v1/jobs/j1", {})).state, "cancelled");
  assert.deepEqual(sent, [{ url: "/v1/jobs/j1", method: "DELETE" }]);
});
