// The dashboard: polls /stats and draws its figures as SVG charts, tiles and bars.
import { api, el } from "./api.js";

const SVG = "http://www.w3.org/2000/svg";
const WIDTH = 600, HEIGHT = 240, LEFT = 56, RIGHT = 10, TOP = 12, BOTTOM = 30;
const refreshSeconds = Number(document.getElementById("dashboard").dataset.refreshSeconds);

function svg(tag, attributes, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, value);
  if (text !== undefined) node.textContent = text;
  return node;
}

function niceMax(value) {
  if (!(value > 0)) return 1;
  const power = 10 ** Math.floor(Math.log10(value));
  return [1, 2, 2.5, 5, 10].map((m) => m * power).find((m) => m >= value);
}

function format(value) {
  if (value === null || value === undefined) return "–";
  if (value >= 100) return Math.round(value).toLocaleString("en");
  return Number(value.toPrecision(3)).toLocaleString("en");
}

// Draw each series as a polyline over the buckets; a null value (no task) breaks the line.
function lineChart(chart, legend, times, series) {
  const max = niceMax(Math.max(0, ...series.flatMap((s) => s.values.filter((v) => v !== null))));
  const plotW = WIDTH - LEFT - RIGHT, plotH = HEIGHT - TOP - BOTTOM;
  const x = (i) => LEFT + (times.length > 1 ? (i * plotW) / (times.length - 1) : 0);
  const y = (v) => TOP + plotH - (v / max) * plotH;
  const nodes = [];
  for (const fraction of [0, 0.5, 1]) {
    const level = y(max * fraction);
    nodes.push(svg("line", { class: "axis", x1: LEFT, x2: WIDTH - RIGHT, y1: level, y2: level }));
    nodes.push(svg("text", { class: "tick", x: LEFT - 6, y: level + 4, "text-anchor": "end" }, format(max * fraction)));
  }
  for (const i of [0, Math.floor((times.length - 1) / 2), times.length - 1]) {
    const anchor = i === 0 ? "start" : i === times.length - 1 ? "end" : "middle";
    nodes.push(svg("text", { class: "tick", x: x(i), y: HEIGHT - 8, "text-anchor": anchor }, times[i].slice(11, 19)));
  }
  series.forEach((s, n) => {
    let points = [];
    const flush = () => {
      if (points.length > 1) nodes.push(svg("polyline", { class: `series series-${n + 1}`, "data-series": s.name,
        points: points.join(" ") }));
      points = [];
    };
    s.values.forEach((v, i) => (v === null ? flush() : points.push(`${x(i).toFixed(1)},${y(v).toFixed(1)}`)));
    flush();
    // A dot on each value that stands alone, which a line cannot show.
    s.values.forEach((v, i) => {
      const alone = (i === 0 || s.values[i - 1] === null) && (i === s.values.length - 1 || s.values[i + 1] === null);
      if (v !== null && alone) nodes.push(svg("circle", { class: `dot series-${n + 1}`, "data-series": s.name, cx: x(i), cy: y(v), r: 4 }));
    });
  });
  chart.replaceChildren(...nodes);
  legend.replaceChildren(...series.map((s, n) =>
    el("li", {}, el("span", { class: `swatch series-${n + 1}`, "aria-hidden": "true" }), s.name)));
}

function setNumber(id, value) {
  document.getElementById(id).textContent = value === null || value === undefined ? "–" : value.toLocaleString("en");
}

function render(stats) {
  const seconds = stats.bucket_seconds;
  const buckets = stats.buckets;
  const times = buckets.map((b) => b.start);
  const rate = (n) => n / seconds;
  lineChart(document.getElementById("throughput-chart"), document.getElementById("throughput-legend"), times, [
    { name: "submitted", values: buckets.map((b) => rate(b.submitted)) },
    { name: "finished", values: buckets.map((b) => rate(b.finished)) },
    { name: "failed", values: buckets.map((b) => rate(b.failed)) },
  ]);
  lineChart(document.getElementById("latency-chart"), document.getElementById("latency-legend"), times, [
    { name: "p50", values: buckets.map((b) => b.latency_p50_ms) },
    { name: "p95", values: buckets.map((b) => b.latency_p95_ms) },
  ]);
  const total = (key) => buckets.reduce((sum, b) => sum + b[key], 0);
  const minutes = stats.window_seconds / 60;
  document.getElementById("throughput-summary").textContent =
    `Last ${minutes} minutes, per ${seconds} s: ${total("submitted")} submitted, ${total("finished")} finished, ` +
    `${total("failed")} failed.`;
  const last = [...buckets].reverse().find((b) => b.latency_p50_ms !== null);
  document.getElementById("latency-summary").textContent = last
    ? `Latest: p50 ${format(last.latency_p50_ms)} ms, p95 ${format(last.latency_p95_ms)} ms.`
    : "No task finished in this window.";

  const queue = stats.queue;
  setNumber("tile-ready", queue && queue.ready);
  setNumber("tile-delayed", queue && queue.delayed);
  setNumber("tile-dead", queue && queue.dead_letters);
  setNumber("tile-workers", queue && queue.workers);
  setNumber("tile-scheduled", stats.open_tasks.SCHEDULED);
  setNumber("tile-running", stats.open_tasks.RUNNING);

  const most = Math.max(1, ...stats.failures.map((f) => f.count));
  document.getElementById("failures-window").textContent = `Tasks that failed in the last ${minutes} minutes.`;
  document.getElementById("failures").replaceChildren(...stats.failures.map((f) => {
    const fill = el("span", { class: "fill" });
    fill.style.width = `${(100 * f.count) / most}%`; // CSSOM, which the Content-Security-Policy allows
    return el("li", { class: "bar", "data-error-code": f.error_code },
      el("code", {}, f.error_code), el("span", { class: "track" }, fill), el("span", { class: "count" }, f.count));
  }));
  document.getElementById("failures-empty").hidden = stats.failures.length > 0;

  const problem = queue ? "" : "The broker did not answer: queue figures are unknown.";
  const error = document.getElementById("stats-error");
  error.textContent = problem;
  error.hidden = !problem;
  document.getElementById("updated").textContent =
    `Updated ${stats.generated_at.slice(11, 19)} UTC; refreshes every ${refreshSeconds} s.`;
}

async function refresh() {
  try {
    render(await api.stats());
  } catch (error) {
    const node = document.getElementById("stats-error");
    node.textContent = error.message;
    node.hidden = false;
  } finally {
    setTimeout(refresh, refreshSeconds * 1000);
  }
}

refresh();
