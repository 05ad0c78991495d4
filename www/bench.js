// The browser benchmark (www/bench.html): time to first image phase by phase, then warm UNet
// call, step and image latencies, LINA's overhead and GPU memory; and, given ONNX Runtime Web,
// the same UNet call in it, in the same page. Every repeated figure is the median, min and
// max of `repeat` runs after a warm-up, as `lina-cli bench` reports natively.
import { DEFAULT_MODEL_URL, LinaModel } from "./lina.js";

const params = new URLSearchParams(location.search);
const repeat = Number(params.get("repeat") ?? 5);
const steps = Number(params.get("steps") ?? 20);
const modelUrl = params.get("model") ?? DEFAULT_MODEL_URL;
const backend = params.get("backend") ?? "auto";
const kernels = params.get("kernels") ?? "fused";
const PROMPT = "a red ball on a mirror";
const status = document.getElementById("status");

function summary(samples) {
  const sorted = [...samples].sort((a, b) => a - b);
  const n = sorted.length;
  const median = n % 2 ? sorted[(n - 1) / 2] : (sorted[n / 2 - 1] + sorted[n / 2]) / 2;
  return { runs: n, median, min: sorted[0], max: sorted[n - 1] };
}

/** One generation, with the time of each step (from the worker's per-step reports). */
async function timedImage(model, options) {
  const start = performance.now();
  const stepsMs = [];
  let last = start;
  await model.generate(options, {
    onStep: () => {
      const now = performance.now();
      stepsMs.push(now - last);
      last = now;
    },
  });
  return { totalMs: performance.now() - start, stepsMs };
}

async function ours() {
  const results = {};
  const t0 = performance.now();
  status.textContent = "Starting the worker and wasm…";
  const model = new LinaModel();
  // A request that needs no model: the worker has compiled and started the wasm module.
  const plan = await model.linaPlan();
  const wasmMs = performance.now() - t0;
  status.textContent = "Loading the model…";
  let t = performance.now();
  const loaded = await model.load({ url: modelUrl, backend, precision: "f32", kernels });
  const loadMs = performance.now() - t;
  status.textContent = "First image…";
  const options = { prompt: PROMPT, steps, seed: 0 };
  const first = await timedImage(model, options);
  results.timeToFirstImage = {
    wasmMs,
    loadMs,
    firstStepMs: first.stepsMs[0],
    imageMs: first.totalMs,
    totalMs: performance.now() - t0,
  };
  results.adapter = loaded.deviceInfo.adapter;
  results.notes = loaded.notes;
  // A second visit's time to first image needs nothing more (tests/bench/bench.mjs).
  if (params.get("only") === "first-image") {
    model.dispose();
    return results;
  }

  status.textContent = "UNet calls…";
  const unet = await model.benchUnet(repeat);
  results.unetMs = summary(unet.timesMs);
  // The fused kernels' comparison visit needs only the UNet call (tests/bench/bench.mjs).
  if (params.get("only") === "unet") {
    model.dispose();
    return results;
  }
  const [stepMs, imageMs, linaMs] = [[], [], []];
  for (let seed = 0; seed < repeat; seed++) {
    status.textContent = `Images ${seed + 1}/${repeat}…`;
    const run = await timedImage(model, { ...options, seed });
    stepMs.push(...run.stepsMs);
    imageMs.push(run.totalMs);
    t = performance.now();
    await model.generate({ ...options, seed, plan });
    linaMs.push(performance.now() - t);
  }
  Object.assign(results, {
    stepMs: summary(stepMs),
    imageMs: summary(imageMs),
    linaImageMs: summary(linaMs),
    gpuBytesReserved: (await model.memoryUsage()).gpu?.bytesReserved ?? null,
  });
  model.dispose();
  return results;
}

/** A reproducible normal sample (Box-Muller on a linear congruential generator). */
function normals(n, seed) {
  let state = seed >>> 0;
  const uniform = () => ((state = (Math.imul(state, 1664525) + 1013904223) >>> 0) + 1) / 4294967297;
  return Float32Array.from({ length: n }, () => Math.sqrt(-2 * Math.log(uniform())) * Math.cos(2 * Math.PI * uniform()));
}

/** The same UNet call (shapes as lina::bench::UnetCall) in ONNX Runtime Web. */
async function onnxRuntime(config) {
  const ort = await import(params.get("ort"));
  ort.env.wasm.wasmPaths = new URL(".", new URL(params.get("ort"), location.href)).href;
  // Our runtime has one wasm thread; without cross-origin isolation ORT gets one too.
  ort.env.wasm.numThreads = 1;
  const size = config.sample_size;
  const feeds = {
    sample: new ort.Tensor("float32", normals(2 * config.in_channels * size * size, 1), [2, config.in_channels, size, size]),
    timestep: new ort.Tensor("float32", Float32Array.of(500), [1]),
    encoder_hidden_states: new ort.Tensor("float32", normals(2 * 77 * config.cross_attention_dim, 2), [2, 77, config.cross_attention_dim]),
  };
  const out = { version: ort.env.versions?.web ?? "?" };
  for (const provider of ["webgpu", "wasm"]) {
    status.textContent = `ONNX Runtime Web (${provider})…`;
    try {
      const t0 = performance.now();
      const session = await ort.InferenceSession.create(params.get("onnx"), {
        executionProviders: [provider],
        externalData: [{ path: "diffusion_pytorch_model.safetensors", data: params.get("weights") }],
      });
      const createMs = performance.now() - t0;
      const times = [];
      for (let i = 0; i <= repeat; i++) {
        const t = performance.now();
        const result = await session.run(feeds);
        times.push(performance.now() - t);
        if (!Number.isFinite(result.noise_pred.data[0])) throw new Error("non-finite output");
      }
      out[provider] = { createMs, warmupMs: times[0], unetMs: summary(times.slice(1)) };
      await session.release();
    } catch (error) {
      out[provider] = { error: String(error?.message ?? error) };
    }
  }
  return out;
}

try {
  const results = { repeat, steps, model: modelUrl, userAgent: navigator.userAgent };
  Object.assign(results, await ours());
  if (params.get("ort")) {
    const config = await (await fetch(new URL("unet/config.json", modelUrl))).json();
    results.onnxRuntimeWeb = await onnxRuntime(config);
  }
  window.benchResults = results;
  document.getElementById("results").textContent = JSON.stringify(results, null, 2);
  status.textContent = "Done.";
} catch (error) {
  window.benchResults = { error: error.message };
  status.textContent = `Error: ${error.message}`;
}
