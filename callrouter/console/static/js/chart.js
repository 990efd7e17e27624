// Calls per day stacked by source: uPlot bars drawn from the JSON block the page names in
// data-chart (no inline script: the data is a <script type="application/json">, never run).
// Each source's bar is drawn as the running total up to it, the last source first, so the
// bars stack; the legend shows each source's own count.
import uPlot from "../vendor/uplot/uPlot.esm.js";

const COLOURS = ["#0b5cad", "#e07b00", "#1f6f3f", "#8a3ffc", "#a4161a", "#007d79",
                 "#6f4e37", "#d02670", "#4a5561", "#b28600"];

function stacked(data) {
  const running = data.days.map(() => 0);
  return data.series.map((series) =>
    series.values.map((value, i) => (running[i] += value)));
}

function draw(holder) {
  const data = JSON.parse(document.getElementById(holder.dataset.chart).textContent);
  const totals = stacked(data);
  const bars = uPlot.paths.bars({ size: [0.7, 48] });
  const series = [{ label: "Day", value: (u, ts) => ts == null ? "" :
      new Date(ts * 1000).toISOString().slice(0, 10) }];
  data.series.forEach((source, n) => series.push({
    label: source.label,
    stroke: COLOURS[n % COLOURS.length],
    fill: COLOURS[n % COLOURS.length],
    paths: bars,
    points: { show: false },
    value: (u, v, si, i) => i == null ? "" : String(source.values[i]),
  }));
  // uPlot draws series in order: the tallest (the full stack) must go first.
  const order = data.series.map((_, n) => n).reverse();
  const plotted = [data.days, ...order.map((n) => totals[n])];
  const ordered = [series[0], ...order.map((n) => series[n + 1])];
  const width = () => Math.max(280, holder.clientWidth);
  const plot = new uPlot({
    width: width(),
    height: 280,
    series: ordered,
    scales: { x: { time: true }, y: { range: (u, min, max) => [0, Math.max(1, max)] } },
    axes: [{}, { label: "calls" }],
  }, plotted, holder);
  holder.dataset.drawn = "true";
  new ResizeObserver(() => plot.setSize({ width: width(), height: 280 })).observe(holder);
}

document.querySelectorAll("[data-chart]").forEach(draw);
