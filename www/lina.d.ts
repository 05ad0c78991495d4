// Types of the embed API (lina.js). tests/types checks lina.js against them (`@ts-check`, its
// class `@implements` LinaModel) and README's embed example with them. `Uint8ClampedArray<…>`
// needs TypeScript 5.7 or later.

/** The embedded default model's folder URL. */
export const DEFAULT_MODEL_URL: string;

/**
 * What went wrong, for programs to branch on: messages may change, codes do not.
 *
 * From the runtime (the wasm module): "config", "weight_file", "missing_tensor",
 * "tensor_shape", "tensor_dtype", "unused_tensors", "unknown_layout" (a weight file whose
 * names fit no known layout; the message names the nearest ones), "tokenizer", "missing_file",
 * "pickled_weights" (a .bin/.ckpt where safetensors is needed), "invalid_input", "device", "device_lost" (load the model again), "device_limit",
 * "cancelled" (by `cancel()`), "callback" (`onStep` or `onProgress` threw), "io", "network".
 *
 * From lina.js and its worker: "invalid_input" too (an unknown option, a wrong type),
 * "no_model" (nothing is loaded: before `load`, after a failed load or a crash),
 * "worker_crashed" (the worker died or its wasm instance trapped: the call, and every call
 * queued behind it, rejects with it; the next call starts a fresh worker, with no model
 * loaded), "disposed" (after `dispose()`), and "internal" (a bug in lina.js: please report it).
 *
 * An aborted `signal` is not an error with a code: the call rejects with `signal.reason`
 * (by default a DOMException named "AbortError").
 */
export type ErrorCode =
  | "config"
  | "weight_file"
  | "missing_tensor"
  | "tensor_shape"
  | "tensor_dtype"
  | "unused_tensors"
  | "unknown_layout"
  | "tokenizer"
  | "missing_file"
  | "pickled_weights"
  | "invalid_input"
  | "device"
  | "device_lost"
  | "device_limit"
  | "cancelled"
  | "callback"
  | "io"
  | "network"
  | "no_model"
  | "worker_crashed"
  | "disposed"
  | "internal";

/** Every rejection of the API (but an abort's) is an `Error` with a `code`. */
export interface LinaError extends Error {
  code: ErrorCode;
}

/** "auto": f16 where the adapter has shader-f16, f32 otherwise. */
export type Precision = "auto" | "f32" | "f16";

/**
 * "auto": WebGPU, or the CPU backend (compiled into the wasm module, one thread) where the
 * browser has no WebGPU adapter or only a software one such as SwiftShader.
 */
export type Backend = "auto" | "webgpu" | "cpu";

/**
 * "fused" (the default): on WebGPU, the hand-written kernels of shaders/ for group and layer
 * norms, attention and the gated GELU; "burn": burn's own kernels only (to compare, or to rule
 * the fused ones out). The CPU backend always uses burn's.
 */
export type Kernels = "fused" | "burn";

/** What every long call takes besides its own options. */
export interface Controls {
  /**
   * Aborting it cancels this call only: a queued call is dropped before it runs, a running one
   * stops at its next step (or chunk, for a load). The call rejects at once with
   * `signal.reason`; calls queued behind a running one start once it has stopped.
   */
  signal?: AbortSignal;
}

/** Any other key is refused ("invalid_input"). */
/** What one ControlNet follows in a generation, and how. */
export interface ControlNetInput {
  /** The control image (of the output's size): an edge map, a depth map, a pose. */
  image: ImageInput;
  /** How strongly it steers (diffusers' `controlnet_conditioning_scale`; default 1). */
  scale?: number;
  /**
   * Where in the schedule it acts, as fractions of the steps the run takes (diffusers'
   * `control_guidance_start` and `_end`; default 0 and 1).
   */
  start?: number;
  end?: number;
}

/**
 * A ControlNet: its diffusers folder by URL or as files ("config.json",
 * "diffusion_pytorch_model.safetensors"), or an original ControlNet's `.safetensors` file
 * (lllyasviel's layout, its config inferred) by URL or as a file. One of them.
 */
export interface ControlNetSource extends Controls {
  url?: string;
  files?: Record<string, Blob | Uint8Array>;
  file?: Blob | Uint8Array;
}

/** A T2I-Adapter's folder: by URL, or its files ("config.json", "diffusion_pytorch_model.safetensors"). */
export interface T2IAdapterSource extends Controls {
  url?: string;
  files?: Record<string, Blob | Uint8Array>;
}

export interface ModelSource extends Controls {
  /** A diffusers-layout folder (the default model when none of url, files and checkpoint is given). */
  url?: string;
  /** Diffusers paths ("unet/config.json") to file contents; not with `url`. */
  files?: Record<string, Blob | Uint8Array>;
  /**
   * A single-file checkpoint (.safetensors in the original SD 1.x, 2.x, SDXL, SDXL refiner or SD 3 layout)
   * by URL or as a file. It holds no tokenizer: `url` or `files` then give a diffusers folder
   * of the same family, of which only the tokenizers and the configs are read (a config there
   * wins over the one inferred from the file; a scheduler config tells an SD 2.x epsilon model
   * from the v-prediction one assumed). Files of other layouts are refused with
   * "unknown_layout".
   */
  checkpoint?: string | Blob | Uint8Array;
  /**
   * SD 3 by `url`: also download T5-XXL (`text_encoder_3`'s weights and `tokenizer_3`), about
   * 9.5 GB in f16. Without it (the default) SD 3 runs with zeros in T5's place, as diffusers
   * allows, and each image carries a "text_encoder_skipped" warning. With `files`, T5 loads
   * whenever its files are given.
   */
  t5?: boolean;
  backend?: Backend;
  /** The CPU backend computes in f32. */
  precision?: Precision;
  kernels?: Kernels;
  /**
   * LoRA adapters (.safetensors, kohya or diffusers/PEFT names) merged into the UNet (SD 3's
   * transformer: diffusers names) and the text encoders as the model loads, each at its scale
   * (default 1). A LoRA for another model, or for a part this model lacks, rejects the load
   * with code "invalid_input", naming its module or the part.
   */
  loras?: { url?: string; file?: Blob | Uint8Array; scale?: number }[];
  /**
   * Textual-inversion embeddings (.safetensors), each bound to its trigger word, which
   * prompts then use ("a photo of <my-cat>").
   */
  embeddings?: { url?: string; file?: Blob | Uint8Array; trigger: string }[];
  /**
   * Download or read progress, per file, in bytes. If it throws, the load stops and rejects
   * with code "callback".
   */
  /**
   * Each chunk of a file as it streams in; `from` says where it comes from: the server, the
   * browser's cache (a second visit), or a file the page holds.
   */
  onProgress?: (progress: { path: string; received: number; total: number | undefined; from: "network" | "cache" | "file" }) => void;
}

export interface LoadResult {
  deviceInfo: DeviceInfo;
  nativeSize: number;
  /**
   * The blocks `skipLayerGuidance` may skip, numbered from 0 (an SD 3 transformer's joint
   * blocks); null for models without such blocks (UNets, FLUX).
   */
  skippableBlocks: number | null;
  /** What the model takes beside its prompt (see `ImageCondition`). */
  imageCondition: ImageCondition;
  /** Whether `referenceImage` may be given (FLUX.1 Kontext's input): FLUX models that take the latents alone. */
  takesReferenceImage: boolean;
  /** Whether `guidanceRescale` may be given: UNet models (SD 3's and FLUX's pipelines have none). */
  takesGuidanceRescale: boolean;
  /** What the user should know about the loaded model ("not cached for the next visit"). */
  notes: string[];
}

/**
 * What a model takes beside its prompt, told by its input channels: "none"; "inpaint" (SD's
 * 9-channel inpainting UNets) or "fill" (FLUX.1 Fill), which need `initImage` and `mask`;
 * "control" (FLUX.1 Canny and Depth), which needs `controlImage`.
 */
export type ImageCondition = "none" | "inpaint" | "fill" | "control";

export interface Suggestion {
  /**
   * The chosen candidate: the embedded model's predictor chooses among "baseline",
   * "prompt", "guidance" and "collage", each also with "-mirror" (the model folder's
   * predictor lists its own). A collage is chosen only where it arranges the graph.
   */
  candidate: string;
  /** Its plan, every field filled in. */
  plan: Required<Plan>;
  /** Each candidate's predicted score, [name, share]: the share of the checker's relation checks that pass (of all its checks, for a scene without relations). */
  predicted: [string, number][];
}

export interface MemoryUsage {
  /** The GPU allocator: live allocations, their bytes, and the bytes reserved from the driver. */
  gpu: { allocations: number; bytesInUse: number; bytesReserved: number } | null;
  /** The size of wasm memory (it never shrinks). */
  wasmBytes: number;
}

export interface DeviceInfo {
  adapter: string;
  precision: "f32" | "f16";
  maxBindingBytes: number;
  shaderF16: boolean;
  /**
   * The size of the adapter's subgroups where shaders may use subgroup operations and all
   * have that size, else null (and on the CPU backend). The kernels use them on software
   * adapters such as SwiftShader.
   */
  subgroupLanes: number | null;
  /** No GPU does the work: the CPU backend, or a software WebGPU adapter such as SwiftShader. */
  software: boolean;
}

/** LINA's interventions (docs/lina.md); every field is optional, any other is refused. */
export interface Plan {
  /** Prompt-space guidance on the tokens of physical relations; 0 turns it off. */
  promptStrength?: number;
  /** The fraction of the run it acts in, [start, end]. */
  promptWindow?: [number, number];
  /** Latent-space guidance: each node's phrase inside its region; 0 turns it off. */
  nodeWeight?: number;
  /** Latent-space guidance: effects pushed out of regions they may not reach. */
  effectWeight?: number;
  regionWindow?: [number, number];
  /**
   * Region-controlled cross-attention: each boxed node's words weigh e^strength more inside
   * their box than outside, in every cross-attention layer; 0 turns it off.
   */
  attentionStrength?: number;
  attentionWindow?: [number, number];
  /**
   * Attention-map energies with a latent update: after each step of its window, what a
   * boxed entity's words attend to moves toward its box, this fraction of the way (times the
   * share of their attention still outside, and the map's focus: near 0 for a map spread
   * over the whole image), in [0, 1]; 0 turns it off. Gradient-free: no extra model
   * evaluation (docs/lina.md).
   */
  energyStrength?: number;
  energyWindow?: [number, number];
  /**
   * Name the implied effects ("reflection", "shadow") at the prompt's end and steer their
   * words too (default false: on the embedded model the appended words did harm).
   */
  attentionEffects?: boolean;
  /**
   * Draw the scene's mirror image from the mirrored text (left and right swapped) and keep
   * the scene as asked: for a model that draws one side better (default false; a prompt with
   * no word of direction is unchanged).
   */
  mirror?: boolean;
  /** Schedule warp toward the noisy start; 1 is the plain schedule. */
  warp?: number;
  /**
   * Classifier-free guidance as a factor of the run's `guidanceScale`, in (0, 4]: 1 keeps
   * it (the default), 0.5 halves it.
   */
  guidance?: number;
  /**
   * Start from a collage: each thing the prompt names drawn alone by the model, placed by
   * the graph's layout, and the run redrawn from it at this img2img strength, in [0, 1]
   * (0, the default, for none; 0.1 when turned on by name). Only where two or more things
   * stand apart (no stack, nothing behind another); in a scene lit from one side each
   * thing is drawn lit with its shadow, and room is kept between them. Costs 16 UNet
   * evaluations per thing drawn. Not with `initImage`.
   */
  collage?: number;
}

/** A Causal Scene Graph (schema: docs/probe.md). */
export interface Csg {
  version: number;
  nodes: {
    id: string;
    class: string;
    colour?: string;
    size?: string;
    count?: number;
    fill?: string;
    implied?: boolean;
    /** [x0, y0, x1, y1] in [0, 1] image coordinates. */
    layout?: [number, number, number, number];
    /** For class "thing": its noun ("cat"). */
    name?: string;
    /** Words describing it that no other field holds ("fluffy", "sleeping"). */
    attributes?: string[];
  }[];
  relations: { subject: string; predicate: string; object: string }[];
  light?: string;
}

/** One of the probe checker's verdicts. */
export interface Verdict {
  kind: string;
  check: string;
  passed: boolean;
  detail: string;
}

/**
 * What to generate; any other key is refused ("invalid_input"). The same options drive
 * `sweep`, `reinpaint` and `timesteps`.
 */
export interface GenerateOptions {
  prompt: string;
  negativePrompt?: string;
  /** A whole number in [0, 2^53 - 1]. */
  seed?: number;
  steps?: number;
  /** Explicit timesteps, instead of `steps`. */
  timesteps?: number[];
  guidanceScale?: number;
  width?: number;
  height?: number;
  scheduler?: "ddim" | "euler" | "euler_a" | "dpm++2m" | "lcm" | "flow_euler";
  clipSkip?: number;
  initialLatents?: number[];
  /**
   * The unit noise an ancestral sampler ("euler_a", "lcm") adds at each step, instead of the
   * seed's: one block of the latents' size per step, in step order ([steps, 1, C, H/8, W/8]
   * flattened). With `initialLatents`, the noise diffusers' scheduler drew reproduces its image.
   */
  stepNoise?: number[];
  /**
   * img2img: start from this image (of the output's size) instead of pure noise, and run
   * `strength` of the schedule from it (0 < strength <= 1; default 0.8). The way an SDXL
   * refiner is used, on a base model's image.
   */
  initImage?: ImageInput;
  strength?: number;
  /**
   * Inpainting, with `initImage`: an image of the output's size whose white (red channel at
   * half or more) is regenerated and black kept; blended in the latents every step, or given
   * to an inpainting model (SD's 9-channel UNets, FLUX.1 Fill), which needs one.
   */
  mask?: ImageInput;
  /**
   * FLUX.1 Canny's or Depth's edge or depth map (of the output's size), which those models
   * need and other models refuse; made beforehand, as their pipelines take it. (A
   * ControlNet's image goes in `controlnets`.)
   */
  controlImage?: ImageInput;
  /**
   * What each loaded ControlNet (`loadControlNet`, `addControlNet`) follows, one per
   * ControlNet in the order they were loaded; several ControlNets' additions are summed.
   */
  controlnets?: ControlNetInput[];
  /**
   * The ControlNets' guess mode (diffusers' `guess_mode`): they steer the conditional
   * prediction alone, each one's additions growing from a tenth of its scale at the first
   * skip connection to the whole at the mid block, to draw what the control images show
   * even without a prompt (diffusers suggests guidance 3 to 5). Always on where the first
   * ControlNet averages its outputs (shuffle's).
   */
  controlnetGuessMode?: boolean;
  /**
   * What a loaded T2I-Adapter (`loadT2IAdapter`) follows: its control image (of the output's
   * size) and how strongly it steers (diffusers' `adapter_conditioning_scale`; default 1).
   */
  t2iAdapter?: { image: ImageInput; scale?: number };
  /**
   * FLUX.1 Kontext's input image, which the prompt edits: resized as `referenceSize` says,
   * encoded and given to the transformer beside the latents. FLUX only.
   */
  referenceImage?: ImageInput;
  /**
   * How `referenceImage` is sized before it is encoded: `"trained"` (the default, as diffusers'
   * `FluxKontextPipeline` does) takes the size Kontext was trained at nearest its aspect ratio
   * (a 1000x700 image becomes 1248x832); `"kept"` keeps its own size. Either way its sides are
   * then cut to multiples of 16, resampled with Pillow's Lanczos filter, as diffusers does.
   */
  referenceSize?: "trained" | "kept";
  /**
   * Stop where the schedule is this fraction of the way from noise to image (diffusers'
   * `denoising_end`, in (0, 1)); the result then has `latents` for a refiner to continue.
   */
  denoisingEnd?: number;
  /**
   * Continue latents another run handed over (its result's `latents`) from `denoisingStart`
   * (in (0, 1)) on, with no noise added: an SDXL refiner after its base model. Both or neither.
   */
  handoffLatents?: number[] | Float32Array;
  denoisingStart?: number;
  /** LINA's interventions. */
  plan?: Plan;
  /** Parsed from the prompt when absent. */
  csg?: Csg;
  /** Record each step's cross-attention maps of the prompt's words (the result's `attention`). */
  attentionMaps?: boolean;
  /**
   * SD 3.5's skip-layer guidance (transformer models only; it acts only with classifier-free
   * guidance on): in step `i` of `n` with `start * n < i < stop * n`, one more transformer call
   * on the prompt with the joint blocks `layers` skipped, and the guided prediction moved by
   * `scale` times the difference. Defaults as diffusers: scale 2.8, start 0.01, stop 0.2.
   * Stability suggests layers [7, 8, 9] for SD 3.5 medium. Any other key is refused.
   */
  skipLayerGuidance?: SkipLayerGuidance;
  /**
   * FLUX's classifier-free guidance beside the guidance its transformer embeds (diffusers'
   * `true_cfg_scale`): above 1, each step also runs the negative prompt (which it then
   * requires) and takes `negative + scale * (prompt - negative)`. Refused on other models.
   */
  trueCfgScale?: number;
  /**
   * Guidance rescale (diffusers' `guidance_rescale`, 0 to 1, default 0): with classifier-free
   * guidance, brings each step's guided prediction toward the conditional prediction's
   * spread, against the overexposure of strong guidance; 0.7 for models trained at zero
   * terminal SNR. UNet models only.
   */
  guidanceRescale?: number;
}

export interface SkipLayerGuidance {
  layers: number[];
  scale?: number;
  start?: number;
  stop?: number;
}

/** An image as the API returns it, ready for `new ImageData(rgba, width, height)`. */
export interface Image {
  width: number;
  height: number;
  rgba: Uint8ClampedArray<ArrayBuffer>;
}

/** An image as the API takes it: an `ImageData` will do. Alpha is ignored. */
export interface ImageInput {
  width: number;
  height: number;
  rgba: Uint8ClampedArray | Uint8Array;
}

export interface GenerateResult extends Image {
  warnings: string[];
  /** What LINA's plan did, in words. */
  interventions: string[];
  /** With `attentionMaps: true`. */
  attention?: AttentionMaps;
  /** With `denoisingEnd`: the latents where the run stopped, for a refiner's `handoffLatents`. */
  latents?: Float32Array;
}

/**
 * Where the image attended to each of the prompt's words, step by step: the mean over the
 * UNet's cross-attention layers and heads, at the latents' size. The start, end and padding
 * tokens are left out.
 */
export interface AttentionMaps {
  /** Each token's position in the text encoding and the word it belongs to. */
  tokens: { position: number; word: string }[];
  height: number;
  width: number;
  /** Per step: `tokens.length` maps of `height * width` probabilities, one after another. */
  steps: Float32Array<ArrayBuffer>[];
}

export interface StepEvent {
  step: number;
  steps: number;
  timestep: number;
  /** With `preview: true`: the predicted clean image so far. */
  preview?: Image;
}

/** Any other key is refused ("invalid_input"). */
export interface GenerateControls extends Controls {
  /**
   * Called after every step. If it throws, the generation stops and rejects with code
   * "callback".
   */
  onStep?: (event: StepEvent) => void;
  /** Pass `onStep` a preview of the image at every step (TAESD where the model has it). */
  preview?: boolean;
}

export interface SweepResult {
  baselinePassed: number;
  checks: number;
  points: { step: number; change: number; passed: number; checks: number }[];
}

/**
 * Starts a worker and loads a model into it; the promise rejects (and the worker is stopped)
 * if the load fails.
 */
export declare function loadModel(source?: ModelSource): Promise<LinaModel>;

/**
 * A model in its own Web Worker. Calls run there one at a time, in the order they are made;
 * only `cancel`, `dispose` and aborts act at once.
 */
export declare class LinaModel {
  /** Starts the worker; nothing is loaded until `load`. */
  constructor();
  /**
   * The loaded model's device: null from the moment `load` is called until it succeeds, and
   * after a crash.
   */
  deviceInfo: DeviceInfo | null;
  /** The loaded model's native image side in pixels; null whenever `deviceInfo` is. */
  nativeSize: number | null;
  /** The blocks `skipLayerGuidance` may skip (SD 3's); null for other models and whenever `deviceInfo` is. */
  skippableBlocks: number | null;
  /** What the model takes beside its prompt; null whenever `deviceInfo` is. */
  imageCondition: ImageCondition | null;
  /** Whether `referenceImage` may be given; null whenever `deviceInfo` is. */
  takesReferenceImage: boolean | null;
  /** Whether `guidanceRescale` may be given; null whenever `deviceInfo` is. */
  takesGuidanceRescale: boolean | null;
  /** What the user should know about the loaded model ("not cached for the next visit"). */
  notes: string[];
  /**
   * (Re)loads a model into this worker: from `url`, from `files`, or the default model. The
   * old model is dropped when the load starts, so a load that fails, or is aborted while it
   * runs, leaves none. Also the way back after "device_lost" or "worker_crashed".
   */
  load(source?: ModelSource): Promise<LoadResult>;
  generate(options: GenerateOptions, controls?: GenerateControls): Promise<GenerateResult>;
  /**
   * Stops the running call, if any (a load between chunks, its downloads aborted; a
   * generation, sweep or re-inpainting after its current step): it rejects with code
   * "cancelled". Queued calls are left to run; abort their signals to drop them.
   */
  cancel(): void;
  /**
   * LINA's step sweep: the plan's guidance (LINA's default plan when the options have none) at
   * one step at a time: how much each step's guidance changes the image (mean absolute
   * change, 0..255) and how many checks then pass.
   */
  sweep(options: GenerateOptions, controls?: Controls): Promise<SweepResult>;
  /** Regenerates the CSG node `node`'s region of `image` from `strength` of the schedule on. */
  reinpaint(
    options: GenerateOptions,
    image: ImageInput,
    node: string,
    strength: number,
    controls?: Controls,
  ): Promise<Image & { before: Verdict[]; after: Verdict[] }>;
  /** The probe checker's verdicts on `image` for the scene graph `csg`. Needs no model. */
  checkImage(image: ImageInput, csg: Csg): Promise<Verdict[]>;
  /** The scene graph a prompt describes, with the effects physics implies. Needs no model. */
  parsePrompt(prompt: string): Promise<Csg>;
  /** Resolves to the graph if it is valid; rejects naming the problem. Needs no model. */
  validateCsg(csg: Csg): Promise<Csg>;
  /**
   * The graph with a box for every node the prompt names that has none, derived from its
   * relations: where LINA's layout controls steer when no box was drawn. Needs no model.
   */
  deriveLayout(csg: Csg): Promise<Csg>;
  /** LINA's default plan, every field filled in. Needs no model. */
  linaPlan(): Promise<Required<Plan>>;
  /**
   * The learned predictor's plan for a prompt (and its scene graph, else the prompt's own);
   * null when the model folder has no lina_predictor.json.
   */
  suggestPlan(prompt: string, csg?: Csg): Promise<Suggestion | null>;
  /** The run's timesteps without and with the options' plan. */
  timesteps(options: GenerateOptions): Promise<{ plain: number[]; planned: number[] }>;
  /**
   * Sets the scale of each LoRA the model was loaded with (`loras`, in their order) without
   * loading it again: the parts they adapt are rebuilt from weights kept on the GPU. A wrong
   * count, a scale that is not finite, or a model loaded without LoRAs rejects with
   * "invalid_input" and changes nothing.
   */
  setLoraScales(scales: number[]): Promise<void>;
  /**
   * Loads a ControlNet (diffusers' `ControlNetModel`: SD 1.x, 2.x or SDXL, matching the
   * model) beside the UNet, replacing any loaded before; every generation after needs its
   * input in `controlnets`. One that does not fit the model (a transformer model, other blocks or
   * text width) rejects with "config" or "invalid_input", a bad weight file with
   * "weight_file", and the one loaded before stays.
   */
  loadControlNet(source: ControlNetSource): Promise<void>;
  /**
   * Loads one more ControlNet beside those loaded: generations then give each its input in
   * `controlnets`, and their additions are summed (diffusers' `MultiControlNetModel`). A
   * refused one leaves those loaded.
   */
  addControlNet(source: ControlNetSource): Promise<void>;
  /** Drops the loaded ControlNets. */
  removeControlNets(): Promise<void>;
  /**
   * Loads a T2I-Adapter (diffusers' `T2IAdapter`, full type: SD 1.x's and 2.x's) beside the
   * UNet, replacing any loaded before; every generation after needs `t2iAdapter`. One whose
   * widths or downscale do not fit the model rejects with "config", on a transformer model
   * with "invalid_input".
   */
  loadT2IAdapter(source: T2IAdapterSource): Promise<void>;
  /** Drops the loaded T2I-Adapter. */
  removeT2IAdapter(): Promise<void>;
  /**
   * Sets how many tokens T5's text is padded or cut to for every generation after (diffusers'
   * `max_sequence_length`): SD 3 and FLUX only, 1 to 512; by default the pipelines' (SD 3's
   * 256, FLUX's 512). FLUX.1 schnell's model card passes 256. Another length, or a model
   * without T5's places, rejects with "invalid_input" and changes nothing.
   */
  setMaxSequenceLength(tokens: number): Promise<void>;
  /** The model's memory, for leak checks. */
  memoryUsage(): Promise<MemoryUsage>;
  /**
   * Times `repeat` (default 10) UNet calls (batch 2, native size) after one warm-up call, in
   * the worker; for benchmarks (www/bench.html).
   */
  benchUnet(repeat?: number, controls?: Controls): Promise<{ warmupMs: number; timesMs: number[] }>;
  /**
   * Stops the worker, releasing its memory; pending calls reject with code "disposed", and so
   * does every later call.
   */
  dispose(): void;
}
