// Types of the embed API (lina.js).

/** The embedded default model's folder URL. */
export const DEFAULT_MODEL_URL: string;

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

export interface ModelSource {
  /** A diffusers-layout folder (the default model when neither url nor files is given). */
  url?: string;
  /** Diffusers paths ("unet/config.json") to file contents. */
  files?: Record<string, Blob | Uint8Array>;
  backend?: Backend;
  /** The CPU backend computes in f32. */
  precision?: Precision;
  kernels?: Kernels;
  /** Download or read progress, per file, in bytes. */
  onProgress?: (progress: { path: string; received: number; total: number | undefined }) => void;
  /** Aborting it stops the load, downloads included; the load rejects with "cancelled". */
  signal?: AbortSignal;
  /** Where lina-worker.js is, when not next to lina.js. */
  workerUrl?: string | URL;
}

export interface Suggestion {
  /** The chosen candidate: "baseline", "schedule", "prompt", "regions", "lina" or "lina-strong". */
  candidate: string;
  /** Its plan, every field filled in. */
  plan: Required<Plan>;
  /** Each candidate's predicted share of the checker's checks that pass, [name, share]. */
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
}

/** LINA's interventions (docs/lina.md); every field is optional. */
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
  /** Schedule warp toward the noisy start; 1 is the plain schedule. */
  warp?: number;
  /** Where a layout the CSG lacks is read off the predicted image, as a fraction of the run. */
  layoutAt?: number;
  /**
   * Latent repairs of what the probe's checker finds wrong in the model's own prediction
   * (a shadow toward the light, a reflection past its mirror, a jar's level, colours bound
   * to the wrong objects), in [0, 1]; 0 turns them off.
   */
  repairStrength?: number;
  repairWindow?: [number, number];
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

export interface GenerateOptions {
  prompt: string;
  negativePrompt?: string;
  seed?: number;
  steps?: number;
  /** Explicit timesteps, instead of `steps`. */
  timesteps?: number[];
  guidanceScale?: number;
  width?: number;
  height?: number;
  scheduler?: "ddim" | "euler" | "euler_a" | "dpm++2m" | "lcm";
  clipSkip?: number;
  initialLatents?: number[];
  plan?: Plan;
  /** Parsed from the prompt when absent. */
  csg?: Csg;
}

export interface Image {
  width: number;
  height: number;
  rgba: Uint8ClampedArray;
}

export interface GenerateResult extends Image {
  warnings: string[];
  /** What LINA's plan did, in words. */
  interventions: string[];
}

export interface StepEvent {
  step: number;
  steps: number;
  timestep: number;
  /** With `previews: true`: the predicted clean image so far. */
  preview?: Image;
}

export interface GenerateControls {
  onStep?: (event: StepEvent) => void;
  previews?: boolean;
  signal?: AbortSignal;
}

export declare function loadModel(source?: ModelSource): Promise<LinaModel>;

export declare class LinaModel {
  constructor(workerUrl?: string | URL);
  deviceInfo: DeviceInfo | null;
  nativeSize: number | null;
  /** What the user should know about the loaded model ("not cached for the next visit"). */
  notes: string[];
  load(source?: ModelSource): Promise<{ deviceInfo: DeviceInfo; nativeSize: number; notes: string[] }>;
  generate(options: GenerateOptions, controls?: GenerateControls): Promise<GenerateResult>;
  cancel(): void;
  /**
   * The learned predictor's plan for a prompt (and its scene graph, else the prompt's own);
   * null when the model folder has no lina_predictor.json.
   */
  suggestPlan(prompt: string, csg?: object): Promise<Suggestion | null>;
  /** Times `repeat` UNet calls (batch 2, native size) after one warm-up call, in the worker. */
  benchUnet(repeat?: number): Promise<{ warmupMs: number; timesMs: number[] }>;
  /** The model's memory, for leak checks. */
  memoryUsage(): Promise<MemoryUsage>;
  /** The plan's guidance at one step at a time: how much each step's guidance changes the
   * image (mean absolute change, 0..255) and how many checks then pass. */
  sweep(options: GenerateOptions): Promise<{
    baselinePassed: number;
    checks: number;
    points: { step: number; change: number; passed: number; checks: number }[];
  }>;
  reinpaint(
    options: GenerateOptions,
    image: Image,
    node: string,
    strength: number,
  ): Promise<Image & { before: Verdict[]; after: Verdict[] }>;
  checkImage(image: Image, csg: object): Promise<Verdict[]>;
  parsePrompt(prompt: string): Promise<Csg>;
  validateCsg(csg: Csg): Promise<Csg>;
  linaPlan(): Promise<Required<Plan>>;
  timesteps(options: GenerateOptions): Promise<{ plain: number[]; planned: number[] }>;
  loseDeviceForTesting(): Promise<void>;
  dispose(): void;
}
