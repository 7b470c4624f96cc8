// Live mode: the webcam → GET /v1/stream; boxes and labels drawn over the video as answers arrive, and one
// expression line per person over the last 30 s. One frame is in flight at a time (the next is sent when
// the answer comes), so the page never builds a backlog; the server drops what it cannot analyse anyway.
// Every value from an answer is drawn or inserted as text, never as HTML.
import { BOX_COLOURS, liveOpening, livePersonText, liveStatus, liveStreamUrl, rememberLive } from "./fer.js";

const $ = (id) => document.getElementById(id);
const WINDOW_S = 30;
const live = { socket: null, stream: null, people: new Map(), started: 0, answers: 0, waiting: false };


function setStatus(text) {
  $("live-status").textContent = text;
}

function opening() {
  return liveOpening({ key: $("key-input").value, model: $("model-select").value });
}

function sendFrame() {
  const video = $("live-video");
  if (!live.socket || live.socket.readyState !== WebSocket.OPEN || !video.videoWidth) return;
  const canvas = document.createElement("canvas");
  canvas.width = video.videoWidth;
  canvas.height = video.videoHeight;
  canvas.getContext("2d").drawImage(video, 0, 0);
  live.waiting = true;
  canvas.toBlob((blob) => {
    if (blob && live.socket && live.socket.readyState === WebSocket.OPEN) live.socket.send(blob);
  }, "image/jpeg", 0.85);
}

function colourOf(trackId) {
  return BOX_COLOURS[(trackId - 1) % BOX_COLOURS.length];
}

function drawBoxes(answer) {
  const video = $("live-video");
  const canvas = $("live-overlay");
  canvas.width = video.clientWidth;
  canvas.height = video.clientHeight;
  const scale = canvas.width / answer.image.width;
  const context = canvas.getContext("2d");
  context.clearRect(0, 0, canvas.width, canvas.height);
  context.lineWidth = 3;
  context.font = "bold 14px system-ui, sans-serif";
  for (const face of answer.faces) {
    const { x1, y1, x2, y2 } = face.box;
    const colour = colourOf(face.track_id);
    context.strokeStyle = colour;
    context.strokeRect(x1 * scale, y1 * scale, (x2 - x1) * scale, (y2 - y1) * scale);
    const label = `${face.track_id} ${face.smoothed_expression.label} ${Math.round(100 * face.smoothed_expression.probability)}%`;
    context.fillStyle = colour;
    context.fillRect(x1 * scale, Math.max(0, y1 * scale - 18), context.measureText(label).width + 8, 18);
    context.fillStyle = "#fff";
    context.fillText(label, x1 * scale + 4, Math.max(14, y1 * scale - 4));
  }
}


function drawLines(now) {
  const canvas = $("live-chart");
  const context = canvas.getContext("2d");
  context.clearRect(0, 0, canvas.width, canvas.height);
  const x = (t) => canvas.width - ((now - t) / WINDOW_S) * canvas.width;
  const y = (p) => canvas.height - 4 - p * (canvas.height - 8);
  context.lineWidth = 2;
  for (const [trackId, points] of live.people) {
    context.strokeStyle = colourOf(trackId);
    context.beginPath();
    points.forEach((point, index) => (index ? context.lineTo(x(point.t), y(point.p)) : context.moveTo(x(point.t), y(point.p))));
    context.stroke();
  }
}

function listPeople(answer) {
  const present = new Map(answer.faces.map((face) => [face.track_id, face]));
  const items = [...present.values()].map((face) => {
    const item = document.createElement("li");
    item.dataset.track = String(face.track_id);
    item.style.borderLeft = `6px solid ${colourOf(face.track_id)}`;
    item.textContent = livePersonText(face);
    return item;
  });
  $("live-people").replaceChildren(...items);
}

function onAnswer(event) {
  const answer = JSON.parse(event.data);
  if (answer.type === "ready") {
    setStatus(liveStatus(answer));
    sendFrame();
    return;
  }
  live.waiting = false;
  if (answer.type === "result") {
    live.answers += 1;
    $("live").dataset.answers = String(live.answers);
    drawBoxes(answer);
    rememberLive(live.people, answer, WINDOW_S);
    drawLines(answer.timestamp_s);
    listPeople(answer);
    setStatus(liveStatus(answer));
  } else if (answer.type === "error") {
    setStatus(liveStatus(answer));
  }
  setTimeout(sendFrame, 0);
}

async function start() {
  try {
    live.stream = await navigator.mediaDevices.getUserMedia({ video: true });
  } catch (error) {
    setStatus(`the webcam is not available: ${error.message}`);
    return;
  }
  const video = $("live-video");
  video.srcObject = live.stream;
  await video.play();
  live.people.clear();
  live.answers = 0;
  live.socket = new WebSocket(liveStreamUrl(location));
  live.socket.addEventListener("open", () => live.socket.send(opening()));
  live.socket.addEventListener("message", onAnswer);
  live.socket.addEventListener("close", (event) => {
    if (live.socket) setStatus(`The stream closed: ${event.code} ${event.reason}`);
  });
  $("live-start").hidden = true;
  $("live-stop").hidden = false;
}

function stop() {
  const socket = live.socket;
  live.socket = null;
  if (socket) socket.close(1000, "stopped");
  for (const track of live.stream ? live.stream.getTracks() : []) track.stop();
  live.stream = null;
  $("live-start").hidden = false;
  $("live-stop").hidden = true;
  setStatus("Stopped.");
}

function main() {
  // getUserMedia exists only in secure contexts (https, localhost): elsewhere live mode stays hidden.
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia || !window.WebSocket) return;
  $("live").hidden = false;
  $("live-start").addEventListener("click", start);
  $("live-stop").addEventListener("click", stop);
}

main();
