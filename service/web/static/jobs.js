// Long videos as jobs (docs/jobs.md): submit, follow, cancel and read back a job through the gateway's
// /v1/jobs API. No DOM here: app.js shows what these report and renders the result with the same code as
// a clip's answer from /predict.
import { JOB_END_STATES, nextPageOffset, resultPageUrl } from "./fer.js";

/** About once a second: a status is one read of the job store (SQLite or Redis) on the server. */
export const POLL_INTERVAL_MS = 1000;
/** Most status polls of one job (12 hours at one a second); past that the page stops following it. */
export const MAX_POLLS = 12 * 3600;

/** A refused exchange: its HTTP status and body, shown like the page's other errors. */
export class JobError extends Error {
  constructor(status, text) {
    super(`the server answered HTTP ${status}`);
    this.status = status;
    this.text = text;
  }
}

async function answer(response) {
  const text = await response.text();
  if (!response.ok) throw new JobError(response.status, text);
  return JSON.parse(text);
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** POST /v1/jobs: the job's first status (202). */
export async function submitJob(url, form, headers) {
  return answer(await fetch(url, { method: "POST", body: form, headers }));
}

/** Polls the job's status until it ends, handing each status to `onStatus`; returns the last one. */
export async function followJob(status, headers, onStatus, intervalMs = POLL_INTERVAL_MS) {
  onStatus(status);
  for (let polls = 0; !JOB_END_STATES.has(status.state); polls += 1) {
    if (polls >= MAX_POLLS) throw new Error(`the job is still ${status.state}; follow it at ${status.status_url}`);
    await sleep(intervalMs);
    status = await answer(await fetch(status.status_url, { headers }));
    onStatus(status);
  }
  return status;
}

/** DELETE /v1/jobs/{id}: the job's status, now cancelled (a finished job is deleted). */
export async function cancelJob(statusUrl, headers) {
  return answer(await fetch(statusUrl, { method: "DELETE", headers }));
}

/** The whole clip response: the first page, with every further page's timeline frames appended. Each
 * page moves the offset forward by at least one frame and stops at the total, so the loop is bounded. */
export async function jobResult(resultUrl, headers) {
  const body = await answer(await fetch(resultUrl, { headers }));
  for (let offset = nextPageOffset(body, 0); offset !== null; ) {
    const page = await answer(await fetch(resultPageUrl(resultUrl, offset), { headers }));
    body.timeline.push(...page.timeline);
    offset = nextPageOffset(page, offset);
  }
  return body;
}
