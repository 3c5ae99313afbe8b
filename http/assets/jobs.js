// The Jobs tab: submitting a job, the list of jobs, and one job's detail
// (state, progress, counters, work per worker, result), polled while shown.

import { $, $$, h, setText } from './dom.js';
import { DASH, isNum, fmtMs, fmtNum, fmtRate, shortId } from './format.js';
import { api } from './api.js';
import { showError, guard } from './banner.js';
import { Poller } from './poll.js';
import { drawLines, palette } from './charts.js';

const JOB_SAMPLES = 120;
const RATE_WINDOW_MS = 2000;
let shown = false; // whether this tab is the one shown
let jobs = [];
let kindsLoaded = false;
const knownProgress = new Map(); // job id -> last progress seen in its detail
const dismissed = new Set(); // jobs the user closed: not auto-opened again
let job = null; // the open detail: { id, status, polls: [{t, busy: Map}], samples: [Map] }

// A state is a word ("running"); a failure may come as {"failed": reason}.
function stateOf(state) {
  if (typeof state === 'string') return { word: state, reason: '' };
  if (state && typeof state === 'object') {
    const [k, v] = Object.entries(state)[0] || ['unknown', ''];
    return { word: k, reason: typeof v === 'string' ? v : JSON.stringify(v) };
  }
  return { word: String(state ?? 'unknown'), reason: '' };
}
const stateClass = (word) => `state state-${String(word).toLowerCase().split(/\W/)[0]}`;

const argsText = (args) => Object.entries(args || {}).map(([k, v]) => `${k}=${v}`).join(' ');

function jobElapsed(r) {
  const start = r.started_ms || r.submitted_ms;
  if (!isNum(start)) return null;
  return (r.finished_ms || Date.now()) - start;
}

function progressBar(p, cls = 'progress') {
  const frac = Math.min(Math.max(isNum(p) ? p : 0, 0), 1);
  const bar = h('span', { class: 'bar', style: `width:${(frac * 100).toFixed(1)}%` });
  return h('div', { class: cls, 'data-progress': String(frac) }, bar, h('span', { class: 'text' }, `${Math.floor(frac * 100)} %`));
}

async function pollJobs() {
  const list = await api('/api/v1/jobs');
  if (!shown) return; // left meanwhile: do not wake the detail poller
  jobs = (Array.isArray(list) ? list : []).sort((a, b) => (b.submitted_ms || 0) - (a.submitted_ms || 0));
  renderJobs();
  if (!job) {
    const running = jobs.find((r) => stateOf(r.state).word === 'running' && !dismissed.has(r.id));
    if (running) openJob(running.id);
  } else {
    // The detail stops polling once its job is final; a change seen here
    // (a cancel from elsewhere) wakes it up.
    const rec = jobs.find((r) => r.id === job.id);
    const shown = job.status && stateOf((job.status.job || {}).state).word;
    if (rec && shown && stateOf(rec.state).word !== shown) jobDetailPoller.start();
  }
}

function renderJobs() {
  const rows = jobs.map((r) => {
    const st = stateOf(r.state);
    const p = st.word === 'done' ? 1 : knownProgress.get(r.id);
    return h('tr', { class: `job${job && job.id === r.id ? ' selected' : ''}`, 'data-job-id': r.id },
      h('td', { class: 'mono' }, r.id),
      h('td', {}, r.kind),
      h('td', { class: 'mono small' }, argsText(r.args)),
      h('td', {}, h('span', { class: stateClass(st.word), title: st.reason }, st.word)),
      h('td', {}, isNum(p) ? progressBar(p, 'progress mini') : DASH),
      h('td', { class: 'num' }, fmtMs(jobElapsed(r))));
  });
  $('#jobs tbody').replaceChildren(...rows);
  if (!rows.length) $('#jobs tbody').append(h('tr', {}, h('td', { colspan: 6, class: 'muted' }, 'No jobs yet.')));
}

function openJob(id) {
  if (!job || job.id !== id) {
    job = { id, status: null, polls: [], samples: [], color: palette() };
    setText('#job-title', id);
    setText('#job-state', '…');
    setText('#job-result', '');
    $('#job-chart').replaceChildren();
    $('#job-legend').replaceChildren();
  }
  dismissed.delete(id);
  $('#job-detail').hidden = false;
  for (const tr of $$('#jobs tr.job')) tr.classList.toggle('selected', tr.dataset.jobId === id);
  jobDetailPoller.restart();
}

function closeJob() {
  if (job) dismissed.add(job.id);
  job = null;
  jobDetailPoller.stop();
  $('#job-detail').hidden = true;
  for (const tr of $$('#jobs tr.job')) tr.classList.remove('selected');
}

async function pollJobDetail() {
  if (!job) return;
  const id = job.id;
  const status = await api(`/api/v1/jobs/${encodeURIComponent(id)}`);
  if (!job || job.id !== id) return; // another job was opened meanwhile
  job.status = status;
  knownProgress.set(id, status.progress);
  sampleWorkers(status);
  renderJobDetail(status);
  // A final job's status no longer changes: one last render is enough.
  if (stateOf((status.job || {}).state).word !== 'running') jobDetailPoller.stop();
}

// Turns each worker's cumulative busy_ms into a rate: busy ms per ms of
// wall time, i.e. how many cores' worth it computed. Measured over about
// RATE_WINDOW_MS rather than one 500 ms poll because heartbeats (and so
// busy_ms) advance in steps, which would draw as a saw-tooth.
function sampleWorkers(status) {
  const t = performance.now();
  const busy = new Map((status.workers || []).map((w) => [w.worker, (w.stats && w.stats.busy_ms) || 0]));
  job.polls.push({ t, busy });
  while (job.polls.length > 2 && t - job.polls[1].t >= RATE_WINDOW_MS) job.polls.shift();
  const base = job.polls[0];
  if (base.t === t) return; // the first poll: nothing to compare with yet
  const rates = new Map();
  for (const [w, ms] of busy) {
    const before = base.busy.has(w) ? base.busy.get(w) : ms;
    rates.set(w, Math.max(0, (ms - before) / (t - base.t)));
  }
  job.samples.push(rates);
  if (job.samples.length > JOB_SAMPLES) job.samples.shift();
}

function renderJobDetail(status) {
  const rec = status.job || {};
  const st = stateOf(rec.state);
  const stateEl = $('#job-state');
  stateEl.textContent = st.word;
  stateEl.className = stateClass(st.word);
  setText('#job-title', `${rec.id || job.id} · ${rec.kind || ''} ${argsText(rec.args)}`.trim());
  setText('#job-reason', st.reason);

  const frac = Math.min(Math.max(isNum(status.progress) ? status.progress : 0, 0), 1);
  const bar = $('#job-progress');
  bar.dataset.progress = String(frac);
  bar.setAttribute('aria-valuenow', String(Math.floor(frac * 100)));
  $('.bar', bar).style.width = `${(frac * 100).toFixed(1)}%`;
  $('.text', bar).textContent = `${Math.floor(frac * 100)} %`;

  setText('#job-elapsed', fmtMs(status.elapsed_ms));
  setText('#job-tasks', fmtNum(status.tasks));
  setText('#job-steals', fmtNum(status.steals));
  setText('#job-divides', fmtNum(status.divides));
  setText('#job-restarts', fmtNum(status.restarts));
  $('#job-cancel').hidden = st.word !== 'running';
  setText('#job-result', resultText(rec.result));
  renderJobChart();
}

function resultText(result) {
  if (result === null || result === undefined || result === '') return '';
  if (typeof result !== 'string') return JSON.stringify(result, null, 2);
  try { return JSON.stringify(JSON.parse(result), null, 2); } catch { return result; }
}

function renderJobChart() {
  const workers = [...new Set(job.samples.flatMap((m) => [...m.keys()]))].sort();
  const series = workers.map((w) => ({
    key: w,
    color: job.color(w),
    values: job.samples.map((m) => (m.has(w) ? m.get(w) : null)),
  }));
  drawLines($('#job-chart'), series, { capacity: JOB_SAMPLES, yFmt: (v) => v.toFixed(1), minMax: 1, span: `${(JOB_SAMPLES * 0.5).toFixed(0)} s ago` });
  const last = job.samples[job.samples.length - 1] || new Map();
  $('#job-legend').replaceChildren(...workers.map((w) => h('span', { class: 'legend-item', 'data-worker': w, title: w },
    h('i', { class: 'swatch', style: `background:${job.color(w)}` }),
    shortId(w), h('span', { class: 'muted' }, ` ${fmtRate(last.get(w))}`))));
}

async function cancelJob() {
  if (!job) return;
  await api(`/api/v1/jobs/${encodeURIComponent(job.id)}`, { method: 'DELETE' });
  jobDetailPoller.restart();
  await pollJobs();
}

async function loadKinds() {
  const kinds = (await api('/api/v1/kinds')) || [];
  const sel = $('#job-kind');
  sel.replaceChildren(...kinds.map((k) => h('option', { value: k.kind, 'data-about': k.about || '' }, k.kind)));
  kindsLoaded = true;
  showKindHint();
}

function showKindHint() {
  const opt = $('#job-kind').selectedOptions[0];
  setText('#job-kind-about', opt ? opt.dataset.about : 'This node runs no job kinds.');
}

function parseArgs(text) {
  const args = {};
  for (const pair of text.trim().split(/\s+/).filter(Boolean)) {
    const i = pair.indexOf('=');
    if (i <= 0) throw new Error(`arguments are key=value pairs: “${pair}” is not`);
    args[pair.slice(0, i)] = pair.slice(i + 1);
  }
  return args;
}

async function submitJob() {
  const kind = $('#job-kind').value;
  if (!kind) throw new Error('pick a job kind');
  const res = await api('/api/v1/jobs', { method: 'POST', body: { kind, args: parseArgs($('#job-args').value) } });
  if (res && res.id) openJob(res.id);
  await pollJobs();
}

export function wire() {
  $('#jobs').addEventListener('click', (e) => {
    const tr = e.target.closest('tr.job');
    if (tr) openJob(tr.dataset.jobId);
  });
  $('#job-close').addEventListener('click', closeJob);
  $('#job-cancel').addEventListener('click', guard(cancelJob));
  $('#job-kind').addEventListener('change', showKindHint);
  $('#job-form').addEventListener('submit', (e) => { e.preventDefault(); guard(submitJob)(); });
}

const jobsPoller = new Poller(pollJobs, 1000);
const jobDetailPoller = new Poller(pollJobDetail, 500);
export const tab = {
  enter() {
    shown = true;
    if (!kindsLoaded) loadKinds().catch(showError);
    jobsPoller.start();
    if (job) jobDetailPoller.start();
  },
  leave() { shown = false; jobsPoller.stop(); jobDetailPoller.stop(); },
};
