// Formatting of numbers, bytes, durations, times and peer ids for display.

export const DASH = '—';
export const isNum = (x) => typeof x === 'number' && Number.isFinite(x);

export function fmtBytes(n) {
  if (!isNum(n)) return DASH;
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
  let i = 0;
  let v = Math.abs(n);
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i++; }
  const digits = i === 0 ? 0 : v < 10 ? 2 : v < 100 ? 1 : 0;
  return `${n < 0 ? '-' : ''}${v.toFixed(digits)} ${units[i]}`;
}

export function fmtMs(ms) {
  if (!isNum(ms)) return DASH;
  if (ms < 1) return `${ms.toFixed(2)} ms`;
  if (ms < 10) return `${ms.toFixed(1)} ms`;
  if (ms < 1000) return `${Math.round(ms)} ms`;
  const sec = ms / 1000;
  if (sec < 60) return `${sec.toFixed(sec < 10 ? 2 : 1)} s`;
  return fmtSecs(sec);
}

// Long durations (uptime, old jobs) read better as the two largest units.
export function fmtSecs(secs) {
  if (!isNum(secs)) return DASH;
  const t = Math.floor(secs);
  const d = Math.floor(t / 86400), hr = Math.floor(t / 3600) % 24;
  const m = Math.floor(t / 60) % 60, sec = t % 60;
  if (d) return `${d} d ${hr} h`;
  if (hr) return `${hr} h ${m} min`;
  if (m) return `${m} min ${sec} s`;
  return `${sec} s`;
}

export function fmtNum(n, digits = 0) {
  if (!isNum(n)) return DASH;
  return n.toLocaleString('en-US', { maximumFractionDigits: digits });
}

// Rates are small fractions as often as thousands; keep ~3 significant digits.
export function fmtRate(n) {
  if (!isNum(n)) return DASH;
  const a = Math.abs(n);
  return fmtNum(n, a >= 100 ? 0 : a >= 10 ? 1 : 2);
}

export function fmtTime(ms) {
  if (!isNum(ms) || ms <= 0) return DASH;
  const d = new Date(ms);
  const p = (x) => String(x).padStart(2, '0');
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())} ` +
    `${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`;
}

// Peer ids all start with the same multihash prefix (12D3KooW...); their
// tail is what tells them apart.
export const shortId = (id) => (typeof id === 'string' && id.length > 10 ? `…${id.slice(-8)}` : String(id ?? DASH));
