// Plots of a run: its schedule and its step sweep.
//
// The run's timesteps as a plot: step on x, timestep (noise level) on y, the scheduler's plain
// schedule and LINA's reallocated one. A warp above 1 lifts the curve: more of the run is
// spent at high noise, where the layout forms.

const NS = "http://www.w3.org/2000/svg";

export function plotSchedule(svg, { plain, planned }, maxTimestep = 1000) {
  const [width, height, pad] = [300, 150, 8];
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  const points = (list) =>
    list
      .map((t, i) => {
        const x = pad + (i / Math.max(1, list.length - 1)) * (width - 2 * pad);
        const y = height - pad - (t / maxTimestep) * (height - 2 * pad);
        return `${x.toFixed(1)},${y.toFixed(1)}`;
      })
      .join(" ");
  const line = (list, className) => {
    const element = document.createElementNS(NS, "polyline");
    element.setAttribute("points", points(list));
    element.setAttribute("class", className);
    return element;
  };
  svg.replaceChildren(line(plain, "plain"), line(planned, "planned"));
}

// The step sweep as bars: one per step, as tall as the image changed when only that step was
// guided, green where every check passed.
export function plotSweep(svg, sweep) {
  const [width, height, pad] = [300, 120, 4];
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  const top = Math.max(1e-6, ...sweep.points.map((p) => p.change));
  const slot = (width - 2 * pad) / Math.max(1, sweep.points.length);
  svg.replaceChildren(
    ...sweep.points.map((point, i) => {
      const bar = document.createElementNS(NS, "rect");
      const h = (point.change / top) * (height - 2 * pad);
      bar.setAttribute("x", (pad + i * slot + slot * 0.1).toFixed(1));
      bar.setAttribute("width", (slot * 0.8).toFixed(1));
      bar.setAttribute("y", (height - pad - h).toFixed(1));
      bar.setAttribute("height", h.toFixed(1));
      bar.setAttribute("class", point.passed === point.checks ? "passing" : "failing");
      return bar;
    }),
  );
}
