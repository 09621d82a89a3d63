// A small SVG line/area chart for the console's history (no library, nothing from a CDN): time on x with labels on
// the wall clock of a given time zone, values on y with a few gridlines, one line per series (an area under it when
// there is one series), gaps where a value is null (no sample: the broker was not there to take it), a legend, and
// a tooltip with every series' value at the bucket under the pointer.
//
//   cloudseatChart.draw(box, {series: [{name, points: [[epochMs, value|null], ...]}], format: (v) => text,
//                             max: number|undefined, timeZone: 'Asia/Shanghai'|undefined, label: 'sessions'})
//
// Styling is by attributes and the console's stylesheet (its content security policy allows no inline styles in
// markup; positions set through the CSSOM are fine).
'use strict';

(() => {
  const SVG = 'http://www.w3.org/2000/svg';
  const W = 640, H = 180;
  const M = { left: 52, right: 12, top: 10, bottom: 24 };
  const PALETTE = ['#3584e4', '#26a269', '#e66100', '#9141ac', '#c01c28', '#1c71d8', '#986a44', '#5e5c64'];

  function el(name, attrs, parent) {
    const node = document.createElementNS(SVG, name);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
    if (parent) parent.appendChild(node);
    return node;
  }

  // 1, 2 or 5 times a power of ten: gridline steps a reader takes in at a glance.
  function niceStep(range, ticks) {
    const raw = range / ticks;
    const p = 10 ** Math.floor(Math.log10(raw));
    for (const m of [1, 2, 5, 10]) if (m * p >= raw) return m * p;
    return 10 * p;
  }

  function clockParts(timeZone) {
    const fmt = new Intl.DateTimeFormat('en-GB', { timeZone, hour: '2-digit', minute: '2-digit', hourCycle: 'h23' });
    return (ms) => {
      const parts = Object.fromEntries(fmt.formatToParts(new Date(ms)).map((p) => [p.type, p.value]));
      return { hour: Number(parts.hour), minute: Number(parts.minute), text: `${parts.hour}:${parts.minute}` };
    };
  }

  function draw(box, options) {
    const series = options.series || [];
    const format = options.format || ((v) => String(v));
    const clock = clockParts(options.timeZone);
    box.replaceChildren();
    box.classList.add('chart');
    const times = series.length ? series[0].points.map((p) => p[0]) : [];
    if (!times.length) {
      const p = document.createElement('p');
      p.className = 'unavailable';
      p.textContent = 'No history yet.';
      box.appendChild(p);
      return;
    }
    const values = series.flatMap((s) => s.points.map((p) => p[1])).filter((v) => v !== null && v !== undefined);
    // An all-zero span still gets a scale of whole units (0 to 1), not gridlines a billionth apart.
    const top = options.max ?? Math.max(0, ...values);
    const step = niceStep(top > 0 ? top : 4, 4);
    const yMax = options.max ?? Math.max(step, Math.ceil(top / step) * step);
    const t0 = times[0], t1 = times[times.length - 1];
    const x = (t) => M.left + ((t - t0) / Math.max(1, t1 - t0)) * (W - M.left - M.right);
    const y = (v) => H - M.bottom - (v / yMax) * (H - M.top - M.bottom);

    const svg = el('svg', { viewBox: `0 0 ${W} ${H}`, width: '100%', role: 'img',
      'aria-label': options.label || 'chart', class: 'chart-svg' }, box);
    // y: gridlines and labels
    for (let v = 0; v <= yMax + 1e-9; v += options.max ? yMax / 4 : step) {
      el('line', { x1: M.left, x2: W - M.right, y1: y(v), y2: y(v), stroke: '#e5e8ef', 'stroke-width': 1 }, svg);
      const label = el('text', { x: M.left - 6, y: y(v) + 4, 'text-anchor': 'end', class: 'tick' }, svg);
      label.textContent = format(v);
    }
    // x: a label every three hours of the wall clock (every hour when the span is short)
    const every = t1 - t0 > 6 * 3600e3 ? 3 : 1;
    for (const t of times) {
      const c = clock(t);
      if (c.minute !== 0 || c.hour % every !== 0) continue;
      el('line', { x1: x(t), x2: x(t), y1: H - M.bottom, y2: H - M.bottom + 4, stroke: '#8b93a1' }, svg);
      const label = el('text', { x: x(t), y: H - 6, 'text-anchor': 'middle', class: 'tick' }, svg);
      label.textContent = c.text;
    }
    el('line', { x1: M.left, x2: W - M.right, y1: H - M.bottom, y2: H - M.bottom, stroke: '#8b93a1' }, svg);

    // series: a path each, broken where a value is missing
    series.forEach((s, i) => {
      const colour = PALETTE[i % PALETTE.length];
      let d = '', area = '', run = [];
      const close = () => {
        if (run.length) area += `M${run[0][0]},${y(0)}L${run.map((p) => p.join(',')).join('L')}L${run[run.length - 1][0]},${y(0)}Z`;
        run = [];
      };
      let shown = 0;
      for (const [t, v] of s.points) {
        if (v === null || v === undefined) { close(); continue; }
        const p = [x(t).toFixed(1), y(v).toFixed(1)];
        d += `${run.length ? 'L' : 'M'}${p[0]},${p[1]}`;
        run.push(p);
        shown += 1;
      }
      close();
      if (series.length === 1 && area) el('path', { d: area, fill: colour, 'fill-opacity': 0.15, stroke: 'none' }, svg);
      // A lone point has no segment to draw: mark it.
      if (shown === 1) {
        const [t, v] = s.points.find((p) => p[1] !== null && p[1] !== undefined);
        el('circle', { cx: x(t), cy: y(v), r: 2.5, fill: colour }, svg);
      }
      el('path', { d, fill: 'none', stroke: colour, 'stroke-width': 1.8, 'stroke-linejoin': 'round',
        class: 'series', 'data-series': s.name, 'data-points': shown }, svg);
    });

    // legend
    const legend = document.createElement('div');
    legend.className = 'legend';
    series.forEach((s, i) => {
      const item = document.createElement('span');
      const swatch = document.createElement('span');
      swatch.className = `swatch swatch-${i % PALETTE.length}`;
      item.append(swatch, s.name);
      legend.appendChild(item);
    });
    box.appendChild(legend);

    // tooltip: the bucket under the pointer, every series' value there
    const tip = document.createElement('div');
    tip.className = 'chart-tip';
    tip.hidden = true;
    box.appendChild(tip);
    const cursor = el('line', { y1: M.top, y2: H - M.bottom, stroke: '#1d2330', 'stroke-opacity': 0.3, visibility: 'hidden' }, svg);
    svg.addEventListener('mousemove', (e) => {
      const rect = svg.getBoundingClientRect();
      const px = ((e.clientX - rect.left) / rect.width) * W;
      const i = Math.max(0, Math.min(times.length - 1,
        Math.round(((px - M.left) / (W - M.left - M.right)) * (times.length - 1))));
      cursor.setAttribute('x1', x(times[i]));
      cursor.setAttribute('x2', x(times[i]));
      cursor.setAttribute('visibility', 'visible');
      tip.replaceChildren();
      const head = document.createElement('div');
      head.className = 'tip-time';
      head.textContent = clock(times[i]).text;
      tip.appendChild(head);
      for (const s of series) {
        const v = s.points[i][1];
        const line = document.createElement('div');
        line.textContent = `${s.name}: ${v === null || v === undefined ? '—' : format(v)}`;
        tip.appendChild(line);
      }
      tip.hidden = false;
      tip.style.left = `${Math.min(e.clientX - box.getBoundingClientRect().left + 12, box.clientWidth - 160)}px`;
      tip.style.top = `${e.clientY - box.getBoundingClientRect().top + 12}px`;
    });
    svg.addEventListener('mouseleave', () => { tip.hidden = true; cursor.setAttribute('visibility', 'hidden'); });
  }

  window.cloudseatChart = { draw, PALETTE };
})();
