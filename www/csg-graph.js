// @ts-check
// The scene graph drawn: entities as boxes (their colour as a swatch, their class), relations
// as labelled arrows from subject to object, what physics implies (a reflection, a shadow)
// dashed. Edited by clicking: an entity, then another, adds a relation between them; a
// relation's label selects it; Delete (the key or the button) removes the selection. The
// editor (csg-editor.js) owns the graph: this module draws it and asks the editor for changes.

/** @import { Csg } from "./lina.js" */

const NS = "http://www.w3.org/2000/svg";
const [WIDTH, HEIGHT] = [420, 260];
const [NODE_W, NODE_H] = [104, 34];

// The swatch of a node's colour; "no colour" draws none.
const SWATCH = { red: "#d33", green: "#3a3", blue: "#36d", yellow: "#db2", purple: "#93c" };

/** @param {string} name @param {Record<string, string | number>} attributes */
function svg(name, attributes = {}) {
  const element = document.createElementNS(NS, name);
  for (const [key, value] of Object.entries(attributes)) element.setAttribute(key, String(value));
  return element;
}

/**
 * Where each node sits: on an ellipse in the graph's order (one node in the middle, two side
 * by side), so that every arrow is visible whatever the relations.
 * @param {number} n
 */
function positions(n) {
  if (n === 1) return [[WIDTH / 2, HEIGHT / 2]];
  const [rx, ry] = [WIDTH / 2 - NODE_W / 2 - 8, HEIGHT / 2 - NODE_H / 2 - 8];
  return Array.from({ length: n }, (_, i) => {
    const angle = Math.PI + (2 * Math.PI * i) / n;
    return [WIDTH / 2 + rx * Math.cos(angle), HEIGHT / 2 + ry * Math.sin(angle) * (n === 2 ? 0 : 1)];
  });
}

/** The point where the segment from a box's centre toward (dx, dy) leaves the box. */
function border(/** @type {number} */ x, /** @type {number} */ y, /** @type {number} */ dx, /** @type {number} */ dy) {
  const scale = Math.min(
    dx === 0 ? Infinity : NODE_W / 2 / Math.abs(dx),
    dy === 0 ? Infinity : NODE_H / 2 / Math.abs(dy),
  );
  return [x + dx * scale, y + dy * scale];
}

/**
 * @typedef {{ kind: "node", id: string } | { kind: "relation", index: number } | null} Selection
 */

export class CsgGraph {
  /**
   * @param {SVGSVGElement} element
   * @param {{ relate: (subject: string, object: string) => void, removeNode: (id: string) => void,
   *   removeRelation: (index: number) => void, selected: (selection: Selection) => void }} actions
   */
  constructor(element, actions) {
    this.element = element;
    this.actions = actions;
    /** @type {Selection} */
    this.selection = null;
    /** @type {Csg | null} */
    this.csg = null;
    element.setAttribute("viewBox", `0 0 ${WIDTH} ${HEIGHT}`);
    element.addEventListener("keydown", (event) => {
      if (event.key !== "Delete" && event.key !== "Backspace") return;
      event.preventDefault();
      this.deleteSelected();
    });
  }

  /** Draws `csg` (keeping the selection where it still exists). */
  show(/** @type {Csg} */ csg) {
    this.csg = csg;
    const focused = this.element.contains(document.activeElement) ? document.activeElement?.getAttribute("data-key") : null;
    const sel = this.selection;
    const gone =
      (sel?.kind === "node" && !csg.nodes.some((n) => n.id === sel.id)) ||
      (sel?.kind === "relation" && sel.index >= csg.relations.length);
    if (gone) {
      this.selection = null;
      this.actions.selected(null);
    }

    const at = new Map(csg.nodes.map((node, i) => [node.id, positions(csg.nodes.length)[i]]));
    const marker = svg("marker", { id: "csg-arrow", viewBox: "0 0 10 10", refX: 10, refY: 5, markerWidth: 7, markerHeight: 7, orient: "auto-start-reverse" });
    marker.append(svg("path", { d: "M 0 0 L 10 5 L 0 10 z" }));
    const defs = svg("defs");
    defs.append(marker);

    // Pairs with several relations (either way) bend apart, each by its own amount.
    /** @type {Map<string, number>} */
    const seen = new Map();
    const edges = csg.relations.map((relation, index) => {
      const from = at.get(relation.subject);
      const to = at.get(relation.object);
      const group = svg("g", {
        class: `edge${this.#isSelected({ kind: "relation", index }) ? " selected" : ""}${this.#implied(relation) ? " implied" : ""}`,
        tabindex: 0,
        role: "button",
        "data-key": `relation:${index}`,
        "aria-pressed": String(this.#isSelected({ kind: "relation", index })),
        "aria-label": `relation ${index + 1}: ${relation.subject} ${relation.predicate.replaceAll("_", " ")} ${relation.object}`,
      });
      if (!from || !to) return group;
      const pair = [relation.subject, relation.object].sort().join("\u0000");
      const nth = seen.get(pair) ?? 0;
      seen.set(pair, nth + 1);
      const [x0, y0] = from;
      const [x1, y1] = to;
      let d;
      let label;
      if (relation.subject === relation.object) {
        // A relation of a node to itself: a loop above it.
        const top = y0 - NODE_H / 2;
        d = `M ${x0 - 12} ${top} C ${x0 - 30} ${top - 40}, ${x0 + 30} ${top - 40}, ${x0 + 12} ${top}`;
        label = [x0, top - 32];
      } else {
        const [dx, dy] = [x1 - x0, y1 - y0];
        const length = Math.hypot(dx, dy) || 1;
        // The bend: perpendicular to the segment, alternating sides for each further relation.
        const bend = (nth === 0 ? 0 : Math.ceil(nth / 2) * 28 * (nth % 2 ? 1 : -1)) * (relation.subject < relation.object ? 1 : -1);
        const [nx, ny] = [-dy / length, dx / length];
        const [cx, cy] = [(x0 + x1) / 2 + nx * bend, (y0 + y1) / 2 + ny * bend];
        const [sx, sy] = border(x0, y0, cx - x0, cy - y0);
        const [ex, ey] = border(x1, y1, cx - x1, cy - y1);
        d = `M ${sx.toFixed(1)} ${sy.toFixed(1)} Q ${cx.toFixed(1)} ${cy.toFixed(1)} ${ex.toFixed(1)} ${ey.toFixed(1)}`;
        label = [(sx + 2 * cx + ex) / 4, (sy + 2 * cy + ey) / 4];
      }
      const words = relation.predicate.replaceAll("_", " ");
      const text = svg("text", { x: label[0].toFixed(1), y: (label[1] + 4).toFixed(1) });
      text.textContent = words;
      // The label is what a pointer picks the relation by: a pill behind it widens the target.
      const pill = svg("rect", {
        class: "pill",
        x: (label[0] - 4 - 3.3 * words.length).toFixed(1),
        y: (label[1] - 8).toFixed(1),
        width: (8 + 6.6 * words.length).toFixed(1),
        height: 16,
        rx: 8,
      });
      group.append(svg("path", { d, "marker-end": "url(#csg-arrow)" }), pill, text);
      this.#activate(group, () => this.#select(this.#isSelected({ kind: "relation", index }) ? null : { kind: "relation", index }));
      return group;
    });

    const nodes = csg.nodes.map((node) => {
      const [x, y] = /** @type {number[]} */ (at.get(node.id));
      const selected = this.#isSelected({ kind: "node", id: node.id });
      const shown = node.id.length > 14 ? `${node.id.slice(0, 13)}…` : node.id;
      const kindText = node.name ?? node.class;
      const group = svg("g", {
        class: `node${node.implied ? " implied" : ""}${selected ? " selected" : ""}`,
        tabindex: 0,
        role: "button",
        "data-key": `node:${node.id}`,
        "aria-pressed": String(selected),
        // The name starts with the text drawn (id, then class), as a button's name must.
        "aria-label": `${shown} ${kindText}: entity ${node.id}${node.colour ? `, ${node.colour}` : ""}${node.implied ? ", implied" : ""}`,
      });
      group.append(svg("rect", { x: x - NODE_W / 2, y: y - NODE_H / 2, width: NODE_W, height: NODE_H, rx: 6 }));
      if (node.colour && node.colour in SWATCH) {
        group.append(svg("circle", { class: "swatch", cx: x - NODE_W / 2 + 10, cy: y, r: 5, fill: SWATCH[/** @type {keyof typeof SWATCH} */ (node.colour)] }));
      }
      // One text of two lines, the space between them a real one: the button's visible
      // text reads "id class", as its name does.
      const text = svg("text", {});
      const name = svg("tspan", { x, y: y - 2 });
      name.textContent = shown;
      const kind = svg("tspan", { x, y: y + 11, class: "kind" });
      kind.textContent = kindText;
      text.append(name, " ", kind);
      group.append(text);
      this.#activate(group, () => this.#clickNode(node.id));
      return group;
    });

    this.element.replaceChildren(defs, ...edges, ...nodes);
    if (focused) /** @type {SVGElement | null} */ (this.element.querySelector(`[data-key="${CSS.escape(focused)}"]`))?.focus();
  }

  /** Removes the selected node (with its relations) or relation. */
  deleteSelected() {
    const sel = this.selection;
    if (!sel) return;
    this.#select(null);
    if (sel.kind === "node") this.actions.removeNode(sel.id);
    else this.actions.removeRelation(sel.index);
  }

  /** A node clicked: select it, or with another node selected, relate the two. */
  #clickNode(/** @type {string} */ id) {
    const sel = this.selection;
    if (sel?.kind === "node" && sel.id !== id) {
      this.#select(null);
      this.actions.relate(sel.id, id);
      return;
    }
    this.#select(sel?.kind === "node" && sel.id === id ? null : { kind: "node", id });
  }

  /** @param {Selection} selection */
  #select(selection) {
    this.selection = selection;
    this.actions.selected(selection);
    if (this.csg) this.show(this.csg);
  }

  /** @param {Selection} candidate */
  #isSelected(candidate) {
    const sel = this.selection;
    if (!sel || !candidate || sel.kind !== candidate.kind) return false;
    return sel.kind === "node" ? sel.id === /** @type {any} */ (candidate).id : sel.index === /** @type {any} */ (candidate).index;
  }

  /** A relation is implied where it ties an implied node in. @param {Csg["relations"][number]} relation */
  #implied(relation) {
    return !!this.csg?.nodes.some((n) => n.implied && (n.id === relation.subject || n.id === relation.object));
  }

  /** Click, Enter and Space act alike. @param {SVGElement} element @param {() => void} act */
  #activate(element, act) {
    element.addEventListener("click", act);
    element.addEventListener("keydown", (event) => {
      if (/** @type {KeyboardEvent} */ (event).key !== "Enter" && /** @type {KeyboardEvent} */ (event).key !== " ") return;
      event.preventDefault();
      act();
    });
  }
}
