// Inline SVG charts drawn from the report JSON: horizontal bars and one line plot. No library:
// two chart shapes are not worth one.

import { s } from "./dom.js";

const WIDTH = 560;
const LABEL = 170;
const ROW = 22;

function fmt(value, digits = 3) {
  return Number(value).toPrecision(digits).replace(/\.?0+$/, "");
}

// [{label, value, kind}] as one bar each, scaled to the largest; `unit` follows each value.
export function bars(title, items, unit = "") {
  const max = Math.max(...items.map((i) => i.value), 1e-9);
  const span = WIDTH - LABEL - 70;
  const height = 26 + items.length * ROW;
  const rows = items.map((item, n) => {
    const y = 22 + n * ROW;
    const w = Math.max(1, (item.value / max) * span);
    return s(
      "g",
      { class: item.kind || "" },
      s("text", { x: LABEL - 8, y: y + 14, "text-anchor": "end" }, item.label),
      s("rect", { x: LABEL, y: y + 3, width: w, height: ROW - 7, rx: 2 }),
      s("text", { x: LABEL + w + 6, y: y + 14, class: "value" }, `${fmt(item.value)}${unit}`),
    );
  });
  const heading = s("text", { x: 0, y: 14, class: "title" }, title);
  return s("svg", { viewBox: `0 0 ${WIDTH} ${height}`, class: "chart", role: "img" }, heading, rows);
}

function scale(values, lo, hi) {
  let min = Math.min(...values);
  let max = Math.max(...values);
  if (min === max) (min -= 1), (max += 1);
  return (v) => lo + ((v - min) / (max - min)) * (hi - lo);
}

// Series [{name, kind, points: [[x, y], ...]}] on shared axes: the training curve.
export function lines(title, series, xLabel, yLabel) {
  const all = series.flatMap((one) => one.points);
  const height = 240;
  const x = scale(all.map((p) => p[0]), 50, WIDTH - 10);
  const y = scale(all.map((p) => p[1]), height - 30, 26);
  const ys = all.map((p) => p[1]);
  const paths = series.map((one) =>
    s(
      "g",
      { class: one.kind || "" },
      s("polyline", { points: one.points.map((p) => `${x(p[0])},${y(p[1])}`).join(" ") }),
      one.points.map((p) => s("circle", { cx: x(p[0]), cy: y(p[1]), r: one.dots ? 3 : 0 })),
    ),
  );
  const legend = series.map((one, n) =>
    s("text", { x: WIDTH - 10, y: 14 + n * 14, "text-anchor": "end", class: one.kind }, one.name),
  );
  return s(
    "svg",
    { viewBox: `0 0 ${WIDTH} ${height}`, class: "chart", role: "img" },
    s("text", { x: 0, y: 14, class: "title" }, title),
    s("line", { x1: 50, y1: height - 30, x2: WIDTH - 10, y2: height - 30, class: "axis" }),
    s("line", { x1: 50, y1: 26, x2: 50, y2: height - 30, class: "axis" }),
    s("text", { x: 46, y: 32, "text-anchor": "end" }, fmt(Math.max(...ys))),
    s("text", { x: 46, y: height - 32, "text-anchor": "end" }, fmt(Math.min(...ys))),
    s("text", { x: WIDTH - 10, y: height - 10, "text-anchor": "end" }, xLabel),
    s("text", { x: 4, y: height / 2, class: "muted" }, yLabel),
    paths,
    legend,
  );
}
