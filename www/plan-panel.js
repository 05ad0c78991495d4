// @ts-check
// LINA's plan as a user sets it: a preset (Off, Suggested, Custom), one slider per
// intervention with its range, unit and a line of help, and the plan as JSON behind
// "Advanced". Moving a slider or applying JSON makes the preset Custom. This module only
// edits; the page asks it for the plan (`plan()`, null when Off) and tells it the predictor's
// suggestion.

/** @import { Plan, Suggestion } from "./lina.js" */

/**
 * The sliders: the plan's field (and, for a window, which end), the label, the range, how the
 * value reads, and what it does to the picture.
 * Sliders of one group are shown together; a window's two ends side by side.
 * @type {{ id: string, group: string, field: keyof Plan, end?: 0 | 1, label: string, min: number,
 *   max: number, step: number, unit: (v: number) => string, help: string }[]}
 */
const SLIDERS = [
  strength("promptStrength", "Prompt guidance", "Prompt guidance strength", 4, 0.25, times,
    "Guides with a prompt embedding that stresses the words of physical relations (on, in, reflection of)."),
  ...runWindow("prompt", "Prompt guidance", "0% is the first, noisiest step.", "Structure settles early: late guidance changes little."),
  strength("nodeWeight", "Region guidance", "Region guidance: node weight", 4, 0.25, times,
    "Pulls each entity's phrase toward its layout box in the latent (needs boxes: see the Scene graph tab)."),
  strength("effectWeight", "Region guidance", "Region guidance: effect weight", 4, 0.25, times,
    "Pushes implied effects (a reflection, a shadow) out of the regions their rule forbids."),
  ...runWindow("region", "Region guidance", "Where in the run it starts.", "Where it stops."),
  strength("attentionStrength", "Region-controlled attention", "Region-controlled attention: strength", 6, 0.5, (v) => (v === 0 ? "off" : `e^${v}`),
    "Inside its box, an entity's words weigh this much more in every cross-attention layer than outside it (try 2)."),
  ...runWindow("attention", "Region-controlled attention", "Where in the run it starts.", "Where it stops."),
  strength("energyStrength", "Attention-energy update", "Attention-energy update: strength", 1, 0.05, (v) => (v === 0 ? "off" : `${Math.round(v * 100)}% of the way`),
    "After each step, moves what an entity's words attend to toward its box, this share of the way (times the share still outside, and how focused the word's map is). Only a model that places words in its attention can follow it; flat maps move nothing."),
  ...runWindow("energy", "Attention-energy update", "Where in the run it starts.", "Where it stops."),
  {
    ...strength("warp", "Schedule", "Schedule warp", 3, 0.1, (v) => (v === 1 ? "1 (plain)" : `${v}`),
      "1 is the plain schedule; above 1 gives the noisy first steps, where the layout forms, more of the run."),
    min: 0.5,
  },
  {
    // Up to the largest factor a plan may ask for (lina::Plan::MAX_GUIDANCE_FACTOR), so that
    // any valid plan shows as it is.
    ...strength("guidance", "Guidance scale", "Guidance factor", 4, 0.05, (v) => (v === 1 ? "1× (the run's scale)" : `${v}× the run's scale`),
      "Multiplies the run's classifier-free guidance scale. Where two things share a scene, weaker guidance keeps each one's colour and shape apart more often on the embedded model."),
    // The page's own "guidance" input is the run's scale.
    id: "planGuidance",
    min: 0.25,
  },
  strength("collage", "Collage", "Collage: redraw strength", 1, 0.05, (v) => (v === 0 ? "off" : `the last ${Math.round(v * 100)}% of the run`),
    "Starts from a collage: each thing the prompt names drawn alone by the model, placed where the scene graph puts it, then the run redraws it from this point. Only where two or more things stand apart (no stack, nothing behind another); in a scene lit from one side each thing is drawn lit with its shadow. Costs a short drawing per thing (try 0.1)."),
];

/**
 * The switches: the plan's yes/no fields, each shown in its group with a line of what it does.
 * @type {{ field: "attentionEffects" | "mirror", group: string, text: string }[]}
 */
const SWITCHES = [
  { field: "attentionEffects", group: "Region-controlled attention", text: " Also name the implied effects (reflection, shadow) and steer their words" },
  { field: "mirror", group: "Mirrored frame", text: " Draw the mirror image from the mirrored text (left and right swapped), then mirror it back: for a model that draws one side better" },
];

/**
 * A slider of one of the plan's numbers, from 0 (off) to `max`.
 * @param {"promptStrength" | "nodeWeight" | "effectWeight" | "attentionStrength" | "energyStrength" | "warp" | "guidance" | "collage"} field
 * @param {string} group @param {string} label @param {number} max @param {number} step
 * @param {(v: number) => string} unit @param {string} help
 */
function strength(field, group, label, max, step, unit, help) {
  return { id: field, group, field, label, min: 0, max, step, unit, help };
}

/**
 * The two sliders of a window (`${name}Window`): where in the run an intervention starts and
 * stops, labelled after the group ("Prompt guidance from", "… until").
 * @param {"prompt" | "region" | "attention" | "energy"} name @param {string} group
 * @param {string} fromHelp @param {string} untilHelp
 */
function runWindow(name, group, fromHelp, untilHelp) {
  const field = /** @type {keyof Plan} */ (`${name}Window`);
  const end = (/** @type {0 | 1} */ end, /** @type {string} */ word, /** @type {string} */ help) => ({
    id: `${name}${end === 0 ? "Start" : "End"}`, group, field, end, label: `${group} ${word}`,
    min: 0, max: 1, step: 0.05, unit: percentOfRun, help,
  });
  return [end(0, "from", fromHelp), end(1, "until", untilHelp)];
}

/** @param {number} v */
function times(v) {
  return v === 0 ? "off" : `${v}×`;
}

/** @param {number} v */
function percentOfRun(v) {
  return `${Math.round(v * 100)}% of run`;
}

/** The preset in force: "off", "suggested" or "custom". */
export class PlanPanel {
  /**
   * @param {{ sliders: HTMLElement, presets: HTMLFieldSetElement, suggestion: HTMLElement,
   *   json: HTMLTextAreaElement, apply: HTMLButtonElement, error: HTMLElement,
   *   onChange: () => void }} elements `onChange` after every change of the plan or preset.
   */
  constructor({ sliders, presets, suggestion, json, apply, error, onChange }) {
    this.presets = presets;
    this.suggestionElement = suggestion;
    this.json = json;
    this.error = error;
    this.onChange = onChange;
    /** The model's default plan: the fields no slider shows keep its values. @type {Plan} */
    this.base = {};
    /** @type {Suggestion | null} */
    this.suggestion = null;
    /** @type {Map<string, { input: HTMLInputElement, output: HTMLOutputElement, row: HTMLElement }>} */
    this.inputs = new Map();

    /** @type {Map<string, HTMLElement>} */
    const groups = new Map();
    const groupOf = (/** @type {string} */ name) => {
      let group = groups.get(name);
      if (!group) {
        group = document.createElement("div");
        group.className = "plan-group";
        const heading = document.createElement("h3");
        heading.textContent = name;
        group.append(heading);
        sliders.append(group);
        groups.set(name, group);
      }
      return group;
    };
    for (const spec of SLIDERS) {
      const group = groupOf(spec.group);
      const row = document.createElement("div");
      row.className = spec.end === undefined ? "slider" : "slider end";
      const head = document.createElement("div");
      head.className = "head";
      const label = document.createElement("label");
      label.htmlFor = spec.id;
      label.textContent = spec.label;
      const output = document.createElement("output");
      output.htmlFor.add(spec.id);
      output.id = `${spec.id}-value`;
      head.append(label, output);
      const input = document.createElement("input");
      Object.assign(input, { type: "range", id: spec.id, min: String(spec.min), max: String(spec.max), step: String(spec.step) });
      const help = document.createElement("p");
      help.className = "help";
      help.id = `${spec.id}-help`;
      // A window's ends read as shares of the run, which says their range; a strength's
      // range is worth a word.
      help.textContent = spec.end === undefined ? `${spec.help} From ${spec.unit(spec.min)} to ${spec.unit(spec.max)}.` : spec.help;
      input.setAttribute("aria-describedby", help.id);
      input.addEventListener("input", () => {
        this.#showValue(spec);
        this.#setPreset("custom");
        this.#syncJson();
        this.onChange();
      });
      row.append(head, input, help);
      group.append(row);
      this.inputs.set(spec.id, { input, output, row });
    }
    /** @type {Map<string, HTMLInputElement>} */
    this.switches = new Map();
    for (const spec of SWITCHES) {
      const label = document.createElement("label");
      label.className = "inline";
      const box = document.createElement("input");
      box.type = "checkbox";
      box.id = spec.field;
      label.append(box, spec.text);
      box.addEventListener("change", () => {
        this.#setPreset("custom");
        this.#syncJson();
        this.onChange();
      });
      groupOf(spec.group).append(label);
      this.switches.set(spec.field, box);
    }

    presets.addEventListener("change", () => this.#presetChosen());
    apply.addEventListener("click", () => this.#applyJson());
  }

  /** "off", "suggested" or "custom". */
  get preset() {
    const checked = /** @type {HTMLInputElement | null} */ (this.presets.querySelector("input:checked"));
    return checked?.value ?? "off";
  }

  /** The plan to generate with, or null when the preset is Off. */
  plan() {
    return this.preset === "off" ? null : this.sliderPlan();
  }

  /** The plan the controls show, whatever the preset (the schedule plot draws it). */
  sliderPlan() {
    /** @type {Record<string, any>} */
    const plan = structuredClone(this.base);
    for (const spec of SLIDERS) {
      const value = Number(/** @type {any} */ (this.inputs.get(spec.id)).input.value);
      if (spec.end === undefined) plan[spec.field] = value;
      else {
        plan[spec.field] = [...(plan[spec.field] ?? [0, 1])];
        plan[spec.field][spec.end] = value;
      }
    }
    for (const [field, box] of this.switches) plan[field] = box.checked;
    return /** @type {Plan} */ (plan);
  }

  /** The model's default plan: the controls start from it. */
  setBase(/** @type {Plan} */ plan) {
    this.base = structuredClone(plan);
    this.show(plan);
  }

  /** Shows `plan` in the controls (fields it lacks keep the model's defaults). */
  show(/** @type {Plan} */ plan) {
    /** @type {Record<string, any>} */
    const full = { ...this.base, ...plan };
    for (const spec of SLIDERS) {
      const value = spec.end === undefined ? full[spec.field] : full[spec.field]?.[spec.end];
      if (value !== undefined) /** @type {any} */ (this.inputs.get(spec.id)).input.value = String(value);
      this.#showValue(spec);
    }
    for (const [field, box] of this.switches) box.checked = !!full[field];
    this.#syncJson();
  }

  /** Sets the preset, and with "suggested" the suggestion's plan. */
  choose(/** @type {"off" | "suggested" | "custom"} */ preset) {
    this.#setPreset(preset);
    this.#presetChosen();
  }

  /**
   * The predictor's suggestion for the current prompt (null: the model has none), shown with
   * why; under Suggested the controls follow it.
   * @param {Suggestion | null} suggestion
   */
  suggest(suggestion) {
    this.suggestion = suggestion;
    const radio = /** @type {HTMLInputElement} */ (this.presets.querySelector('input[value="suggested"]'));
    radio.disabled = !suggestion;
    if (!suggestion) {
      this.suggestionElement.textContent = "This model has no learned plan predictor: Suggested is not available.";
      if (this.preset === "suggested") this.choose("off");
      return;
    }
    // The predictor regresses each candidate's share of passing relation checks (of all
    // checks, for a scene without relations); a regression can stray past the ends, which
    // no share can: shown clamped, as a share.
    const percent = (/** @type {number} */ share) => `${Math.round(100 * Math.min(1, Math.max(0, share)))}%`;
    const ranked = [...suggestion.predicted].sort((a, b) => b[1] - a[1]);
    const others = ranked.map(([name, share]) => `${name} ${percent(share)}`).join(", ");
    this.suggestionElement.textContent =
      `The predictor suggests "${suggestion.candidate}" for this prompt: it expects the most of the scene's relations to hold with it (expected share holding: ${others}).`;
    if (this.preset === "suggested") this.show(suggestion.plan);
  }

  #presetChosen() {
    if (this.preset === "suggested" && this.suggestion) this.show(this.suggestion.plan);
    this.onChange();
  }

  /** @param {string} preset */
  #setPreset(preset) {
    const radio = /** @type {HTMLInputElement | null} */ (this.presets.querySelector(`input[value="${preset}"]`));
    if (radio) radio.checked = true;
  }

  /** @param {(typeof SLIDERS)[number]} spec */
  #showValue(spec) {
    const { input, output, row } = /** @type {any} */ (this.inputs.get(spec.id));
    const value = Number(input.value);
    output.value = spec.unit(value);
    input.setAttribute("aria-valuetext", spec.unit(value));
    row.classList.toggle("off", value === 0 && spec.end === undefined);
  }

  #syncJson() {
    this.json.value = JSON.stringify(this.sliderPlan(), null, 1);
    this.error.textContent = "";
  }

  #applyJson() {
    let plan;
    try {
      plan = JSON.parse(this.json.value);
    } catch (error) {
      this.error.textContent = `The JSON does not parse: ${/** @type {Error} */ (error).message}`;
      return;
    }
    if (typeof plan !== "object" || plan === null || Array.isArray(plan)) {
      this.error.textContent = "A plan is a JSON object ({ \"warp\": 1.5, ... }).";
      return;
    }
    const known = new Set([...SLIDERS.map((spec) => spec.field), ...SWITCHES.map((spec) => spec.field), ...Object.keys(this.base)]);
    const unknown = Object.keys(plan).find((key) => !known.has(key));
    if (unknown !== undefined) {
      this.error.textContent = `The plan has no field "${unknown}"; its fields are ${[...known].join(", ")}.`;
      return;
    }
    this.show(plan);
    this.#setPreset("custom");
    this.onChange();
  }
}
