// DOM helpers: lookups, element builders and small event wiring.

export const $ = (sel, root = document) => root.querySelector(sel);
export const $$ = (sel, root = document) => Array.from(root.querySelectorAll(sel));

// Builds DOM with text nodes only, so nothing the server sends (names,
// metadata, errors) is ever parsed as HTML.
function build(node, attrs, children) {
  for (const [k, v] of Object.entries(attrs)) {
    if (v !== null && v !== undefined && v !== false) node.setAttribute(k, v === true ? '' : v);
  }
  for (const c of children.flat()) {
    if (c !== null && c !== undefined) node.append(c instanceof Node ? c : String(c));
  }
  return node;
}
export const h = (tag, attrs = {}, ...children) => build(document.createElement(tag), attrs, children);
export const s = (tag, attrs = {}, ...children) =>
  build(document.createElementNS('http://www.w3.org/2000/svg', tag), attrs, children);

export const setText = (sel, text) => { const n = $(sel); if (n) n.textContent = text; };

// Runs fn when Enter is pressed in the field sel.
export function onEnter(sel, fn) {
  $(sel).addEventListener('keydown', (e) => { if (e.key === 'Enter') { e.preventDefault(); fn(); } });
}
