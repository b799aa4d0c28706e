// Small SVG charts for the benchmark report (line charts with linear or log axes, grouped bar charts), written as
// plain SVG text so that they need nothing to render; PNG copies are made when @resvg/resvg-js is installed.
import * as fs from 'node:fs';

export interface Series {
  name: string;
  points: Array<{ x: number; y: number }>;
  /** Dashed, for a baseline. */
  dashed?: boolean;
}

export interface LineChart {
  title: string;
  xLabel: string;
  yLabel: string;
  series: Series[];
  logX?: boolean;
  logY?: boolean;
  formatX?: (value: number) => string;
  formatY?: (value: number) => string;
}

export interface BarChart {
  title: string;
  yLabel: string;
  groups: Array<{ label: string; bars: Array<{ name: string; value: number }> }>;
  formatY?: (value: number) => string;
}

const WIDTH = 720;
const HEIGHT = 420;
const MARGIN = { left: 78, right: 190, top: 44, bottom: 56 };
const COLOURS = ['#1f77b4', '#d62728', '#2ca02c', '#9467bd', '#ff7f0e', '#8c564b'];

const escape = (text: string) => text.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
const compact = (value: number) =>
  Math.abs(value) >= 100 ? value.toFixed(0) : Math.abs(value) >= 10 ? value.toFixed(1) : value.toPrecision(2);

/** Tick values: powers of ten (and 2x, 5x when few) on a log axis, about six round steps on a linear one. */
function ticks(min: number, max: number, log: boolean): number[] {
  if (log) {
    const values: number[] = [];
    for (let exponent = Math.floor(Math.log10(min)); exponent <= Math.ceil(Math.log10(max)); exponent++) {
      for (const factor of Math.ceil(Math.log10(max)) - Math.floor(Math.log10(min)) <= 2 ? [1, 2, 5] : [1]) {
        const value = factor * 10 ** exponent;
        if (value >= min * 0.999 && value <= max * 1.001) values.push(value);
      }
    }
    return values;
  }
  const step = 10 ** Math.floor(Math.log10((max - min) / 5 || 1));
  const nice = [1, 2, 5, 10].map((factor) => factor * step).find((candidate) => (max - min) / candidate <= 7) ?? step * 10;
  const values: number[] = [];
  for (let value = Math.ceil(min / nice) * nice; value <= max + nice * 1e-9; value += nice) values.push(Number(value.toPrecision(12)));
  return values;
}

function frame(title: string, body: string[]): string {
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${WIDTH}" height="${HEIGHT}" viewBox="0 0 ${WIDTH} ${HEIGHT}" ` +
      `font-family="Helvetica, Arial, sans-serif" font-size="12">`,
    `<rect width="${WIDTH}" height="${HEIGHT}" fill="white"/>`,
    `<text x="${MARGIN.left}" y="24" font-size="15" font-weight="bold">${escape(title)}</text>`,
    ...body,
    '</svg>',
    '',
  ].join('\n');
}

function legend(names: Array<{ name: string; dashed?: boolean }>): string[] {
  return names.flatMap(({ name, dashed }, index) => {
    const y = MARGIN.top + 10 + index * 20;
    const x = WIDTH - MARGIN.right + 16;
    return [
      `<line x1="${x}" y1="${y}" x2="${x + 22}" y2="${y}" stroke="${COLOURS[index % COLOURS.length]}" ` +
        `stroke-width="3"${dashed ? ' stroke-dasharray="6 4"' : ''}/>`,
      `<text x="${x + 28}" y="${y + 4}">${escape(name)}</text>`,
    ];
  });
}

export function renderLineChart(chart: LineChart): string {
  const all = chart.series.flatMap((series) => series.points);
  if (all.length === 0) return frame(chart.title, [`<text x="${MARGIN.left}" y="${HEIGHT / 2}">no data</text>`]);
  const xs = all.map((point) => point.x);
  const ys = all.map((point) => point.y);
  const [xMin, xMax] = [Math.min(...xs), Math.max(...xs)];
  let [yMin, yMax] = [Math.min(...ys), Math.max(...ys)];
  if (chart.logY) [yMin, yMax] = [10 ** Math.floor(Math.log10(yMin)), 10 ** Math.ceil(Math.log10(yMax))];
  else [yMin, yMax] = [0, yMax * 1.1];
  const plotW = WIDTH - MARGIN.left - MARGIN.right;
  const plotH = HEIGHT - MARGIN.top - MARGIN.bottom;
  const scale = (value: number, min: number, max: number, log?: boolean) =>
    log ? (Math.log10(value) - Math.log10(min)) / (Math.log10(max) - Math.log10(min) || 1) : (value - min) / (max - min || 1);
  const px = (x: number) => MARGIN.left + scale(x, xMin, xMax, chart.logX) * plotW;
  const py = (y: number) => MARGIN.top + plotH - scale(y, yMin, yMax, chart.logY) * plotH;
  const formatX = chart.formatX ?? compact;
  const formatY = chart.formatY ?? compact;
  const body: string[] = [];
  for (const tick of ticks(yMin, yMax, chart.logY === true)) {
    body.push(`<line x1="${MARGIN.left}" y1="${py(tick)}" x2="${MARGIN.left + plotW}" y2="${py(tick)}" stroke="#e4e4e4"/>`);
    body.push(`<text x="${MARGIN.left - 6}" y="${py(tick) + 4}" text-anchor="end">${escape(formatY(tick))}</text>`);
  }
  for (const x of [...new Set(xs)].sort((a, b) => a - b)) {
    body.push(`<line x1="${px(x)}" y1="${MARGIN.top + plotH}" x2="${px(x)}" y2="${MARGIN.top + plotH + 5}" stroke="#333"/>`);
    body.push(`<text x="${px(x)}" y="${MARGIN.top + plotH + 19}" text-anchor="middle">${escape(formatX(x))}</text>`);
  }
  body.push(`<rect x="${MARGIN.left}" y="${MARGIN.top}" width="${plotW}" height="${plotH}" fill="none" stroke="#333"/>`);
  body.push(`<text x="${MARGIN.left + plotW / 2}" y="${HEIGHT - 12}" text-anchor="middle">${escape(chart.xLabel)}</text>`);
  body.push(`<text transform="translate(18 ${MARGIN.top + plotH / 2}) rotate(-90)" text-anchor="middle">${escape(chart.yLabel)}</text>`);
  chart.series.forEach((series, index) => {
    const colour = COLOURS[index % COLOURS.length];
    const points = [...series.points].sort((a, b) => a.x - b.x);
    body.push(
      `<polyline fill="none" stroke="${colour}" stroke-width="2.5"${series.dashed ? ' stroke-dasharray="6 4"' : ''} ` +
        `points="${points.map((p) => `${px(p.x).toFixed(1)},${py(p.y).toFixed(1)}`).join(' ')}"/>`,
    );
    for (const p of points)
      body.push(
        `<circle cx="${px(p.x).toFixed(1)}" cy="${py(p.y).toFixed(1)}" r="3.5" ` +
          `fill="${colour}"><title>${escape(`${series.name}: ${formatY(p.y)} at ${formatX(p.x)}`)}</title></circle>`,
      );
  });
  body.push(...legend(chart.series));
  return frame(chart.title, body);
}

export function renderBarChart(chart: BarChart): string {
  const names = [...new Set(chart.groups.flatMap((group) => group.bars.map((bar) => bar.name)))];
  const max = Math.max(...chart.groups.flatMap((group) => group.bars.map((bar) => bar.value)), 0) * 1.15 || 1;
  const plotW = WIDTH - MARGIN.left - MARGIN.right;
  const plotH = HEIGHT - MARGIN.top - MARGIN.bottom;
  const py = (value: number) => MARGIN.top + plotH - (value / max) * plotH;
  const formatY = chart.formatY ?? compact;
  const body: string[] = [];
  for (const tick of ticks(0, max, false)) {
    body.push(`<line x1="${MARGIN.left}" y1="${py(tick)}" x2="${MARGIN.left + plotW}" y2="${py(tick)}" stroke="#e4e4e4"/>`);
    body.push(`<text x="${MARGIN.left - 6}" y="${py(tick) + 4}" text-anchor="end">${escape(formatY(tick))}</text>`);
  }
  const groupW = plotW / Math.max(1, chart.groups.length);
  const barW = (groupW * 0.7) / Math.max(1, names.length);
  chart.groups.forEach((group, groupIndex) => {
    const x0 = MARGIN.left + groupIndex * groupW + groupW * 0.15;
    group.bars.forEach((bar) => {
      const index = names.indexOf(bar.name);
      const x = x0 + index * barW;
      body.push(
        `<rect x="${x.toFixed(1)}" y="${py(bar.value).toFixed(1)}" width="${(barW - 3).toFixed(1)}" ` +
          `height="${(MARGIN.top + plotH - py(bar.value)).toFixed(1)}" ` +
          `fill="${COLOURS[index % COLOURS.length]}"><title>${escape(`${group.label}, ${bar.name}: ${formatY(bar.value)}`)}</title></rect>`,
      );
      body.push(
        `<text x="${(x + (barW - 3) / 2).toFixed(1)}" y="${(py(bar.value) - 4).toFixed(1)}" text-anchor="middle" ` +
          `font-size="10">${escape(formatY(bar.value))}</text>`,
      );
    });
    body.push(
      `<text x="${(MARGIN.left + groupIndex * groupW + groupW / 2).toFixed(1)}" y="${MARGIN.top + plotH + 19}" ` +
        `text-anchor="middle">${escape(group.label)}</text>`,
    );
  });
  body.push(`<rect x="${MARGIN.left}" y="${MARGIN.top}" width="${plotW}" height="${plotH}" fill="none" stroke="#333"/>`);
  body.push(`<text transform="translate(18 ${MARGIN.top + plotH / 2}) rotate(-90)" text-anchor="middle">${escape(chart.yLabel)}</text>`);
  body.push(...legend(names.map((name) => ({ name }))));
  return frame(chart.title, body);
}

/** Writes `<base>.svg`, and `<base>.png` when a renderer is installed; returns the files written. */
export function writeChart(base: string, svg: string): string[] {
  fs.writeFileSync(`${base}.svg`, svg);
  const written = [`${base}.svg`];
  try {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const { Resvg } = require('@resvg/resvg-js') as { Resvg: new (svg: string, options?: object) => { render(): { asPng(): Buffer } } };
    fs.writeFileSync(
      `${base}.png`,
      new Resvg(svg, { fitTo: { mode: 'width', value: WIDTH * 2 }, font: { loadSystemFonts: true } }).render().asPng(),
    );
    written.push(`${base}.png`);
  } catch {
    // No renderer installed (it is an optional dependency): the SVG is the chart.
  }
  return written;
}
