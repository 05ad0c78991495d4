// @ts-check
// The embed API: text-to-image diffusion with LINA's interventions, in a Web Worker on the
// page's WebGPU device (or the CPU backend). Types: lina.d.ts, which tests/types checks this
// file against. The page (main.js) and the minimal example (example.html) use nothing else.
//
//   import { loadModel } from "./lina.js";
//   const model = await loadModel();                      // the embedded default model
//   const image = await model.generate({ prompt: "a red ball on a small mirror" });
//   context.putImageData(new ImageData(image.rgba, image.width, image.height), 0, 0);
//
// Every call is a request with its own id; the worker runs them one at a time, in order. An
// aborted signal cancels its own request only: the promise rejects at once, and the worker
// drops the request if it is still queued or stops it at its next step if it is running.
//
// Every rejection but an abort's is an Error with a stable `code` (lina.d.ts lists them): the
// wasm module's own, carried across the worker boundary (structured clone keeps an Error's
// message and name but drops its other properties, so the worker sends them as plain fields),
// and this side's ("invalid_input", "no_model", "worker_crashed", "disposed").
//
// A worker whose wasm instance traps (a bug, an exhausted memory) is never used again: it is
// stopped, every call it had rejects with "worker_crashed", and the next call starts a fresh
// worker, with no model loaded until `load` succeeds.
//
// lina.js, lina-worker.js, pkg/ and the model must be served from the page's origin (browsers
// start module workers from their own origin only). Bundlers find the worker through the
// `new Worker(new URL("./lina-worker.js", import.meta.url), …)` expression below: it must stay
// literally so.

/** @import * as types from "./lina.js" */

/**
 * A request waiting for its answer.
 * @typedef {object} Pending
 * @property {(value: any) => void} resolve
 * @property {(error: unknown) => void} reject
 * @property {Listeners} listeners
 */

/**
 * The caller's callbacks for a request's progress messages, by message type.
 * @typedef {{ step?: (message: any) => void, progress?: (message: any) => void }} Listeners
 */

/** The embedded default model's folder, next to this module. */
export const DEFAULT_MODEL_URL = new URL("./models/default/", import.meta.url).href;

// The keys each call takes. Any other is refused, naming it, so that a misspelt option
// ("stpes") is an error rather than a silent default. The generation options are those of the
// wasm's JsOptions (crates/web/src/options.rs), which would ignore unknown keys, less `preview`:
// here that is a control, beside the `onStep` it feeds.
const GENERATE_OPTIONS = [
  "prompt",
  "negativePrompt",
  "seed",
  "steps",
  "timesteps",
  "guidanceScale",
  "width",
  "height",
  "scheduler",
  "clipSkip",
  "initialLatents",
  "stepNoise",
  "initImage",
  "strength",
  "mask",
  "controlImage",
  "referenceImage",
  "referenceSize",
  "denoisingEnd",
  "handoffLatents",
  "denoisingStart",
  "plan",
  "csg",
  "attentionMaps",
  "skipLayerGuidance",
  "trueCfgScale",
  "guidanceRescale",
  "controlnets",
  "controlnetGuessMode",
  "t2iAdapter",
];
const GENERATE_CONTROLS = ["onStep", "preview", "signal"];
const CONTROLS = ["signal"];
const SOURCE_OPTIONS = ["url", "files", "checkpoint", "t5", "backend", "precision", "kernels", "loras", "embeddings", "onProgress", "signal"];

/**
 * Starts a worker and loads a model into it: from `url` (a diffusers-layout folder; the
 * default model when none of `url`, `files` and `checkpoint` is given) or from `files` (an
 * object mapping diffusers paths such as "unet/config.json" to Files, Blobs or Uint8Arrays);
 * or from a single-file `checkpoint` (a URL, File, Blob or Uint8Array), for which `url` or
 * `files` give only the tokenizer and any configs that should win over the inferred ones. A
 * failed load stops the worker.
 * @type {typeof types.loadModel}
 */
export async function loadModel(source = {}) {
  checkSource(source);
  const model = new LinaModel();
  try {
    await model.load(source);
  } catch (error) {
    model.dispose();
    throw error;
  }
  return model;
}

/** @implements {types.LinaModel} */
export class LinaModel {
  /** @type {Worker | null} null after a crash, until the next call starts a fresh worker */
  #worker = null;
  #next = 0;
  /** @type {Map<number, Pending>} */
  #pending = new Map();
  #disposed = false;

  constructor() {
    /** @type {types.DeviceInfo | null} Set by `load`; null while no model is loaded. */
    this.deviceInfo = null;
    /** @type {number | null} Set by `load`: the model's native image side in pixels. */
    this.nativeSize = null;
    /** @type {number | null} Set by `load`: the blocks `skipLayerGuidance` may skip (SD 3's), or null. */
    this.skippableBlocks = null;
    /** @type {types.ImageCondition | null} Set by `load`: what the model takes beside its prompt, or null. */
    this.imageCondition = null;
    /** @type {boolean | null} Set by `load`: whether `referenceImage` may be given (FLUX's), or null. */
    this.takesReferenceImage = null;
    /** @type {boolean | null} Set by `load`: whether `guidanceRescale` may be given (UNet models'), or null. */
    this.takesGuidanceRescale = null;
    /** @type {string[]} Set by `load`: what the user should know ("not cached for the next visit"). */
    this.notes = [];
    // Started now, so that the wasm module compiles while the caller gets to `load`.
    this.#worker = this.#start();
  }

  /**
   * (Re)loads a model into this worker; see `loadModel`. The worker drops the old model when
   * the load starts, so a load that fails or is aborted while running leaves none; from the
   * call on, `deviceInfo`, `nativeSize` and `notes` describe no model until a load succeeds.
   * @param {types.ModelSource} [source]
   * @returns {Promise<types.LoadResult>}
   */
  async load(source = {}) {
    checkSource(source);
    const { files, t5 = false, backend = "auto", precision = "auto", kernels = "fused", loras = [], embeddings = [], onProgress, signal } = source;
    const nothingNamed = files === undefined && source.url === undefined && source.checkpoint === undefined;
    let url = nothingNamed ? DEFAULT_MODEL_URL : source.url;
    if (url !== undefined) url = new URL(url.endsWith("/") ? url : `${url}/`, location.href).href;
    const checkpoint = typeof source.checkpoint === "string" ? new URL(source.checkpoint, location.href).href : source.checkpoint;
    if (!signal?.aborted) this.#unloaded();
    /** @type {types.LoadResult} */
    const info = await this.#request("load", { url, files, checkpoint, t5, backend, precision, kernels, loras, embeddings }, signal, {
      progress: (m) => onProgress?.({ path: m.path, received: m.received, total: m.total, from: m.from }),
    });
    this.deviceInfo = info.deviceInfo;
    this.nativeSize = info.nativeSize;
    this.skippableBlocks = info.skippableBlocks;
    this.imageCondition = info.imageCondition;
    this.takesReferenceImage = info.takesReferenceImage;
    this.takesGuidanceRescale = info.takesGuidanceRescale;
    this.notes = info.notes;
    return info;
  }

  /**
   * Generates an image: `{ width, height, rgba, warnings, interventions }`. `onStep` is called
   * after every step with `{ step, steps, timestep, preview }` (`preview` only with
   * `preview: true`).
   * @param {types.GenerateOptions} options
   * @param {types.GenerateControls} [controls]
   * @returns {Promise<types.GenerateResult>}
   */
  async generate(options, controls = {}) {
    checkOptions("generate", options);
    checkKeys("generate's controls", controls, GENERATE_CONTROLS);
    const { onStep, preview = false, signal } = controls;
    checkType("onStep", onStep, "function");
    checkType("preview", preview, "boolean");
    checkSignal(signal);
    return this.#request("generate", { options, preview }, signal, {
      step: (m) => onStep?.({ step: m.step, steps: m.steps, timestep: m.timestep, preview: m.preview }),
    });
  }

  /**
   * Stops the running call, if any: a load between chunks (its downloads aborted), a
   * generation, sweep or re-inpainting after its current step. It rejects with code
   * "cancelled"; queued calls still run (abort their signals to drop them).
   */
  cancel() {
    this.#worker?.postMessage({ type: "cancel" });
  }

  /**
   * LINA's step sweep (see README): `{ baselinePassed, checks, points }`.
   * @param {types.GenerateOptions} options
   * @param {types.Controls} [controls]
   * @returns {Promise<types.SweepResult>}
   */
  async sweep(options, controls = {}) {
    checkOptions("sweep", options);
    const signal = checkControls("sweep", controls);
    return this.#request("sweep", { options }, signal);
  }

  /**
   * Regenerates one CSG node's region of `image` from `strength` of the schedule on.
   * @param {types.GenerateOptions} options
   * @param {types.ImageInput} image
   * @param {string} node
   * @param {number} strength
   * @param {types.Controls} [controls]
   * @returns {Promise<types.Image & { before: types.Verdict[]; after: types.Verdict[] }>}
   */
  async reinpaint(options, image, node, strength, controls = {}) {
    checkOptions("reinpaint", options);
    const signal = checkControls("reinpaint", controls);
    return this.#request("reinpaint", { options, image, node, strength }, signal);
  }

  /**
   * The probe checker's verdicts on `image` for the scene graph `csg`.
   * @param {types.ImageInput} image
   * @param {types.Csg} csg
   * @returns {Promise<types.Verdict[]>}
   */
  async checkImage(image, csg) {
    return this.#request("checkImage", { image, csg });
  }

  /**
   * The scene graph a prompt describes, with the effects physics implies.
   * @param {string} prompt
   * @returns {Promise<types.Csg>}
   */
  async parsePrompt(prompt) {
    return this.#request("parsePrompt", { prompt });
  }

  /**
   * Resolves to the scene graph if it is valid; rejects naming the problem otherwise.
   * @param {types.Csg} csg
   * @returns {Promise<types.Csg>}
   */
  async validateCsg(csg) {
    return this.#request("validateCsg", { csg });
  }

  /**
   * The graph with a box for every node the prompt names that has none, derived from the
   * graph's relations: where LINA's layout controls steer when no box was drawn.
   * @param {types.Csg} csg
   * @returns {Promise<types.Csg>}
   */
  async deriveLayout(csg) {
    return this.#request("deriveLayout", { csg });
  }

  /**
   * LINA's default plan, every field filled in.
   * @returns {Promise<Required<types.Plan>>}
   */
  async linaPlan() {
    return this.#request("linaPlan", {});
  }

  /**
   * The learned predictor's plan for a prompt (and its scene graph, else the prompt's own):
   * `{ candidate, plan, predicted }`, or null when the model has no predictor.
   * @param {string} prompt
   * @param {types.Csg} [csg]
   * @returns {Promise<types.Suggestion | null>}
   */
  async suggestPlan(prompt, csg) {
    return this.#request("suggestPlan", { prompt, csg });
  }

  /**
   * `{ plain, planned }`: the run's timesteps without and with the options' plan.
   * @param {types.GenerateOptions} options
   * @returns {Promise<{ plain: number[]; planned: number[] }>}
   */
  async timesteps(options) {
    checkOptions("timesteps", options);
    return this.#request("timesteps", { options });
  }

  /**
   * Sets the scale of each LoRA the model was loaded with (`loras`, in their order) without
   * loading it again: the parts they adapt are rebuilt from weights kept on the GPU.
   * @param {number[]} scales
   * @returns {Promise<void>}
   */
  async setLoraScales(scales) {
    if (!Array.isArray(scales) || !scales.every((s) => typeof s === "number")) {
      throw linaError("invalid_input", "setLoraScales takes an array of numbers, one per LoRA");
    }
    return this.#request("setLoraScales", { scales });
  }

  /**
   * Loads a ControlNet (diffusers' `ControlNetModel`) beside the model's UNet: from `url` (its
   * folder: config.json and diffusion_pytorch_model.safetensors), `files` (those paths to
   * Files, Blobs or Uint8Arrays), or, for an original ControlNet file (lllyasviel's layout,
   * `control_v11p_sd15_canny.safetensors`; its config inferred), `url` naming the
   * `.safetensors` file or `file` holding it. It replaces any loaded before; every generation
   * after needs its input in `controlnets` (`{ image, scale?, start?, end? }`). One that does
   * not fit the model rejects ("config", "weight_file", "invalid_input") and those loaded
   * before stay.
   * @param {types.ControlNetSource} source
   * @returns {Promise<void>}
   */
  async loadControlNet(source) {
    return this.#sideNetwork("loadControlNet", "the ControlNet", source, true);
  }

  /**
   * Loads one more ControlNet beside those loaded, from a source as `loadControlNet` takes
   * one: generations then give each its input in `controlnets`, and their additions are
   * summed (diffusers' `MultiControlNetModel`). A refused one leaves those loaded.
   * @param {types.ControlNetSource} source
   * @returns {Promise<void>}
   */
  async addControlNet(source) {
    return this.#sideNetwork("addControlNet", "the ControlNet", source, true);
  }

  /**
   * A side network's load (a ControlNet's, a T2I-Adapter's): its folder by `url` or its
   * `files`, or, where `single` (original ControlNet files), one `.safetensors` file by URL
   * or as a `file`.
   * @param {"loadControlNet" | "addControlNet" | "loadT2IAdapter"} type
   * @param {string} what
   * @param {types.ControlNetSource} source
   * @param {boolean} single
   */
  async #sideNetwork(type, what, source, single) {
    checkObject(`${what}'s source`, source);
    checkKeys(`${what}'s source`, source, single ? ["url", "files", "file", "signal"] : ["url", "files", "signal"]);
    const { url: given, files, file, signal } = /** @type {types.ControlNetSource} */ (source);
    checkType("url", given, "string");
    checkSignal(signal);
    if ([given, files, file].filter((s) => s !== undefined).length !== 1) {
      throw linaError("invalid_input", `give ${what}'s url${single ? ", its files or its file" : " or its files"}, one of them`);
    }
    if (files !== undefined) checkFiles(files);
    if (file !== undefined && !(file instanceof Blob || file instanceof Uint8Array)) {
      throw linaError("invalid_input", "file must be a File, a Blob or a Uint8Array");
    }
    const lone = single && given?.endsWith(".safetensors");
    const url = given === undefined ? undefined : new URL(lone || given.endsWith("/") ? given : `${given}/`, location.href).href;
    return this.#request(type, { url, files, file }, signal);
  }

  /**
   * Loads a T2I-Adapter (diffusers' `T2IAdapter`, full type: SD 1.x's and 2.x's) beside the
   * model's UNet, from `url` (its folder: config.json and diffusion_pytorch_model.safetensors)
   * or `files` (those paths to Files, Blobs or Uint8Arrays), replacing any loaded before.
   * Every generation after needs `t2iAdapter` (`{ image, scale? }`). One that does not fit
   * the model rejects ("config", "invalid_input").
   * @param {types.T2IAdapterSource} source
   * @returns {Promise<void>}
   */
  async loadT2IAdapter(source) {
    return this.#sideNetwork("loadT2IAdapter", "the T2I-Adapter", source, false);
  }

  /**
   * Drops the loaded T2I-Adapter, if any.
   * @returns {Promise<void>}
   */
  async removeT2IAdapter() {
    return this.#request("removeT2IAdapter", {});
  }

  /**
   * Drops the loaded ControlNets: generations run the UNet alone again.
   * @returns {Promise<void>}
   */
  async removeControlNets() {
    return this.#request("removeControlNets", {});
  }

  /**
   * Sets how many tokens T5's text is padded or cut to for every generation after (diffusers'
   * `max_sequence_length`): SD 3 and FLUX only, 1 to 512. By default the pipelines' (SD 3's
   * 256, FLUX's 512); FLUX.1 schnell's model card passes 256.
   * @param {number} tokens
   * @returns {Promise<void>}
   */
  async setMaxSequenceLength(tokens) {
    if (!Number.isInteger(tokens) || tokens < 0 || tokens > 0xffffffff) {
      throw linaError("invalid_input", "setMaxSequenceLength takes a whole number of tokens");
    }
    return this.#request("setMaxSequenceLength", { tokens });
  }

  /**
   * The model's memory, for leak checks: `{ gpu: { allocations, bytesInUse, bytesReserved },
   * wasmBytes }`.
   * @returns {Promise<types.MemoryUsage>}
   */
  async memoryUsage() {
    return this.#request("memoryUsage", {});
  }

  /**
   * Times `repeat` UNet calls as a guided step makes them (batch 2, the model's native size),
   * after one warm-up call: `{ warmupMs, timesMs }`. For benchmarks (www/bench.html).
   * @param {number} [repeat]
   * @param {types.Controls} [controls]
   * @returns {Promise<{ warmupMs: number; timesMs: number[] }>}
   */
  async benchUnet(repeat = 10, controls = {}) {
    if (!Number.isInteger(repeat) || repeat < 1) {
      throw linaError("invalid_input", `benchUnet: repeat must be a whole number of at least 1, not ${repeat}`);
    }
    const signal = checkControls("benchUnet", controls);
    return this.#request("benchUnet", { repeat }, signal);
  }

  /**
   * Test only, not part of the API (lina.d.ts leaves it out): destroys the GPU device, as a
   * driver reset would, for tests of recovery.
   * @returns {Promise<void>}
   */
  async __loseDeviceForTesting() {
    return this.#request("__loseDeviceForTesting", {});
  }

  /**
   * Test only, not part of the API (lina.d.ts leaves it out): traps the worker's wasm
   * instance, as a bug or an exhausted memory would, for tests of crash recovery. Rejects
   * with "worker_crashed", as does every call queued behind it.
   * @returns {Promise<void>}
   */
  async __trapForTesting() {
    return this.#request("__trapForTesting", {});
  }

  /** Stops the worker; its memory is released with it. Pending and later calls reject. */
  dispose() {
    this.#disposed = true;
    this.#worker?.terminate();
    this.#worker = null;
    this.#unloaded();
    this.#rejectAll(() => linaError("disposed", "the model was disposed"));
  }

  #start() {
    // Literally this expression: bundlers (webpack, Vite, Parcel, esbuild) recognise it and
    // ship lina-worker.js with its imports.
    const worker = new Worker(new URL("./lina-worker.js", import.meta.url), { type: "module" });
    worker.onmessage = ({ data }) => {
      if (data.type === "crashed") this.#crashed(worker, data.message);
      else this.#receive(data);
    };
    // An uncaught error in the worker (a trap inside an async wasm call, which no request's
    // promise sees), or a script that failed to load: either way its requests would never be
    // answered.
    worker.onerror = (event) => this.#crashed(worker, event.message || "it failed to start or threw");
    worker.onmessageerror = () => this.#crashed(worker, "one of its messages could not be read");
    return worker;
  }

  /**
   * Stops a worker that died or trapped and fails everything it had. The fresh worker is
   * started by the next call, not here: a worker that cannot start at all (its script
   * missing) would otherwise be restarted for ever.
   * @param {Worker} worker
   * @param {string} why
   */
  #crashed(worker, why) {
    // A dead worker may report twice (its "crashed", then the error event): once is enough.
    if (worker !== this.#worker) return;
    worker.terminate();
    this.#worker = null;
    this.#unloaded();
    this.#rejectAll(() =>
      linaError("worker_crashed", `the model's worker crashed (${why}); no model is loaded until load() succeeds again`),
    );
  }

  #unloaded() {
    this.deviceInfo = null;
    this.nativeSize = null;
    this.skippableBlocks = null;
    this.imageCondition = null;
    this.takesReferenceImage = null;
    this.takesGuidanceRescale = null;
    this.notes = [];
  }

  /** @param {() => Error} error */
  #rejectAll(error) {
    for (const pending of [...this.#pending.values()]) pending.reject(error());
  }

  /**
   * Sends a request; resolves to its result. An aborted `signal` rejects it at once and tells
   * the worker to drop or stop it.
   * @param {string} type
   * @param {Record<string, unknown>} body
   * @param {AbortSignal} [signal]
   * @param {Listeners} [listeners]
   * @returns {Promise<any>}
   */
  #request(type, body, signal, listeners = {}) {
    if (this.#disposed) return Promise.reject(linaError("disposed", "the model was disposed"));
    if (signal?.aborted) return Promise.reject(abortReason(signal));
    const worker = (this.#worker ??= this.#start());
    const id = this.#next++;
    return new Promise((resolve, reject) => {
      const abort = () => {
        settled();
        reject(abortReason(signal));
        worker.postMessage({ type: "cancel", id });
      };
      const settled = () => {
        this.#pending.delete(id);
        signal?.removeEventListener("abort", abort);
      };
      /** @type {Pending} */
      const pending = {
        resolve: (value) => (settled(), resolve(value)),
        reject: (error) => (settled(), reject(error)),
        listeners,
      };
      this.#pending.set(id, pending);
      signal?.addEventListener("abort", abort, { once: true });
      try {
        worker.postMessage({ id, type, ...body });
      } catch (error) {
        // Not cloneable (a function among the options, say): nothing was sent.
        pending.reject(linaError("invalid_input", `${type}: its arguments cannot be sent to the model's worker (${describe(error)})`));
      }
    });
  }

  /** @param {any} message */
  #receive(message) {
    const pending = this.#pending.get(message.id);
    // Answers to aborted requests: their promises have settled already.
    if (!pending) return;
    if (message.type === "done") {
      pending.resolve(message.result);
    } else if (message.type === "error") {
      pending.reject(rebuilt(message.error));
    } else if (message.type === "step" || message.type === "progress") {
      try {
        pending.listeners[/** @type {"step" | "progress"} */ (message.type)]?.(message);
      } catch (error) {
        // As the wasm does when its onStep throws: the call stops and fails with "callback".
        const callback = message.type === "step" ? "onStep" : "onProgress";
        pending.reject(linaError("callback", `${callback} threw: ${describe(error)}`));
        this.#worker?.postMessage({ type: "cancel", id: message.id });
      }
    }
  }
}

/**
 * @param {types.ErrorCode} code
 * @param {string} message
 * @returns {types.LinaError}
 */
function linaError(code, message) {
  return Object.assign(new Error(message), { code });
}

/**
 * The worker's `{ message, code, name }` as an Error again.
 * @param {{ message: string, code: types.ErrorCode, name?: string }} fields
 */
function rebuilt({ message, code, name }) {
  const error = linaError(code, message);
  if (name && name !== "Error") error.name = name;
  return error;
}

/**
 * What an aborted call rejects with: the signal's reason, as `fetch` does.
 * @param {AbortSignal | undefined} signal
 */
function abortReason(signal) {
  return signal?.reason ?? new DOMException("the call was aborted", "AbortError");
}

/** @param {unknown} error */
function describe(error) {
  return error instanceof Error ? error.message : String(error);
}

/**
 * @param {string} what
 * @param {unknown} value
 * @returns {asserts value is Record<string, unknown>}
 */
function checkObject(what, value) {
  if (value === null || typeof value !== "object" || Array.isArray(value)) {
    throw linaError("invalid_input", `${what} must be an object`);
  }
}

/**
 * @param {string} what
 * @param {unknown} value
 * @param {string[]} allowed
 */
function checkKeys(what, value, allowed) {
  checkObject(what, value);
  const unknown = Object.keys(value).find((key) => !allowed.includes(key));
  if (unknown !== undefined) {
    throw linaError("invalid_input", `${what}: unknown option "${unknown}" (the options are ${allowed.join(", ")})`);
  }
}

/**
 * @param {string} call
 * @param {unknown} options
 */
function checkOptions(call, options) {
  checkObject(`${call}'s options`, options);
  if ("preview" in options) {
    throw linaError("invalid_input", `${call}'s options: unknown option "preview" (it goes in generate's second argument: { onStep, preview, signal })`);
  }
  checkKeys(`${call}'s options`, options, GENERATE_OPTIONS);
  const { controlnets, t2iAdapter } = /** @type {any} */ (options);
  if (t2iAdapter !== undefined) checkKeys("t2iAdapter", t2iAdapter, ["image", "scale"]);
  if (controlnets !== undefined) {
    if (!Array.isArray(controlnets)) throw linaError("invalid_input", `${call}'s options: controlnets must be an array`);
    for (const input of controlnets) {
      checkObject("controlnets[]", input);
      checkKeys("controlnets[]", input, ["image", "scale", "start", "end"]);
    }
  }
}

/**
 * A long call's `{ signal }`; returns the signal.
 * @param {string} call
 * @param {types.Controls} controls
 */
function checkControls(call, controls) {
  checkKeys(`${call}'s controls`, controls, CONTROLS);
  checkSignal(controls.signal);
  return controls.signal;
}

/** @param {unknown} signal */
function checkSignal(signal) {
  if (signal !== undefined && !(signal instanceof AbortSignal)) {
    throw linaError("invalid_input", "signal must be an AbortSignal");
  }
}

/**
 * @param {string} name
 * @param {unknown} value
 * @param {"function" | "boolean" | "string"} type
 */
function checkType(name, value, type) {
  if (value !== undefined && typeof value !== type) {
    throw linaError("invalid_input", `${name} must be a ${type}, not ${value === null ? "null" : typeof value}`);
  }
}

/**
 * @param {string} name
 * @param {unknown} value
 * @param {string[]} allowed
 */
function checkOneOf(name, value, allowed) {
  if (value !== undefined && !allowed.includes(/** @type {string} */ (value))) {
    throw linaError("invalid_input", `${name} must be ${allowed.map((a) => `"${a}"`).join(", ")}, not ${JSON.stringify(value)}`);
  }
}

/**
 * LoRA adapters or embeddings: an array of objects, each with a `url` or a `file` (File, Blob
 * or Uint8Array), not both.
 * @param {string} name
 * @param {unknown} list
 * @param {string[]} keys
 * @param {(item: any) => void} check
 */
function checkAdapters(name, list, keys, check) {
  if (list === undefined) return;
  if (!Array.isArray(list)) throw linaError("invalid_input", `${name} must be an array`);
  for (const item of list) {
    checkObject(`${name}[]`, item);
    checkKeys(`${name}[]`, item, keys);
    const { url, file } = /** @type {any} */ (item);
    checkType(`${name}[].url`, url, "string");
    if ((url === undefined) === (file === undefined)) throw linaError("invalid_input", `each of ${name} needs a url or a file, not both`);
    if (file !== undefined && !(file instanceof Blob || file instanceof Uint8Array)) {
      throw linaError("invalid_input", `${name}[].file must be a File, a Blob or a Uint8Array`);
    }
    check(item);
  }
}

/**
 * Paths to file contents.
 * @param {unknown} files
 */
function checkFiles(files) {
  checkObject("files", files);
  for (const [path, data] of Object.entries(/** @type {object} */ (files))) {
    if (!(data instanceof Blob || data instanceof Uint8Array)) {
      throw linaError("invalid_input", `files["${path}"] must be a File, a Blob or a Uint8Array`);
    }
  }
}

/** @param {unknown} source */
function checkSource(source) {
  checkObject("the model's source", source);
  checkKeys("the model's source", source, SOURCE_OPTIONS);
  const { url, files, checkpoint, backend, precision, kernels, onProgress, signal } = source;
  checkType("url", url, "string");
  checkType("t5", source.t5, "boolean");
  if (checkpoint !== undefined && !(typeof checkpoint === "string" || checkpoint instanceof Blob || checkpoint instanceof Uint8Array)) {
    throw linaError("invalid_input", "checkpoint must be a URL, a File, a Blob or a Uint8Array");
  }
  if (files !== undefined) {
    if (url !== undefined) throw linaError("invalid_input", "give the model's url or its files, not both");
    checkFiles(files);
  }
  checkAdapters("loras", source.loras, ["url", "file", "scale"], (a) => {
    if (a.scale !== undefined && !Number.isFinite(a.scale)) throw linaError("invalid_input", "loras[].scale must be a finite number");
  });
  checkAdapters("embeddings", source.embeddings, ["url", "file", "trigger"], (a) => {
    if (typeof a.trigger !== "string" || !a.trigger) throw linaError("invalid_input", "embeddings[].trigger must be a word, such as \"<my-style>\"");
  });
  checkOneOf("backend", backend, ["auto", "webgpu", "cpu"]);
  checkOneOf("precision", precision, ["auto", "f32", "f16"]);
  checkOneOf("kernels", kernels, ["fused", "burn"]);
  checkType("onProgress", onProgress, "function");
  checkSignal(signal);
}
