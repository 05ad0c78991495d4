// The embed API: text-to-image diffusion with LINA's interventions, in a Web Worker on the
// page's WebGPU device. Types: lina.d.ts. The page (main.js) and the minimal example
// (example.html) use nothing else.
//
//   import { loadModel } from "./lina.js";
//   const model = await loadModel();                      // the embedded default model
//   const image = await model.generate({ prompt: "a red ball on a small mirror" });
//   context.putImageData(new ImageData(image.rgba, image.width, image.height), 0, 0);
//
// lina.js, lina-worker.js and pkg/ must be served from the same origin as the page (browsers
// start module workers from their own origin only).

/** The embedded default model's folder, next to this module. */
export const DEFAULT_MODEL_URL = new URL("./models/default/", import.meta.url).href;

/**
 * Starts a worker and loads a model into it: from `url` (a diffusers-layout folder; the
 * default model when neither `url` nor `files` is given) or from `files` (an object mapping
 * diffusers paths such as "unet/config.json" to Files, Blobs or Uint8Arrays).
 */
export async function loadModel(source = {}) {
  const model = new LinaModel(source.workerUrl);
  try {
    await model.load(source);
  } catch (error) {
    model.dispose();
    throw error;
  }
  return model;
}

export class LinaModel {
  #worker;
  #next = 0;
  #pending = new Map();

  constructor(workerUrl = new URL("./lina-worker.js", import.meta.url)) {
    this.#worker = new Worker(workerUrl, { type: "module" });
    this.#worker.onmessage = ({ data }) => this.#receive(data);
    this.#worker.onerror = (event) => {
      const error = new Error(`the model's worker failed: ${event.message ?? "unknown error"}`);
      for (const { reject } of this.#pending.values()) reject(error);
      this.#pending.clear();
    };
    /** Set by `load`: `{ adapter, precision, maxBindingBytes, shaderF16 }`. */
    this.deviceInfo = null;
    /** Set by `load`: the model's native image side in pixels. */
    this.nativeSize = null;
    /** Set by `load`: what the user should know about it ("not cached for the next visit"). */
    this.notes = [];
  }

  /**
   * (Re)loads a model into this worker; see `loadModel`. An aborted `signal` stops the
   * load (downloads included); it rejects with "cancelled" and no model is loaded.
   */
  async load({ url, files, backend = "auto", precision = "auto", kernels = "fused", onProgress, signal } = {}) {
    if (files === undefined && url === undefined) url = DEFAULT_MODEL_URL;
    if (url !== undefined) url = new URL(url.endsWith("/") ? url : `${url}/`, location.href).href;
    const info = await this.#cancellable(signal, () =>
      this.#request("load", { url, files, backend, precision, kernels }, {
        progress: (m) => onProgress?.({ path: m.path, received: m.received, total: m.total }),
      }),
    );
    this.deviceInfo = info.deviceInfo;
    this.nativeSize = info.nativeSize;
    this.notes = info.notes;
    return info;
  }

  /**
   * Generates an image: `{ width, height, rgba, warnings, interventions }`. `onStep` is called
   * after every step with `{ step, steps, timestep, preview }` (`preview` only with
   * `previews: true`); an aborted `signal` cancels between steps.
   */
  generate(options, { onStep, previews = false, signal } = {}) {
    return this.#cancellable(signal, () =>
      this.#request("generate", { options, previews }, {
        step: (m) => onStep?.({ step: m.step, steps: m.steps, timestep: m.timestep, preview: m.preview }),
      }),
    );
  }

  /**
   * Stops the running load (between chunks, its downloads aborted) or generation (after its
   * current step); it rejects with "cancelled".
   */
  cancel() {
    this.#worker.postMessage({ type: "cancel" });
  }

  /** LINA's step sweep (see README): `{ baselinePassed, checks, points }`. */
  sweep(options) {
    return this.#request("sweep", { options });
  }

  /** Regenerates one CSG node's region of `image` from `strength` of the schedule on. */
  reinpaint(options, image, node, strength) {
    return this.#request("reinpaint", { options, image, node, strength });
  }

  /** The probe checker's verdicts on `image` for the scene graph `csg`. */
  checkImage(image, csg) {
    return this.#request("checkImage", { image, csg });
  }

  /** The scene graph a prompt describes, with the effects physics implies. */
  parsePrompt(prompt) {
    return this.#request("parsePrompt", { prompt });
  }

  /** Resolves to the scene graph if it is valid; rejects naming the problem otherwise. */
  validateCsg(csg) {
    return this.#request("validateCsg", { csg });
  }

  /** LINA's default plan, every field filled in. */
  linaPlan() {
    return this.#request("linaPlan", {});
  }

  /**
   * The learned predictor's plan for a prompt (and its scene graph, else the prompt's own):
   * `{ candidate, plan, predicted }`, or null when the model has no predictor.
   */
  suggestPlan(prompt, csg) {
    return this.#request("suggestPlan", { prompt, csg });
  }

  /** `{ plain, planned }`: the run's timesteps without and with the options' plan. */
  timesteps(options) {
    return this.#request("timesteps", { options });
  }

  /**
   * The model's memory, for leak checks: `{ gpu: { allocations, bytesInUse, bytesReserved },
   * wasmBytes }`.
   */
  memoryUsage() {
    return this.#request("memoryUsage", {});
  }

  /**
   * Times `repeat` UNet calls as a guided step makes them (batch 2, the model's native size),
   * after one warm-up call: `{ warmupMs, timesMs }`. For benchmarks (www/bench.html).
   */
  benchUnet(repeat = 10) {
    return this.#request("benchUnet", { repeat });
  }

  /** Destroys the GPU device, as a driver reset would: for testing recovery. */
  loseDeviceForTesting() {
    return this.#request("loseDeviceForTesting", {});
  }

  /** Stops the worker; its GPU memory is released with it. */
  dispose() {
    this.#worker.terminate();
    const error = new Error("the model was disposed");
    for (const { reject } of this.#pending.values()) reject(error);
    this.#pending.clear();
  }

  // Runs `start()`, cancelling it when `signal` aborts.
  #cancellable(signal, start) {
    if (signal?.aborted) return Promise.reject(new Error("cancelled"));
    const abort = () => this.cancel();
    signal?.addEventListener("abort", abort, { once: true });
    return start().finally(() => signal?.removeEventListener("abort", abort));
  }

  #request(type, body, listeners = {}) {
    const id = this.#next++;
    return new Promise((resolve, reject) => {
      this.#pending.set(id, { resolve, reject, listeners });
      this.#worker.postMessage({ id, type, ...body });
    });
  }

  #receive(message) {
    const pending = this.#pending.get(message.id);
    if (!pending) return;
    if (message.type === "done") {
      this.#pending.delete(message.id);
      pending.resolve(message.result);
    } else if (message.type === "error") {
      this.#pending.delete(message.id);
      pending.reject(new Error(message.message));
    } else {
      pending.listeners[message.type]?.(message);
    }
  }
}
