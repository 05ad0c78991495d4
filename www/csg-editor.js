// The scene graph as a form: one row per node (id, class, colour, layout box, remove) and per relation
// (subject, predicate, object, remove), plus its JSON for import and export. The model
// validates every change (LinaModel.validateCsg); this module only edits.
import { button } from "./dom.js";

// The schema's classes and predicates (docs/probe.md, docs/lina.md): "thing" is any noun
// outside the probe's world (its `name` says which: a parsed "cat" is one), and "above" and
// "below" come from the open parser.
const CLASSES = ["ball", "cube", "cone", "person", "table", "floor", "mirror", "puddle", "jar", "sand", "water", "lamp", "shadow", "reflection", "thing"];
const COLOURS = ["", "red", "green", "blue", "yellow", "purple"];
export const PREDICATES = ["on", "in", "left_of", "right_of", "behind", "close_to", "far_from", "above", "below", "reflection_of", "bounded_by", "shadow_of"];

function select(label, options, value, onChange) {
  const element = document.createElement("select");
  element.setAttribute("aria-label", label);
  for (const option of options) element.add(new Option(option || "(none)", option, false, option === (value ?? "")));
  element.addEventListener("change", () => onChange(element.value));
  return element;
}

export class CsgEditor {
  /**
   * `onChange(csg)` after every edit made here; `onRender(csg)` whenever the graph shown
   * changes (the drawn graph follows it).
   */
  constructor({ nodes, relations, json, onChange, onRender = () => {} }) {
    this.nodesElement = nodes;
    this.relationsElement = relations;
    this.jsonElement = json;
    this.onChange = onChange;
    this.onRender = onRender;
    this.csg = null;
    // What the drawn graph has selected: its row is highlighted.
    this.selection = null;
  }

  /** Shows `csg` (a valid scene graph). */
  show(csg) {
    this.csg = structuredClone(csg);
    this.#render();
  }

  #edit(change) {
    change(this.csg);
    this.#render();
    this.onChange(structuredClone(this.csg));
  }

  addNode() {
    this.#edit((csg) => {
      let n = csg.nodes.length + 1;
      while (csg.nodes.some((node) => node.id === `node${n}`)) n++;
      csg.nodes.push({ id: `node${n}`, class: "ball" });
    });
  }

  /** Sets (or with `null`, removes) a node's layout box. */
  setLayout(id, box) {
    this.#edit((csg) => {
      const node = csg.nodes.find((n) => n.id === id);
      if (box) node.layout = box;
      else delete node.layout;
    });
  }

  /** Adds "subject on object": the predicate is then changed in the relation's row. */
  relate(subject, object) {
    this.#edit((csg) => csg.relations.push({ subject, predicate: "on", object }));
  }

  /** Sets relation `index`'s predicate. */
  setPredicate(index, predicate) {
    this.#edit((csg) => (csg.relations[index].predicate = predicate));
  }

  /** Removes a node and the relations that name it. */
  removeNode(id) {
    this.#edit((csg) => {
      csg.nodes = csg.nodes.filter((node) => node.id !== id);
      csg.relations = csg.relations.filter((r) => r.subject !== id && r.object !== id);
    });
  }

  removeRelation(index) {
    this.#edit((csg) => csg.relations.splice(index, 1));
  }

  /** Highlights the row of what the drawn graph selected (`{ kind, id | index }` or null). */
  highlight(selection) {
    this.selection = selection;
    if (this.csg) this.#render();
  }

  addRelation() {
    const [first, second] = this.csg.nodes;
    if (!first) return;
    this.#edit((csg) => csg.relations.push({ subject: first.id, predicate: "on", object: (second ?? first).id }));
  }

  #render() {
    const csg = this.csg;
    const ids = csg.nodes.map((node) => node.id);
    this.nodesElement.replaceChildren(
      ...csg.nodes.map((node, i) => {
        const row = document.createElement("li");
        const name = `node ${node.id}`;
        const id = document.createElement("input");
        id.value = node.id;
        id.setAttribute("aria-label", `${name}: id`);
        id.addEventListener("change", () =>
          this.#edit((csg) => {
            for (const r of csg.relations) {
              if (r.subject === node.id) r.subject = id.value;
              if (r.object === node.id) r.object = id.value;
            }
            csg.nodes[i].id = id.value;
          }),
        );
        row.append(
          id,
          select(`${name}: class`, CLASSES, node.class, (v) => this.#edit((csg) => (csg.nodes[i].class = v))),
          select(`${name}: colour`, COLOURS, node.colour, (v) =>
            this.#edit((csg) => {
              if (v) csg.nodes[i].colour = v;
              else delete csg.nodes[i].colour;
            }),
          ),
          button(node.layout ? "Drop box" : "Add box", `${node.layout ? "Drop box" : "Add box"} of ${name}`, () =>
            this.setLayout(node.id, node.layout ? null : [0.35, 0.35, 0.65, 0.65]),
          ),
          button("Remove", `remove ${name}`, () => this.removeNode(node.id)),
        );
        if (node.implied) row.append(" (implied)");
        row.classList.toggle("selected", this.selection?.kind === "node" && this.selection.id === node.id);
        return row;
      }),
    );
    this.relationsElement.replaceChildren(
      ...csg.relations.map((relation, i) => {
        const row = document.createElement("li");
        const name = `relation ${i + 1}`;
        const set = (key) => (v) => this.#edit((csg) => (csg.relations[i][key] = v));
        row.append(
          select(`${name}: subject`, ids, relation.subject, set("subject")),
          select(`${name}: predicate`, PREDICATES, relation.predicate, set("predicate")),
          select(`${name}: object`, ids, relation.object, set("object")),
          button("Remove", `remove ${name}`, () => this.removeRelation(i)),
        );
        row.classList.toggle("selected", this.selection?.kind === "relation" && this.selection.index === i);
        return row;
      }),
    );
    this.jsonElement.value = JSON.stringify(csg, null, 1);
    this.onRender(csg);
  }
}
