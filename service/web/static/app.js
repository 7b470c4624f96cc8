// The demo page: wires the pure functions of fer.js to the DOM. No framework, no build, no network
// beyond this gateway. Every value from the response is inserted as text, never as HTML.
import {
  BOX_COLOURS,
  authHeaders,
  boxStyle,
  chartScale,
  clipLimits,
  errorMessage,
  faceCaption,
  imageModels,
  isVideoFile,
  JOB_END_STATES,
  jobPercent,
  jobProgressText,
  jobReason,
  modelOption,
  lineStyle,
  modelLine,
  needsKey,
  nextPoint,
  parsePrompts,
  percent,
  predictUrl,
  ranked,
  refusedAsClip,
  rejectsPrompts,
  seconds,
  segmentsOf,
  seriesByTrack,
  seriesLines,
  thinPoints,
} from "./fer.js";
import { JobError, cancelJob, followJob, jobResult, submitJob } from "./jobs.js";

const $ = (id) => document.getElementById(id);
const SVG = "http://www.w3.org/2000/svg";
// Points per person's chart (720 px wide): about 2 px apart; longer series are thinned (thinPoints).
const CHART_MAX_POINTS = 400;
const page = { file: null, response: null, objectUrl: null, limits: null, job: null, fromJob: false };

function element(tag, attributes = {}, text = "") {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, value);
  if (text) node.textContent = text;
  return node;
}

function svgElement(tag, attributes = {}) {
  const node = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, String(value));
  return node;
}

function setStatus(text) {
  $("status").textContent = text;
}

function showError(message) {
  $("error").textContent = message;
  $("error").hidden = !message;
}

// ------------------------------------------------------------------------------------------- request
function uploadParts(path, file, prompts) {
  const form = new FormData();
  form.append("file", file, file.name || "upload");
  const model = $("model-select").value;
  return { url: predictUrl(path, { model, prompts }), form, headers: authHeaders($("key-input").value) };
}

async function post(path, file, prompts) {
  const { url, form, headers } = uploadParts(path, file, prompts);
  return fetch(url, { method: "POST", body: form, headers });
}

function showFailure(status, text) {
  setStatus("");
  showError(errorMessage(status, text));
  if (needsKey(status)) {
    // The key field is tucked away until a server asks for one.
    $("key-details").open = true;
    $("key-input").focus();
  }
}

async function analyse(file) {
  page.file = file;
  showError("");
  const prompts = parsePrompts($("prompts-input").value);
  const reason = isVideoFile(file) ? await whyJob(file) : "";
  if (reason) return analyseAsJob(file, prompts, reason);
  setStatus(`Analysing ${file.name || "the picture"} …`);
  let response = await post("/predict", file, prompts);
  let text = await response.text();
  const notes = [];
  if (prompts.length && rejectsPrompts(response.status, text)) {
    // A server from before custom prompts refuses the parameter: say so, and analyse without them.
    notes.push("This server does not accept custom prompts yet; the picture was analysed without them.");
    response = await post("/predict", file, []);
    text = await response.text();
  }
  if (!response.ok) {
    if (isVideoFile(file) && refusedAsClip(response.status, text)) {
      return analyseAsJob(file, prompts, `refused as a clip: ${errorMessage(response.status, text)}`);
    }
    showFailure(response.status, text);
    return;
  }
  page.fromJob = false;
  render(JSON.parse(text), notes);
  setStatus(`Done: ${file.name || "the picture"}.`);
}

// ------------------------------------------------------------------------------------------- jobs
async function serverLimits() {
  if (page.limits) return page.limits;
  try {
    const response = await fetch("/v1/limits", { headers: authHeaders($("key-input").value) });
    if (!response.ok) return clipLimits({});
    page.limits = clipLimits(await response.json());
  } catch {
    return clipLimits({}); // then /predict's own refusal (413, video_too_long) sends the video as a job
  }
  return page.limits;
}

function videoDuration(file, timeoutMs = 3000) {
  // The browser reads the duration from a container it can play (not AVI): null otherwise, or too slow.
  return new Promise((resolve) => {
    const probe = document.createElement("video");
    const url = URL.createObjectURL(file);
    const done = (value) => {
      clearTimeout(timer);
      URL.revokeObjectURL(url);
      resolve(value);
    };
    const timer = setTimeout(() => done(null), timeoutMs);
    probe.preload = "metadata";
    probe.onloadedmetadata = () => done(Number.isFinite(probe.duration) ? probe.duration : null);
    probe.onerror = () => done(null);
    probe.src = url;
  });
}

async function whyJob(file) {
  if ($("job-input").checked) return jobReason({ asked: true }, clipLimits({}));
  const limits = await serverLimits();
  const bySize = jobReason({ size: file.size }, limits);
  if (bySize || limits.maxDurationS === null) return bySize;
  return jobReason({ size: file.size, durationS: await videoDuration(file) }, limits);
}

function showJobStatus(status) {
  page.job = status;
  const bar = $("job-progress");
  const value = jobPercent(status);
  if (value === null) bar.removeAttribute("value"); // indeterminate while queued
  else bar.value = value;
  bar.setAttribute("data-state", status.state);
  $("job-text").textContent = jobProgressText(status);
  $("job-cancel").hidden = JOB_END_STATES.has(status.state);
}

function showJobUpload() {
  $("job").hidden = false;
  $("job-progress").removeAttribute("value"); // indeterminate until the job reports its frames
  $("job-progress").setAttribute("data-state", "uploading");
  $("job-text").textContent = "Uploading …";
  $("job-cancel").hidden = true; // until there is a job to cancel
  $("job-cancel").disabled = false;
}

async function analyseAsJob(file, prompts, reason) {
  const name = file.name || "the video";
  setStatus(`Sending ${name} as a job (${reason}) …`);
  const { url, form, headers } = uploadParts("/v1/jobs", file, prompts);
  showJobUpload();
  try {
    const first = await submitJob(url, form, headers);
    setStatus(`Job ${first.id}: ${name}, sent as a job (${reason}).`);
    const last = await followJob(first, headers, showJobStatus);
    if (last.state === "failed") {
      setStatus("");
      return showError(jobProgressText(last)); // "Failed: " and the error envelope's message
    }
    if (last.state === "cancelled") return setStatus(`Cancelled: ${name}.`);
    setStatus(`Reading the result of job ${last.id} …`);
    const body = await jobResult(last.result_url, headers);
    page.fromJob = true;
    render(body, []);
    setStatus(`Done: ${name}, analysed as a job (${reason}).`);
  } catch (error) {
    if (!(error instanceof JobError)) throw error;
    $("job").hidden = true;
    showFailure(error.status, error.text);
  } finally {
    page.job = null;
    $("job-cancel").hidden = true;
  }
}

async function cancelCurrentJob() {
  if (!page.job) return;
  $("job-cancel").disabled = true;
  setStatus("Cancelling the job …");
  showJobStatus(await cancelJob(page.job.status_url, authHeaders($("key-input").value)));
}

// ------------------------------------------------------------------------------------------- render
function render(body, notes) {
  page.response = body;
  $("results").hidden = false;
  $("raw").textContent = JSON.stringify(body, null, 1);
  renderModel(body);
  renderWarnings([...notes, ...body.warnings]);
  $("sheet").hidden = true;
  // A job's video is over the clip limits that /annotate shares with /predict: no contact sheet for it.
  $("sheet-button").hidden = page.fromJob;
  if (body.media === "video") renderClip(body);
  else renderImage(body);
}

function renderModel(body) {
  const box = $("model-info");
  box.replaceChildren();
  const models = body.media === "video" ? [body.model, body.video_model] : [body.model];
  for (const model of models) {
    const line = element("p");
    const badge = element("span", { class: `badge ${model.trained ? "trained" : "untrained"}` });
    badge.textContent = model.trained ? "trained" : "untrained";
    line.append(element("strong", {}, model.task === "video" ? "Video model: " : "Model: "), modelLine(model), " ", badge);
    box.append(line);
  }
}

function renderWarnings(warnings) {
  $("warnings").replaceChildren(...warnings.map((warning) => element("li", {}, warning)));
}

function showPicture(url, isVideo) {
  $("preview").hidden = isVideo;
  $("clip").hidden = !isVideo;
  $("no-playback").hidden = true;
  if (isVideo) $("clip").src = url;
  else $("preview").src = url;
}

function freshObjectUrl(file) {
  if (page.objectUrl) URL.revokeObjectURL(page.objectUrl);
  page.objectUrl = URL.createObjectURL(file);
  return page.objectUrl;
}

function renderImage(body) {
  $("clip-section").hidden = true;
  showPicture(freshObjectUrl(page.file), false);
  $("preview").alt = `Your picture, ${body.image.width}×${body.image.height}, with ${body.faces.length} face(s) marked`;
  drawBoxes(body.faces, body.image.width, body.image.height);
  $("stage-caption").textContent = body.faces.length
    ? `${body.faces.length} face(s) found.`
    : "No face found in this picture.";
  renderFaces(body.faces, body.model);
}

function drawBoxes(faces, width, height) {
  const boxes = faces.map((face, index) => {
    const box = element("div", { class: "face-box", "data-testid": "face-box" });
    Object.assign(box.style, boxStyle(face.box, width, height));
    const colour = BOX_COLOURS[(face.track_id ?? index) % BOX_COLOURS.length];
    box.style.borderColor = colour;
    const caption = element("span", { class: "face-label" }, faceCaption(face, index));
    caption.style.background = colour;
    box.append(caption);
    return box;
  });
  $("overlay").replaceChildren(...boxes);
}

function renderFaces(faces, model) {
  $("faces").replaceChildren(...faces.map((face, index) => faceCard(face, index, model)));
}

function faceCard(face, index, model) {
  const card = element("article", { class: "face-card", "aria-label": `Face ${faceCaption(face, index)}` });
  card.style.borderTopColor = BOX_COLOURS[(face.track_id ?? index) % BOX_COLOURS.length];
  const who = face.track_id === undefined ? `Face ${index + 1}` : `Person #${face.track_id}`;
  card.append(element("h4", {}, `${who}: ${face.expression.label} ${percent(face.expression.probability)}`));
  const b = face.box;
  card.append(element("p", { class: "hint" }, `box ${b.x1.toFixed(0)},${b.y1.toFixed(0)} – ${b.x2.toFixed(0)},${b.y2.toFixed(0)}, detection ${percent(face.detection_score)}`));
  card.append(expressionBars(face));
  card.append(similarityTable(face, model));
  return card;
}

function expressionBars(face) {
  const list = element("ul", { class: "bars", "aria-label": "Expression probabilities" });
  for (const item of ranked(face.expressions)) {
    const row = element("li", item.label === face.expression.label ? { class: "top" } : {});
    const bar = element("div", { class: "bar", role: "presentation" });
    const fill = element("div");
    fill.style.width = `${(100 * item.probability).toFixed(1)}%`;
    bar.append(fill);
    row.append(element("span", {}, item.label), bar, element("span", {}, percent(item.probability)));
    list.append(row);
  }
  return list;
}

function similarityHow(item, model) {
  // Older servers send neither method nor encoder: then the scores are the model's own cosine.
  const encoder = item.encoder ? `, text encoder ${item.encoder}` : "";
  if (item.method === "conse") return `zero-shot (ConSE over the expression probabilities; ${model.name} has no text side)${encoder}`;
  return `cosine of ${model.name}'s image and text embeddings${encoder}`;
}

function similarityTable(face, model) {
  if (!face.text_similarity.length) {
    const why = model.prompts.length ? "none returned" : `${model.name} has no text side`;
    return element("p", { class: "hint" }, `Text similarity: ${why}.`);
  }
  const table = element("table");
  table.append(element("caption", {}, `Text similarity per prompt: ${similarityHow(face.text_similarity[0], model)}`));
  const head = element("tr");
  head.append(element("th", { scope: "col" }, "prompt"), element("th", { scope: "col" }, "score"));
  table.append(head);
  for (const item of face.text_similarity) {
    const row = element("tr", item.source === "caller" ? { class: "caller" } : {});
    const prompt = item.source === "caller" ? `${item.prompt} (yours, ${item.method || "conse"})` : item.prompt;
    row.append(element("td", {}, prompt), element("td", {}, item.score.toFixed(3)));
    table.append(row);
  }
  return table;
}

// ------------------------------------------------------------------------------------------- clips
function renderClip(body) {
  $("clip-section").hidden = false;
  $("overlay").replaceChildren();
  $("faces").replaceChildren();
  const video = $("clip");
  showPicture(freshObjectUrl(page.file), true);
  video.onerror = () => showNoPlayback(body);
  if (page.file.type && !video.canPlayType(page.file.type)) showNoPlayback(body);
  $("stage-caption").textContent = "Click a point on a chart below to see that frame.";
  renderSummary(body);
  const series = seriesByTrack(body.timeline);
  $("tracks").replaceChildren(...(body.tracks || []).map((track) => trackChart(track, series.get(track.track_id) || [], body)));
  if (!(body.tracks || []).length) $("tracks").append(element("p", {}, "Nobody was found in this clip."));
}

function showNoPlayback(body) {
  // Chromium cannot play every container the API reads (AVI, say): show the frame's geometry instead.
  const panel = $("no-playback");
  $("clip").hidden = true;
  panel.hidden = false;
  panel.style.aspectRatio = `${body.video.width} / ${body.video.height}`;
  panel.style.width = `min(100%, ${body.video.width}px)`;
  const sheet = page.fromJob ? "" : ", and the contact sheet below shows the frames themselves";
  panel.textContent = `This browser cannot play this clip (${body.video.container}, ${body.video.codec}): the boxes of the frame you pick are drawn on this ${body.video.width}×${body.video.height} outline of it${sheet}.`;
}

function renderSummary(body) {
  const { summary, video } = body;
  const rows = [
    ["Clip", `${video.container}, ${video.codec}, ${video.width}×${video.height}, ${seconds(video.duration_s)}`],
    ["Frames", `${video.frames_analysed} analysed of ${video.frames_decoded} decoded${video.truncated ? " (truncated)" : ""}`],
    ["People", String(summary.people)],
    ["Faces", String(summary.faces)],
    ["Dominant", summary.dominant.label ? `${summary.dominant.label} in ${percent(summary.dominant.share)} of face-frames` : "none"],
  ];
  const list = $("summary");
  list.replaceChildren();
  for (const [term, value] of rows) list.append(element("dt", {}, term), element("dd", {}, value));
}

function trackChart(track, all, body) {
  const labels = body.model.labels;
  const { points, step } = thinPoints(all, CHART_MAX_POINTS);
  const box = element("section", { class: "track", "data-testid": "track-chart" });
  const dynamic = `${track.dynamic_expression.label} ${percent(track.dynamic_expression.probability)}`;
  box.append(element("h4", {}, `Person #${track.track_id}, ${seconds(track.first_s)} – ${seconds(track.last_s)}`));
  // Older servers have no dynamic_method: their dynamic_expression was the spatio-temporal model's.
  const source = track.dynamic_method || `${body.video_model.name}${body.video_model.trained ? "" : ", untrained"}`;
  const stt = track.stt_expression ? ` Spatio-temporal model (${body.video_model.name}${body.video_model.trained ? "" : ", untrained"}): ${track.stt_expression.label} ${percent(track.stt_expression.probability)}.` : "";
  box.append(element("p", {}, `Per-frame top expression: ${track.dominant.label ?? "none"} in ${percent(track.dominant.share)} of frames. Over the clip (${source}): ${dynamic}.${stt}`));
  if (step > 1) box.append(element("p", { "data-testid": "chart-thinned" }, `Chart: ${points.length} of this person's ${all.length} analysed frames, 1 in ${step.toFixed(1)} (the answer's timeline has every one).`));
  box.append(chartSvg(track, points, labels, body), legend(labels));
  const segments = segmentsOf(track);
  if (segments.length) box.append(segmentList(segments));
  return box;
}

function chartSvg(track, points, labels, body) {
  const size = { width: 720, height: 220, pad: 28, t0: 0, t1: Math.max(body.video.duration_s, 0.01) };
  const scale = chartScale(size);
  const svg = svgElement("svg", { viewBox: `0 0 ${size.width} ${size.height}`, role: "group", "aria-label": `Expression probabilities of person #${track.track_id} over time` });
  svg.append(...axes(scale, size));
  for (const segment of segmentsOf(track)) svg.append(segmentBand(segment, scale, size, labels));
  for (const [label, coordinates] of Object.entries(seriesLines(points, labels, scale))) {
    const style = lineStyle(label, labels);
    svg.append(svgElement("polyline", { points: coordinates, fill: "none", stroke: style.colour, "stroke-width": 2, "stroke-dasharray": style.dash }));
  }
  const markers = points.map((point, index) => pointMarker(point, index, scale, labels));
  svg.append(...markers);
  wirePoints(markers, points, track);
  return svg;
}

function axes(scale, size) {
  const nodes = [];
  for (const p of [0, 0.5, 1]) {
    nodes.push(svgElement("line", { x1: size.pad, x2: size.width - size.pad, y1: scale.y(p), y2: scale.y(p), stroke: "#bbb" }));
    const label = svgElement("text", { x: 2, y: scale.y(p) + 4, "font-size": 11, fill: "#333" });
    label.textContent = p.toFixed(1);
    nodes.push(label);
  }
  for (const t of [size.t0, (size.t0 + size.t1) / 2, size.t1]) {
    const label = svgElement("text", { x: scale.x(t), y: size.height - 8, "font-size": 11, fill: "#333", "text-anchor": "middle" });
    label.textContent = seconds(t);
    nodes.push(label);
  }
  return nodes;
}

function segmentBand(segment, scale, size, labels) {
  const rect = svgElement("rect", {
    x: scale.x(segment.start), y: size.height - size.pad + 2, height: 6,
    width: Math.max(2, scale.x(segment.end) - scale.x(segment.start)), fill: lineStyle(segment.label, labels).colour,
  });
  const title = svgElement("title");
  title.textContent = `${segment.label}: ${seconds(segment.start)} – ${seconds(segment.end)}`;
  rect.append(title);
  return rect;
}

function pointMarker(point, index, scale, labels) {
  const circle = svgElement("circle", {
    cx: scale.x(point.t), cy: scale.y(point.top.probability), r: 5, class: "point",
    fill: lineStyle(point.top.label, labels).colour, tabindex: index === 0 ? 0 : -1, role: "button",
    "aria-label": `${seconds(point.t)}, frame ${point.frameIndex}: ${point.top.label} ${percent(point.top.probability)}`,
    "data-testid": "track-point",
  });
  const title = svgElement("title");
  title.textContent = circle.getAttribute("aria-label");
  circle.append(title);
  return circle;
}

function wirePoints(markers, points, track) {
  // Roving tabindex: one tab stop per chart, arrow keys walk its points.
  const select = (index) => {
    markers.forEach((marker, i) => {
      marker.setAttribute("tabindex", i === index ? "0" : "-1");
      marker.classList.toggle("selected", i === index);
    });
    markers[index].focus();
    showFrame(points[index].frameIndex, track.track_id);
  };
  markers.forEach((marker, index) => {
    marker.addEventListener("click", () => select(index));
    marker.addEventListener("keydown", (event) => {
      if (event.key === "Enter" || event.key === " ") {
        event.preventDefault();
        select(index);
        return;
      }
      const next = nextPoint(event.key, index, markers.length);
      if (next !== null) {
        event.preventDefault();
        select(next);
      }
    });
  });
}

function showFrame(frameIndex, trackId) {
  const body = page.response;
  const frame = body.timeline.find((candidate) => candidate.frame_index === frameIndex);
  $("stage-caption").textContent = `Frame ${frame.frame_index} at ${seconds(frame.timestamp_s)} (person #${trackId} selected): ${frame.faces.length} face(s).`;
  $("stage-caption").setAttribute("data-frame-time", String(frame.timestamp_s));
  drawBoxes(frame.faces, body.video.width, body.video.height);
  renderFaces(frame.faces, body.model);
  const video = $("clip");
  if (!video.hidden && video.readyState > 0) {
    video.pause();
    video.currentTime = frame.timestamp_s;
  }
}

function legend(labels) {
  const list = element("ul", { class: "legend", "aria-label": "Legend" });
  for (const label of labels) {
    const style = lineStyle(label, labels);
    const swatch = svgElement("svg", { viewBox: "0 0 28 10", "aria-hidden": "true" });
    swatch.append(svgElement("line", { x1: 0, x2: 28, y1: 5, y2: 5, stroke: style.colour, "stroke-width": 3, "stroke-dasharray": style.dash }));
    const item = element("li");
    item.append(swatch, ` ${label}`);
    list.append(item);
  }
  return list;
}

function segmentList(segments) {
  const list = element("ul", { class: "segments", "aria-label": "Segments" });
  for (const segment of segments) {
    list.append(element("li", {}, `${seconds(segment.start)} – ${seconds(segment.end)}: ${segment.label}`));
  }
  return list;
}

async function showContactSheet() {
  if (!page.file) return;
  setStatus("Drawing the contact sheet on the server …");
  const response = await post("/annotate", page.file, []);
  if (!response.ok) {
    showFailure(response.status, await response.text());
    return;
  }
  $("sheet").src = URL.createObjectURL(await response.blob());
  $("sheet").hidden = false;
  setStatus("Contact sheet ready.");
}

// ------------------------------------------------------------------------------------------- inputs
function choose(file) {
  if (file) analyse(file).catch((error) => showError(`the request failed: ${error.message}`));
}

function wireDropZone() {
  const zone = $("drop-zone");
  zone.addEventListener("click", () => $("file-input").click());
  zone.addEventListener("keydown", (event) => {
    if (event.key === "Enter" || event.key === " ") {
      event.preventDefault();
      $("file-input").click();
    }
  });
  zone.addEventListener("dragover", (event) => {
    event.preventDefault();
    zone.classList.add("dragging");
  });
  zone.addEventListener("dragleave", () => zone.classList.remove("dragging"));
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("dragging");
    choose(event.dataTransfer.files[0]);
  });
}

function wireWebcam() {
  // getUserMedia exists only in secure contexts (https, localhost): elsewhere the button stays hidden.
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) return;
  $("webcam").hidden = false;
  const video = $("webcam-video");
  $("webcam-start").addEventListener("click", async () => {
    try {
      video.srcObject = await navigator.mediaDevices.getUserMedia({ video: true });
      await video.play();
      video.hidden = false;
      $("webcam-snap").hidden = false;
    } catch (error) {
      showError(`the webcam is not available: ${error.message}`);
    }
  });
  $("webcam-snap").addEventListener("click", () => {
    const canvas = element("canvas", { width: video.videoWidth, height: video.videoHeight });
    canvas.getContext("2d").drawImage(video, 0, 0);
    for (const stream of video.srcObject.getTracks()) stream.stop();
    video.hidden = true;
    $("webcam-snap").hidden = true;
    canvas.toBlob((blob) => choose(new File([blob], "webcam.jpg", { type: "image/jpeg" })), "image/jpeg", 0.92);
  });
}

async function loadModels() {
  try {
    const response = await fetch("/v1/models", { headers: authHeaders($("key-input").value) });
    if (!response.ok) return;
    const select = $("model-select");
    const options = imageModels(await response.json()).map((model) =>
      element("option", { value: model.name }, modelOption(model)),
    );
    select.replaceChildren(select.options[0], ...options); // keep "Server default", refresh the rest
  } catch {
    // The page still works with the server's default model.
  }
}

function main() {
  $("file-input").addEventListener("change", (event) => choose(event.target.files[0]));
  $("upload-form").addEventListener("submit", (event) => {
    event.preventDefault();
    if (page.file) choose(page.file);
    else showError("choose a picture or a clip first");
  });
  $("sheet-button").addEventListener("click", () => showContactSheet().catch((error) => showError(error.message)));
  $("job-cancel").addEventListener("click", () =>
    cancelCurrentJob().catch((error) => (error instanceof JobError ? showFailure(error.status, error.text) : showError(error.message))),
  );
  // A key typed after a 401 also unlocks the model list.
  $("key-input").addEventListener("change", loadModels);
  wireDropZone();
  wireWebcam();
  loadModels();
}

main();
