// The fetch helper for the node's HTTP/JSON API (docs/http.md): the token,
// JSON in and out, timeouts, and errors as ApiError.

import { currentToken, showTokenForm } from './token.js';

export class ApiError extends Error {
  constructor(message, status, kind, context) {
    super(message);
    this.status = status;
    this.kind = kind;
    this.context = context;
  }
}

const API_TIMEOUT_MS = 15000;

// options.body (a plain object) is sent as JSON; options.raw returns the
// Response itself for callers that want bytes or text. Calls time out (but
// for options.timeout = 0), so a node that hangs cannot stall a poll loop.
export async function api(path, options = {}) {
  const { raw, body, headers, timeout = API_TIMEOUT_MS, ...rest } = options;
  const init = { ...rest, headers: { ...headers } };
  if (timeout && window.AbortSignal && AbortSignal.timeout) init.signal = AbortSignal.timeout(timeout);
  const token = currentToken();
  if (token) init.headers.Authorization = `Bearer ${token}`;
  if (body !== undefined) {
    init.headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  const context = `${init.method || 'GET'} ${path}`;
  let res;
  try {
    res = await fetch(path, init);
  } catch (e) {
    const why = e.name === 'TimeoutError' ? `no answer within ${timeout / 1000} s` : e.message;
    throw new ApiError(`cannot reach the node (${why})`, 0, 'network', context);
  }
  if (!res.ok) throw await errorOf(res, context);
  if (raw) return res;
  if (res.status === 204) return null;
  const text = await res.text();
  if (!text) return null;
  try { return JSON.parse(text); } catch { return text; }
}

async function errorOf(res, context) {
  let message = `${res.status} ${res.statusText}`.trim();
  let kind = '';
  try {
    const text = await res.text();
    try {
      const j = JSON.parse(text);
      if (j && j.error) { message = j.error; kind = j.kind || ''; }
    } catch {
      if (text.trim()) message = text.trim().split('\n')[0];
    }
  } catch { /* the status line is all there is */ }
  if (res.status === 401) showTokenForm();
  return new ApiError(message, res.status, kind, context);
}

// Encodes each segment of an object name but keeps its '/' separators, so
// the server sees the name's hierarchy as the spec's {name} does.
const encName = (name) => String(name).split('/').map(encodeURIComponent).join('/');
export const encPath = (ns, name) => `${encodeURIComponent(ns)}/${encName(name)}`;

// "ns/name/with/slashes" -> ["ns", "name/with/slashes"].
export function splitPath(path) {
  const i = path.indexOf('/');
  return i < 0 ? [path, ''] : [path.slice(0, i), path.slice(i + 1)];
}
