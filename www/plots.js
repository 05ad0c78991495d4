// @ts-check
// Plots of a run, with their axes: its schedule, and its step sweep.

const NS = "http://www.w3.org/2000/svg";

/** @param {string} name @param {Record<string, string | number>} attributes @param {string} [text] */
function svg(name, attributes, text) {
  const element = document.createElementNS(NS, name);
  for (const [key, value] of Object.entries(attributes)) element.setAttribute(key, String(value));
  if (text !== undefined) element.textContent = text;
  return element;
}

/**
 * Axes in a box from (left, top) to (right, bottom): ticks with their labels on both, and the
 * axis titles. `xTicks`/`yTicks` are [position in the box, label].
 * @param {{ left: number, top: number, right: number, bottom: number }} box
 * @param {[number, string][]} xTicks @param {[number, string][]} yTicks
 * @param {string} xTitle @param {string} yTitle
 */
function axes({ left, top, right, bottom }, xTicks, yTicks, xTitle, yTitle) {
  const parts = [
    svg("line", { class: "axis", x1: left, y1: bottom, x2: right, y2: bottom }),
    svg("line", { class: "axis", x1: left, y1: top, x2: left, y2: bottom }),
  ];
  for (const [x, label] of xTicks) {
    parts.push(svg("line", { class: "axis", x1: x, y1: bottom, x2: x, y2: bottom + 3 }));
    parts.push(svg("text", { class: "tick", x, y: bottom + 13, "text-anchor": "middle" }, label));
  }
  for (const [y, label] of yTicks) {
    parts.push(svg("line", { class: "axis", x1: left - 3, y1: y, x2: left, y2: y }));
    parts.push(svg("text", { class: "tick", x: left - 5, y: y + 3, "text-anchor": "end" }, label));
  }
  parts.push(svg("text", { class: "axis-title", x: (left + right) / 2, y: bottom + 26, "text-anchor": "middle" }, xTitle));
  parts.push(svg("text", { class: "axis-title", x: 10, y: (top + bottom) / 2, "text-anchor": "middle", transform: `rotate(-90 10 ${(top + bottom) / 2})` }, yTitle));
  return parts;
}

/**
 * The run's timesteps: step on x, timestep (noise level) on y, the scheduler's plain
 * schedule and LINA's reallocated one. A warp above 1 lifts the curve: more of the run is
 * spent at high noise, where the layout forms.
 * @param {SVGSVGElement} element
 * @param {{ plain: number[], planned: number[] }} schedule
 */
export function plotSchedule(element, { plain, planned }, maxTimestep = 1000) {
  const [width, height] = [320, 190];
  const box = { left: 46, top: 22, right: width - 10, bottom: height - 34 };
  element.setAttribute("viewBox", `0 0 ${width} ${height}`);
  const n = Math.max(plain.length, planned.length);
  const x = (/** @type {number} */ i) => box.left + (i / Math.max(1, n - 1)) * (box.right - box.left);
  const y = (/** @type {number} */ t) => box.bottom - (t / maxTimestep) * (box.bottom - box.top);
  const line = (/** @type {number[]} */ list, /** @type {string} */ className) =>
    svg("polyline", { class: className, points: list.map((t, i) => `${x(i).toFixed(1)},${y(t).toFixed(1)}`).join(" ") });
  const steps = [...new Set([0, Math.floor((n - 1) / 2), n - 1])].filter((i) => i >= 0);
  element.replaceChildren(
    ...axes(
      box,
      steps.map((i) => [x(i), String(i + 1)]),
      [0, maxTimestep / 2, maxTimestep].map((t) => [y(t), String(t)]),
      "step",
      "timestep",
    ),
    line(plain, "plain"),
    line(planned, "planned"),
    svg("text", { class: "tick", x: box.right, y: 12, "text-anchor": "end" }, "grey dashed: plain · blue: with the plan"),
  );
}

/**
 * The step sweep as bars: one per step, as tall as the image changed when only that step was
 * guided, on an axis in 1/255 that starts at a full level (so that changes far below one
 * level show as the slivers they are), green where every check passed.
 * @param {SVGSVGElement} element
 * @param {{ points: { change: number, passed: number, checks: number }[] }} sweep
 */
export function plotSweep(element, sweep) {
  const [width, height] = [320, 170];
  const box = { left: 46, top: 14, right: width - 10, bottom: height - 34 };
  element.setAttribute("viewBox", `0 0 ${width} ${height}`);
  const top = Math.max(1, ...sweep.points.map((p) => p.change));
  const n = Math.max(1, sweep.points.length);
  const slot = (box.right - box.left) / n;
  const y = (/** @type {number} */ v) => box.bottom - (v / top) * (box.bottom - box.top);
  const bars = sweep.points.map((point, i) => {
    const h = box.bottom - y(point.change);
    return svg("rect", {
      x: (box.left + i * slot + slot * 0.1).toFixed(1),
      width: (slot * 0.8).toFixed(1),
      y: (box.bottom - h).toFixed(1),
      height: h.toFixed(1),
      class: point.passed === point.checks ? "passing" : "failing",
    });
  });
  const ticks = [...new Set([0, Math.floor((n - 1) / 2), n - 1])].map((i) => /** @type {[number, string]} */ ([box.left + (i + 0.5) * slot, String(i + 1)]));
  element.replaceChildren(
    ...axes(box, ticks, [[y(0), "0"], [y(top), top.toFixed(top < 10 ? 1 : 0)]], "step guided", "change (/255)"),
    ...bars,
  );
}
