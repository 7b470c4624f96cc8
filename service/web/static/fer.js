// Pure functions behind the demo page: no DOM, no fetch, so node's test runner checks them
// (tests/web/fer.test.mjs) and the page (app.js) only wires them to elements.

/** Box colours: Okabe-Ito, distinguishable with common colour-vision deficiencies; black text reads on all. */
export const BOX_COLOURS = ["#E69F00", "#56B4E9", "#009E73", "#F0E442", "#CC79A7", "#D55E00", "#0072B2"];

/** Line colours for the charts: each at least 3:1 against white (WCAG 1.4.11), with a dash pattern too. */
export const LINE_STYLES = [
  { colour: "#4D4D4D", dash: "" },
  { colour: "#B35900", dash: "6 3" },
  { colour: "#0072B2", dash: "2 3" },
  { colour: "#7B3294", dash: "8 3 2 3" },
  { colour: "#00785A", dash: "4 4" },
  { colour: "#5A7A1A", dash: "1 2" },
  { colour: "#C0392B", dash: "10 2" },
];

/** Custom prompts typed one per line: trimmed, blanks and repeats dropped, order kept. */
export function parsePrompts(text) {
  const seen = new Set();
  for (const line of (text || "").split(/\r?\n/)) {
    const prompt = line.trim();
    if (prompt) seen.add(prompt);
  }
  return [...seen];
}

/** The /predict (or /annotate) URL: model, repeatable `prompts=`, and both clip outputs. */
export function predictUrl(path, { model = "", prompts = [] } = {}) {
  const query = new URLSearchParams();
  if (model) query.append("model", model);
  for (const prompt of prompts) query.append("prompts", prompt);
  // Ignored for still images; for clips the page needs the timeline (charts) and the tracks (summaries).
  query.append("include", "timeline");
  query.append("include", "tracks");
  return `${path}?${query.toString()}`;
}

/** The API's error envelope message, or a plain description when the body is not the envelope. */
export function errorMessage(status, text) {
  try {
    const body = JSON.parse(text);
    if (body && body.error && typeof body.error.message === "string") return body.error.message;
  } catch {
    // not JSON: a proxy's HTML page, say
  }
  return `the server answered HTTP ${status}`;
}

/** True when a server that does not know `prompts=` yet refused the request because of it. */
export function rejectsPrompts(status, text) {
  if (status !== 422) return false;
  try {
    const error = JSON.parse(text).error;
    return error.code === "invalid_request" && /prompts/.test(error.message);
  } catch {
    return false;
  }
}

export function percent(probability) {
  return `${Math.round(probability * 100)}%`;
}

export function seconds(value) {
  return `${value.toFixed(2)} s`;
}

/** A face's expressions, most probable first (the API lists them in canonical label order). */
export function ranked(expressions) {
  return [...expressions].sort((a, b) => b.probability - a.probability);
}

/** A box as CSS percentages of the picture, so the overlay follows the picture at any displayed size. */
export function boxStyle(box, width, height) {
  const pct = (value, total) => `${((100 * value) / total).toFixed(3)}%`;
  return {
    left: pct(box.x1, width),
    top: pct(box.y1, height),
    width: pct(box.x2 - box.x1, width),
    height: pct(box.y2 - box.y1, height),
  };
}

/** The caption drawn on a face's box: its number (or track), top expression and probability. */
export function faceCaption(face, index) {
  const who = face.track_id === undefined ? `${index + 1}` : `#${face.track_id}`;
  return `${who} ${face.expression.label} ${percent(face.expression.probability)}`;
}

/** Every track's series in one pass over the timeline: a Map from track id to its points, one per analysed
 * frame in which that face appears (time, frame, distribution, top). An hour-long job has thousands of
 * frames and hundreds of people; one pass per person would be quadratic. */
export function seriesByTrack(timeline) {
  const series = new Map();
  for (const frame of timeline || []) {
    for (const face of frame.faces) {
      if (!series.has(face.track_id)) series.set(face.track_id, []);
      series.get(face.track_id).push({
        t: frame.timestamp_s,
        frameIndex: frame.frame_index,
        probabilities: Object.fromEntries(face.expressions.map((e) => [e.label, e.probability])),
        top: face.expression,
      });
    }
  }
  return series;
}

/** At most `max` of a track's points, evenly spread in order, the first and last always kept, and the
 * mean step between kept points (1 when every point is kept): an hour-long job has thousands of frames
 * per person, and one SVG marker each would stall the page. */
export function thinPoints(points, max) {
  if (points.length <= max || max < 2) return { points, step: 1 };
  const step = (points.length - 1) / (max - 1);
  return { points: Array.from({ length: max }, (_, i) => points[Math.round(i * step)]), step };
}

/** Chart geometry: maps time to x and probability to y inside the padded plot area. */
export function chartScale({ width, height, pad, t0, t1 }) {
  const span = t1 > t0 ? t1 - t0 : 1;
  return {
    x: (t) => pad + ((t - t0) / span) * (width - 2 * pad),
    y: (p) => height - pad - p * (height - 2 * pad),
  };
}

/** An SVG polyline `points` attribute per label, over the track's points. */
export function seriesLines(points, labels, scale) {
  const lines = {};
  for (const label of labels) {
    lines[label] = points
      .map((point) => `${scale.x(point.t).toFixed(1)},${scale.y(point.probabilities[label] ?? 0).toFixed(1)}`)
      .join(" ");
  }
  return lines;
}

/** A track's segments when the response has them, as {label, start, end}; [] when it has none. */
export function segmentsOf(track) {
  if (!Array.isArray(track.segments)) return [];
  return track.segments
    .map((segment) => ({
      label: segment.label ?? (segment.expression && segment.expression.label) ?? "?",
      start: segment.start_s ?? segment.first_s ?? segment.start ?? 0,
      end: segment.end_s ?? segment.last_s ?? segment.end ?? 0,
    }))
    .filter((segment) => segment.end >= segment.start);
}

/** Line style of a label: by its position in the model's label order, so charts agree with each other. */
export function lineStyle(label, labels) {
  const index = Math.max(0, labels.indexOf(label));
  return LINE_STYLES[index % LINE_STYLES.length];
}

/** The index to select after a key press on a chart's points (arrows, Home, End), or null. */
export function nextPoint(key, current, count) {
  const moves = { ArrowRight: current + 1, ArrowUp: current + 1, ArrowLeft: current - 1, ArrowDown: current - 1 };
  if (key === "Home") return 0;
  if (key === "End") return count - 1;
  if (!(key in moves)) return null;
  return Math.min(count - 1, Math.max(0, moves[key]));
}

/** One sentence for the model: name, version and, most importantly, whether its weights are trained. */
export function modelLine(model) {
  const state = model.trained ? "trained weights" : "UNTRAINED weights: outputs are not predictions";
  return `${model.name} v${model.version} (${model.architecture}), ${state}`;
}

/** Image models a person can pick, from /v1/models: ready ones only, trained ones first. */
export function imageModels(listing) {
  return (listing.models || [])
    .filter((entry) => entry.info && entry.info.task === "image" && entry.state === "READY")
    .map((entry) => ({
      name: entry.name,
      trained: entry.info.trained,
      isDefault: entry.name === listing.default_model,
      clipEncoder: entry.info.clip ? entry.info.caller_prompt_encoder || entry.info.text_encoder || "" : "",
    }))
    .sort((a, b) => Number(b.trained) - Number(a.trained) || a.name.localeCompare(b.name));
}

/** The model picker's line: trained or not, the default, and for CLIP which text tower scores the prompts. */
export function modelOption(model) {
  const notes = [model.trained ? "trained" : "untrained"];
  if (model.isDefault) notes.push("default");
  if (model.clipEncoder) notes.push(`CLIP: prompts scored by ${model.clipEncoder}`);
  return `${model.name} (${notes.join(", ")})`;
}

/** Request headers for an API key typed into the page; none when it is blank. */
export function authHeaders(key) {
  const trimmed = (key || "").trim();
  return trimmed ? { Authorization: `Bearer ${trimmed}` } : {};
}

/** True for the answers that mean "send (another) API key": 401 unauthorized, 403 forbidden. */
export function needsKey(status) {
  return status === 401 || status === 403;
}

// ------------------------------------------------------------------------------------------- jobs

/** The clip limits from GET /v1/limits; a limit the server does not state is null (the page then asks). */
export function clipLimits(body) {
  const number = (value) => (typeof value === "number" && value > 0 ? value : null);
  return { maxBytes: number(body && body.clip_max_bytes), maxDurationS: number(body && body.clip_max_duration_s) };
}

/** True for a file the page sends as a video (the browser's type, or the extension when it has none). */
export function isVideoFile(file) {
  if (file.type) return file.type.startsWith("video/");
  return /\.(avi|mkv|mp4|m4v|mov|webm|mpe?g|ogv|wmv|flv)$/i.test(file.name || "");
}

/** Why a video goes to POST /v1/jobs instead of /predict, or "" when it is a clip answered at once. */
export function jobReason({ size, durationS = null, asked = false }, limits) {
  if (asked) return "as you asked";
  if (limits.maxBytes !== null && size > limits.maxBytes) {
    return `it is larger than the ${megabytes(limits.maxBytes)} a clip may be`;
  }
  if (limits.maxDurationS !== null && durationS !== null && durationS > limits.maxDurationS) {
    return `it is longer than the ${limits.maxDurationS} s a clip may last`;
  }
  return "";
}

/** True when /predict refused a video for its clip limits (too large or too long), which a job takes. */
export function refusedAsClip(status, text) {
  if (status === 413) return true;
  try {
    return status === 422 && JSON.parse(text).error.code === "video_too_long";
  } catch {
    return false;
  }
}

export function megabytes(bytes) {
  return `${(bytes / (1024 * 1024)).toFixed(bytes < 10 * 1024 * 1024 ? 1 : 0)} MiB`;
}

/** The job's progress as 0-100 for a progress bar, or null while it is unknown (queued, nothing expected). */
export function jobPercent(status) {
  if (status.state === "succeeded") return 100;
  const progress = status.progress || {};
  return progress.frames_expected > 0 ? Math.min(100, Math.max(0, progress.percent)) : null;
}

/** One line for a job's status: state, frames, percent, elapsed and what is left. */
export function jobProgressText(status) {
  const p = status.progress || {};
  if (status.state === "queued") return "Queued: waiting for a worker …";
  if (status.state === "failed") return `Failed: ${status.error ? status.error.message : "no reason given"}`;
  if (status.state === "cancelled") return "Cancelled.";
  const frames = `${p.frames_analysed} of ${p.frames_expected} frames (${Math.round(p.percent)}%)`;
  const elapsed = `${Math.round(p.elapsed_s)} s elapsed`;
  if (status.state === "succeeded") return `Analysed: ${frames}, ${elapsed}.`;
  const left = p.eta_s === null || p.eta_s === undefined ? "" : `, about ${Math.ceil(p.eta_s)} s left`;
  return `Analysing: ${frames}, ${elapsed}${left}`;
}

export const JOB_END_STATES = new Set(["succeeded", "failed", "cancelled"]);

/** The URL of the result page starting at `offset` (the first page: the result URL itself). */
export function resultPageUrl(resultUrl, offset) {
  return offset ? `${resultUrl}${resultUrl.includes("?") ? "&" : "?"}offset=${offset}` : resultUrl;
}

/** Where the next result page starts, or null when `body` (a page starting at `offset`) was the last. */
export function nextPageOffset(body, offset) {
  const got = Array.isArray(body.timeline) ? body.timeline.length : 0;
  const total = body.timeline_frames ?? 0;
  return got > 0 && offset + got < total ? offset + got : null;
}

// ----------------------------------------------------------------------------------------- live mode

// The stream's opening message: options, and the key in the message (a browser cannot set a WebSocket
// header, and a key never goes in the URL).
export function liveOpening({ key = "", model = "", fps = 5 } = {}) {
  const message = { type: "start", fps };
  if (key.trim()) message.api_key = key.trim();
  if (model) message.model = model;
  return JSON.stringify(message);
}

// ws(s)://host/v1/stream for the page's own origin.
export function liveStreamUrl({ protocol, host }) {
  return `${protocol === "https:" ? "wss:" : "ws:"}//${host}/v1/stream`;
}

// Each person's points over the last `windowS` seconds, with this answer's added (people: a Map).
export function rememberLive(people, answer, windowS) {
  for (const face of answer.faces) {
    const points = people.get(face.track_id) || [];
    points.push({ t: answer.timestamp_s, label: face.smoothed_expression.label, p: face.smoothed_expression.probability });
    while (points.length && answer.timestamp_s - points[0].t > windowS) points.shift();
    people.set(face.track_id, points);
  }
  return people;
}

// One line of the live people list: the smoothed expression now and the current segment.
export function livePersonText(face) {
  const now = face.smoothed_expression;
  return `person ${face.track_id}: ${now.label} ${Math.round(100 * now.probability)}%, ` +
    `${face.segment.label} since ${face.segment.start_s.toFixed(1)} s`;
}

// The status line after an answer (a result or a frame's error).
export function liveStatus(answer) {
  if (answer.type === "result") {
    return `Live: frame ${answer.frame}, ${answer.faces.length} face(s), ${answer.dropped_total} dropped.`;
  }
  if (answer.type === "error") return `Frame ${answer.frame}: ${answer.error.code}: ${answer.error.message}`;
  if (answer.type === "ready") return `Live: ${answer.model} at up to ${answer.fps} frames/s.`;
  return "";
}
