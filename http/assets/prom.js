// The Prometheus text format (what /metrics answers), parsed into samples
// and summed by name.

// Prometheus text format: `name{l="v",...} value [timestamp]`; label values
// may hold escaped quotes, commas and braces, hence a small scanner.
export function parseProm(text) {
  const samples = [];
  const types = new Map();
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (!line) continue;
    if (line.startsWith('#')) {
      const m = /^#\s*TYPE\s+(\S+)\s+(\S+)/.exec(line);
      if (m) types.set(m[1], m[2]);
      continue;
    }
    const sample = parseSampleLine(line);
    if (sample) samples.push(sample);
  }
  return { samples, types };
}

function parseSampleLine(line) {
  const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)/.exec(line);
  if (!m) return null;
  const name = m[1];
  let i = name.length;
  const labels = {};
  if (line[i] === '{') {
    i++;
    while (i < line.length && line[i] !== '}') {
      const lm = /^\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"/.exec(line.slice(i));
      if (!lm) return null;
      i += lm[0].length;
      let v = '';
      while (i < line.length && line[i] !== '"') {
        if (line[i] === '\\' && i + 1 < line.length) {
          const c = line[++i];
          v += c === 'n' ? '\n' : c;
        } else v += line[i];
        i++;
      }
      labels[lm[1]] = v;
      i++; // closing quote
      while (line[i] === ',' || line[i] === ' ') i++;
    }
    i++; // closing brace
  }
  const word = line.slice(i).trim().split(/\s+/)[0];
  const special = { '+Inf': Infinity, Inf: Infinity, '-Inf': -Infinity, NaN };
  const value = word in special ? special[word] : Number(word);
  return word === '' || (Number.isNaN(value) && word !== 'NaN') ? null : { name, labels, value };
}

// The sum of the samples of one metric whose labels pass filter; null when
// there are none.
export const sumOf = (samples, name, filter = () => true) => {
  const xs = samples.filter((x) => x.name === name && filter(x.labels));
  return xs.length ? xs.reduce((a, x) => a + x.value, 0) : null;
};
