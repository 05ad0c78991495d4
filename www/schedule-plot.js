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
