// P³ dashboard: a static page over the node's HTTP/JSON API (docs/http.md).
// No framework and no build step: the server embeds these ES modules as they
// are. This one is the entry: the tabs, the token form and start-up.

import { $, $$ } from './dom.js';
import { readToken, saveToken, showTokenForm, hideTokenForm } from './token.js';
import { showError, hideError } from './banner.js';
import { Poller } from './poll.js';
import { pollNode } from './node-status.js';
import * as cluster from './cluster.js';
import * as objects from './objects.js';
import * as jobs from './jobs.js';
import * as metrics from './metrics.js';

// ------------------------------------------------------------------ tabs

const tabs = { // name -> { enter(), leave() }
  cluster: cluster.tab,
  objects: objects.tab,
  jobs: jobs.tab,
  metrics: metrics.tab,
};
let activeTab = 'cluster';

function showTab(name) {
  if (!tabs[name]) return;
  if (tabs[activeTab] && activeTab !== name) tabs[activeTab].leave();
  activeTab = name;
  for (const a of $$('a[data-tab]')) {
    a.classList.toggle('active', a.dataset.tab === name);
    a.setAttribute('aria-selected', String(a.dataset.tab === name));
  }
  for (const sec of $$('section.tab')) sec.hidden = sec.id !== `tab-${name}`;
  tabs[name].enter();
}

// -------------------------------------------------------------- start-up

const nodePoller = new Poller(pollNode, 2000);
let started = false;

function start() {
  hideTokenForm();
  if (started) { nodePoller.restart(); showTab(activeTab); return; }
  started = true;
  nodePoller.start();
  showTab(activeTab);
}

function wire() {
  for (const a of $$('a[data-tab]')) {
    a.addEventListener('click', (e) => { e.preventDefault(); showTab(a.dataset.tab); });
  }
  $('#error-close').addEventListener('click', hideError);

  $('#token-form').addEventListener('submit', (e) => {
    e.preventDefault();
    const t = $('#token-input').value.trim();
    if (!t) return;
    saveToken(t);
    hideError();
    start();
  });

  cluster.wire();
  objects.wire();
  jobs.wire();

  // A last net: nothing should get here, but if it does the user sees it.
  window.addEventListener('unhandledrejection', (e) => { showError(e.reason); e.preventDefault(); });
}

function init() {
  metrics.buildMetricCards();
  wire();
  if (readToken()) start();
  else showTokenForm();
}

if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', init);
else init();
