// Small pieces the panels share: state badges, a progress bar, an SVG sparkline, a uPlot time plot.
import { html } from 'htm/preact';
import { useEffect, useRef } from 'preact/hooks';
import uPlot from 'uplot';
import type { VNode } from 'preact';

const GOOD = new Set(['synchronized', 'up', 'ready', 'split', 'complete', 'copied', 'finished', 'connected']);
const BAD = new Set(['down', 'auth-failed', 'partitioned', 'diverged', 'failed', 'disconnected', 'unknown']);

export function Badge({ text }: { text: string }): VNode {
  const tone = GOOD.has(text) ? 'good' : BAD.has(text) ? 'bad' : 'busy';
  return html`<span class=${`badge ${tone}`} data-state=${text}>${text}</span>`;
}

export function ProgressBar({ percent, label }: { percent: number; label: string }): VNode {
  const clamped = Math.max(0, Math.min(100, percent));
  return html`<div class="progress" title=${label}><progress max="100" value=${clamped}></progress><span>${label}</span></div>`;
}

/** A line over the last values; no axes: the trend at a glance next to the figure. */
export function Sparkline({ values, title }: { values: readonly number[]; title: string }): VNode {
  const width = 120;
  const height = 28;
  if (values.length < 2) return html`<svg class="spark" width=${width} height=${height} role="img" aria-label=${title}><title>${title}</title></svg>`;
  const max = Math.max(...values, 1);
  const step = width / (values.length - 1);
  const points = values.map((v, i) => `${(i * step).toFixed(1)},${(height - 2 - (v / max) * (height - 4)).toFixed(1)}`).join(' ');
  return html`<svg class="spark" width=${width} height=${height} viewBox=${`0 0 ${width} ${height}`} role="img" aria-label=${title}>
    <title>${title}</title><polyline points=${points} fill="none" stroke="currentColor" stroke-width="1.5" /></svg>`;
}

/** A small time plot (uPlot) of one series, e.g. a pair's lag over the last hour. */
export function TimePlot({ t, values, label, unit }: { t: readonly number[]; values: readonly number[]; label: string; unit: string }): VNode {
  const box = useRef<HTMLDivElement>(null);
  const plot = useRef<uPlot | null>(null);
  const data: uPlot.AlignedData = [t.map((ms) => ms / 1000), [...values]];
  useEffect(() => {
    if (!box.current) return undefined;
    plot.current = new uPlot({
      width: 260, height: 90, legend: { show: false }, cursor: { show: true, drag: { x: false, y: false } },
      scales: { x: { time: true }, y: { range: (_u, _min, max) => [0, Math.max(1, max * 1.1)] } },
      axes: [{ size: 24, font: '10px sans-serif', stroke: '#8a94a6' }, { size: 36, font: '10px sans-serif', stroke: '#8a94a6', values: (_u, ticks) => ticks.map((v) => `${v}${unit}`) }],
      series: [{}, { label, stroke: '#3b82f6', width: 1.5, fill: 'rgba(59,130,246,0.12)' }],
    }, data, box.current);
    return () => {
      plot.current?.destroy();
      plot.current = null;
    };
  }, []);
  useEffect(() => { plot.current?.setData(data); });
  return html`<div class="plot" ref=${box} title=${label}></div>`;
}
