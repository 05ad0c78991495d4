// @ts-check
// The last generation's attention maps (generate's `attentionMaps: true`): a button per word
// of the prompt and a step slider pick one map, drawn as a heat overlay on a canvas stacked
// over the image. Each map is scaled to its own maximum: a word's probabilities are small
// beside the start token's, and what the overlay is for is where the word went, not how much.

/** @import { AttentionMaps as Maps } from "./lina.js" */

// The overlay's opacity where a map peaks: the image stays visible under the heat.
const PEAK_ALPHA = 0.75;

/**
 * The prompt's words in order, each once, with the indices of their tokens in the maps: a
 * word split into several tokens, or named twice, is one button whose map sums them all (the
 * buttons name words, not positions). Punctuation is a word to the tokenizer, not one to pick.
 * @param {Maps["tokens"]} tokens
 */
function wordsOf(tokens) {
  /** @type {Map<string, number[]>} */
  const words = new Map();
  tokens.forEach(({ word }, index) => {
    if (/[\p{L}\p{N}]/u.test(word)) words.set(word, [...(words.get(word) ?? []), index]);
  });
  return words;
}

/**
 * The "hot" colour ramp (black, red, yellow, white) with an opacity that follows the value,
 * so that where a word drew no attention the image shows through untouched.
 * @param {number} v in [0, 1]
 */
function heat(v) {
  const ramp = (/** @type {number} */ from) => Math.round(255 * Math.min(1, Math.max(0, 3 * v - from)));
  return [ramp(0), ramp(1), ramp(2), Math.round(255 * PEAK_ALPHA * v)];
}

export class AttentionOverlay {
  /**
   * @param {{ panel: HTMLElement, words: HTMLElement, step: HTMLInputElement,
   *   stepValue: HTMLOutputElement, canvas: HTMLCanvasElement }} elements
   */
  constructor({ panel, words, step, stepValue, canvas }) {
    this.panel = panel;
    this.wordsElement = words;
    this.step = step;
    this.stepValue = stepValue;
    this.canvas = canvas;
    /** @type {Maps | null} */
    this.maps = null;
    /** @type {Map<string, number[]>} */
    this.words = new Map();
    // Kept across runs, so that the same word can be followed from one image to the next.
    /** @type {string | null} */
    this.chosen = null;
    step.addEventListener("input", () => this.#draw());
  }

  /**
   * Shows a generation's maps over its image (`width` by `height` pixels), from its last step.
   * @param {Maps} maps
   * @param {number} width
   * @param {number} height
   */
  show(maps, width, height) {
    this.maps = maps;
    this.words = wordsOf(maps.tokens);
    if (this.chosen !== null && !this.words.has(this.chosen)) this.chosen = null;
    this.canvas.width = width;
    this.canvas.height = height;
    this.step.max = String(maps.steps.length);
    this.step.value = String(maps.steps.length);
    this.wordsElement.replaceChildren(...[...this.words.keys()].map((word) => this.#button(word)));
    this.panel.hidden = false;
    this.#draw();
  }

  /** Hides the panel and the overlay: the image they described is being replaced. */
  clear() {
    this.maps = null;
    this.panel.hidden = true;
    this.#draw();
  }

  /** @param {string} word */
  #button(word) {
    const button = document.createElement("button");
    button.type = "button";
    button.textContent = word;
    button.setAttribute("aria-pressed", String(word === this.chosen));
    // A toggle: pressing the shown word again hides its map, to see the image alone.
    button.addEventListener("click", () => {
      this.chosen = word === this.chosen ? null : word;
      for (const other of this.wordsElement.querySelectorAll("button")) {
        other.setAttribute("aria-pressed", String(other.textContent === this.chosen));
      }
      this.#draw();
    });
    return button;
  }

  #draw() {
    const context = /** @type {CanvasRenderingContext2D} */ (this.canvas.getContext("2d"));
    context.clearRect(0, 0, this.canvas.width, this.canvas.height);
    const step = Number(this.step.value);
    const where = this.maps ? `step ${step} of ${this.maps.steps.length}` : "";
    this.stepValue.value = where;
    this.step.setAttribute("aria-valuetext", where);
    if (!this.maps || this.chosen === null) return;
    const { width, height, steps } = this.maps;
    const size = width * height;
    const values = steps[step - 1];
    const map = new Float32Array(size);
    for (const token of this.words.get(this.chosen) ?? []) {
      for (let i = 0; i < size; i++) map[i] += values[token * size + i];
    }
    const peak = map.reduce((a, b) => Math.max(a, b), 0);
    if (!(peak > 0)) return;
    const image = new ImageData(width, height);
    for (let i = 0; i < size; i++) image.data.set(heat(map[i] / peak), 4 * i);
    // The map is at the latents' size: drawn there, then scaled up smoothly onto the image.
    const small = new OffscreenCanvas(width, height);
    /** @type {OffscreenCanvasRenderingContext2D} */ (small.getContext("2d")).putImageData(image, 0, 0);
    context.imageSmoothingEnabled = true;
    context.drawImage(small, 0, 0, this.canvas.width, this.canvas.height);
  }
}
