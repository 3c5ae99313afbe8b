// SVG line charts (the job's work per worker, the metric sparklines) and
// the colours of their lines.

import { s } from './dom.js';
import { isNum, fmtRate } from './format.js';

const PALETTE = ['#2563eb', '#dc2626', '#059669', '#d97706', '#7c3aed', '#db2777', '#0891b2', '#65a30d', '#475569', '#ea580c'];

// Hands out colours in order of first use, so a chart's first lines never
// share one (hashing keys would) and a line keeps its colour as others come.
export function palette() {
  const used = new Map();
  return (key) => {
    if (!used.has(key)) used.set(key, PALETTE[used.size % PALETTE.length]);
    return used.get(key);
  };
}

// Draws series of numbers (null = no sample) into an SVG with a light grid
// and the max of the y axis. Plotted by sample index: every series shares
// the poll clock, so the x axis is time without needing a time scale.
export function drawLines(svg, series, { capacity, yFmt = fmtRate, axes = true, fill = false, minMax = 0, span = '' } = {}) {
  // Drawn in the element's own pixels, so text and strokes are not stretched.
  const W = svg.clientWidth || 300, H = svg.clientHeight || 80;
  svg.setAttribute('viewBox', `0 0 ${W} ${H}`);
  const pad = axes ? { l: 44, r: 10, t: 10, b: span ? 22 : 10 } : { l: 3, r: 5, t: 5, b: 3 };
  const all = series.flatMap((x) => x.values).filter(isNum);
  const max = Math.max(minMax, ...all, 0) || 1;
  const n = Math.max(capacity || 0, ...series.map((x) => x.values.length), 2);
  const X = (i) => pad.l + (i / (n - 1)) * (W - pad.l - pad.r);
  const Y = (v) => H - pad.b - (v / max) * (H - pad.t - pad.b);
  const parts = [];
  if (axes) {
    for (const f of [0, 0.5, 1]) {
      parts.push(s('line', { class: 'grid', x1: pad.l, x2: W - pad.r, y1: Y(max * f), y2: Y(max * f) }));
      parts.push(s('text', { class: 'axis', x: pad.l - 6, y: Y(max * f) + 4, 'text-anchor': 'end' }, yFmt(max * f)));
    }
    if (span) {
      parts.push(s('text', { class: 'axis', x: pad.l, y: H - 6 }, span));
      parts.push(s('text', { class: 'axis', x: W - pad.r, y: H - 6, 'text-anchor': 'end' }, 'now'));
    }
  }
  for (const ser of series) {
    // Right-align so the newest sample is always at the right edge.
    const offset = n - ser.values.length;
    const runs = [[]];
    ser.values.forEach((v, i) => {
      if (isNum(v)) runs[runs.length - 1].push([X(i + offset), Y(v)]);
      else if (runs[runs.length - 1].length) runs.push([]);
    });
    for (const run of runs.filter((r) => r.length)) {
      const pts = run.map(([x, y]) => `${x.toFixed(1)},${y.toFixed(1)}`).join(' ');
      if (fill) {
        const base = H - pad.b;
        const area = `${run[0][0].toFixed(1)},${base} ${pts} ${run[run.length - 1][0].toFixed(1)},${base}`;
        parts.push(s('polygon', { class: 'area', points: area, fill: ser.color }));
      }
      parts.push(s('polyline', { class: 'series', points: pts, stroke: ser.color, 'data-key': ser.key }));
    }
    // The newest value as a dot: visible even while a series has one sample.
    const tail = runs[runs.length - 1];
    if (tail.length && ser.values.length && isNum(ser.values[ser.values.length - 1])) {
      const [x, y] = tail[tail.length - 1];
      parts.push(s('circle', { class: 'head', cx: x, cy: y, r: 3, fill: ser.color }));
    }
  }
  svg.replaceChildren(...parts);
}
