// Nodes' layout boxes drawn over the image, to move and resize: drag a box to move it, drag
// its corner to resize it; from the keyboard, a focused box moves with the arrow keys and
// resizes with Shift and the arrow keys. Boxes are [x0, y0, x1, y1] in [0, 1] of the image.

const NS = "http://www.w3.org/2000/svg";
const STEP = 0.02;
const SMALLEST = 0.04;

const clamp = (v, lo, hi) => Math.min(hi, Math.max(lo, v));

// `box` moved by (dx, dy), or with its far corner moved when `resize`, kept inside the image.
function changed([x0, y0, x1, y1], dx, dy, resize) {
  if (resize) {
    return [x0, y0, clamp(x1 + dx, x0 + SMALLEST, 1), clamp(y1 + dy, y0 + SMALLEST, 1)];
  }
  const mx = clamp(dx, -x0, 1 - x1);
  const my = clamp(dy, -y0, 1 - y1);
  return [x0 + mx, y0 + my, x1 + mx, y1 + my];
}

const rounded = (box) => box.map((v) => Math.round(v * 1000) / 1000);

export class LayoutBoxes {
  /** `onChange(nodeId, box)` when a box was moved or resized. */
  constructor(svg, onChange) {
    this.svg = svg;
    this.onChange = onChange;
    svg.setAttribute("viewBox", "0 0 1 1");
    svg.setAttribute("preserveAspectRatio", "none");
  }

  /** Draws the boxes of the graph's nodes that have one. */
  show(csg) {
    // Redrawing must not take the focus from a box being moved from the keyboard.
    const focused = this.svg.contains(document.activeElement) ? document.activeElement.dataset.node : null;
    this.svg.replaceChildren(
      ...(csg?.nodes ?? []).filter((node) => node.layout).map((node) => this.#box(node.id, node.layout)),
    );
    if (focused) this.svg.querySelector(`rect[data-node="${CSS.escape(focused)}"]`)?.focus();
  }

  #box(id, layout) {
    const group = document.createElementNS(NS, "g");
    const rect = document.createElementNS(NS, "rect");
    const corner = document.createElementNS(NS, "rect");
    const label = document.createElementNS(NS, "text");
    let box = layout;
    const place = () => {
      const [x0, y0, x1, y1] = box;
      rect.setAttribute("x", x0);
      rect.setAttribute("y", y0);
      rect.setAttribute("width", x1 - x0);
      rect.setAttribute("height", y1 - y0);
      corner.setAttribute("x", x1 - 0.03);
      corner.setAttribute("y", y1 - 0.03);
      label.setAttribute("x", x0 + 0.01);
      label.setAttribute("y", y0 + 0.05);
    };
    rect.setAttribute("class", "layout-box");
    rect.dataset.node = id;
    rect.setAttribute("tabindex", "0");
    rect.setAttribute("role", "button");
    rect.setAttribute("aria-label", `layout of node ${id} (arrow keys move it, Shift and arrow keys resize it)`);
    corner.setAttribute("class", "layout-corner");
    corner.setAttribute("width", 0.03);
    corner.setAttribute("height", 0.03);
    label.textContent = id;
    place();

    // Pointer drags, in image fractions of the overlay's size on screen.
    const drag = (element, resize) =>
      element.addEventListener("pointerdown", (down) => {
        down.preventDefault();
        down.stopPropagation();
        element.setPointerCapture(down.pointerId);
        const { width, height } = this.svg.getBoundingClientRect();
        const start = box;
        const move = (event) => {
          box = changed(start, (event.clientX - down.clientX) / width, (event.clientY - down.clientY) / height, resize);
          place();
        };
        const up = () => {
          element.removeEventListener("pointermove", move);
          element.removeEventListener("pointerup", up);
          this.onChange(id, rounded(box));
        };
        element.addEventListener("pointermove", move);
        element.addEventListener("pointerup", up);
      });
    drag(rect, false);
    drag(corner, true);

    rect.addEventListener("keydown", (event) => {
      const moves = { ArrowLeft: [-STEP, 0], ArrowRight: [STEP, 0], ArrowUp: [0, -STEP], ArrowDown: [0, STEP] };
      const move = moves[event.key];
      if (!move) return;
      event.preventDefault();
      box = changed(box, move[0], move[1], event.shiftKey);
      place();
      this.onChange(id, rounded(box));
    });
    group.append(rect, corner, label);
    return group;
  }
}
