// The error banner: what failed, where, and how many times in a row.

import { $, setText } from './dom.js';

let lastError = { text: '', count: 0 };

export function showError(err) {
  const text = err && err.message ? err.message : String(err);
  // A poll failing every second must not flood the page: repeat the same
  // message with a count instead.
  lastError = text === lastError.text && !$('#error').hidden
    ? { text, count: lastError.count + 1 } : { text, count: 1 };
  setText('#error-text', text);
  setText('#error-context', err && err.context ? `(${err.context})` : '');
  setText('#error-count', lastError.count > 1 ? `×${lastError.count}` : '');
  $('#error').hidden = false;
}

export function hideError() {
  $('#error').hidden = true;
  lastError = { text: '', count: 0 };
}

// Click handlers are async; their failures belong in the banner, not the console.
export const guard = (fn) => async (...args) => {
  try { await fn(...args); } catch (e) { showError(e); }
};
