// The API token: from the URL's fragment, the session's storage or the form
// that asks for it.

import { $ } from './dom.js';

const TOKEN_KEY = 'p3.token';
let token = null;

export const currentToken = () => token;

// Takes the token from the fragment (#token=...) if there is one, else from
// the session's storage; null when neither has one.
export function readToken() {
  const params = new URLSearchParams(location.hash.slice(1));
  const fromHash = params.get('token');
  if (fromHash) {
    sessionStorage.setItem(TOKEN_KEY, fromHash);
    // The fragment never reaches the server, but it would stay in the
    // history and in any link copied from the address bar.
    history.replaceState(null, '', location.pathname + location.search);
  }
  token = fromHash || sessionStorage.getItem(TOKEN_KEY);
  return token;
}

// The token the user typed into the form.
export function saveToken(t) {
  token = t;
  sessionStorage.setItem(TOKEN_KEY, t);
}

export function showTokenForm() {
  $('#token-form').hidden = false;
  $('#token-input').focus();
}

export function hideTokenForm() {
  $('#token-form').hidden = true;
}
