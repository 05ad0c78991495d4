// The page: a thin driver over the wasm API (www/pkg, built by scripts/build-web.sh).
import init, { ModelLoader, Pipeline } from "./pkg/lina.js";

const MODEL_URL = "models/default/";
// The diffusers folder layout; optional files may be absent.
const MODEL_FILES = {
  required: [
    "scheduler/scheduler_config.json",
    "text_encoder/config.json",
    "unet/config.json",
    "vae/config.json",
  ],
  weights: [
    "text_encoder/model.safetensors",
    "unet/diffusion_pytorch_model.safetensors",
    "vae/diffusion_pytorch_model.safetensors",
  ],
  optional: [
    "tokenizer/tokenizer.json",
    "tokenizer/tokenizer_config.json",
    "tokenizer/vocab.json",
    "tokenizer/merges.txt",
  ],
};

const $ = (id) => document.getElementById(id);
const status = (text, isError = false) => {
  $("status").textContent = text;
  $("status").classList.toggle("error", isError);
};

// Every file streams into the loader: weight files go to the GPU tensor by tensor as their
// bytes arrive, so none is ever whole in memory and the progress bar follows the download.
async function loadModel() {
  const loader = await ModelLoader.create();
  const all = [
    ...MODEL_FILES.required.map((p) => [p, true]),
    ...MODEL_FILES.weights.map((p) => [p, true]),
    ...MODEL_FILES.optional.map((p) => [p, false]),
  ];
  for (const [path, required] of all) {
    status(`Downloading ${path}…`);
    const found = await loader.fetch(path, MODEL_URL + path, (received, total) => {
      if (total) $("progress").value = received / total;
      status(`Downloading ${path}: ${(received / 1048576).toFixed(1)} MiB`);
    });
    if (!found && required) throw new Error(`${path}: not found at ${MODEL_URL}${path}`);
  }
  $("progress").value = 0;
  status("Building the model…");
  return Pipeline.fromLoader(loader);
}

let pipeline = null;

function readOptions() {
  const options = {
    prompt: $("prompt").value,
    negativePrompt: $("negative").value,
    seed: Number($("seed").value),
    steps: Number($("steps").value),
    guidanceScale: Number($("guidance").value),
  };
  if ($("scheduler").value) options.scheduler = $("scheduler").value;
  return options;
}

function draw(result) {
  const canvas = $("image");
  canvas.width = result.width;
  canvas.height = result.height;
  canvas.getContext("2d").putImageData(new ImageData(result.rgba, result.width, result.height), 0, 0);
}

async function generate(event) {
  event.preventDefault();
  $("generate").disabled = true;
  $("cancel").disabled = false;
  $("progress").value = 0;
  const started = performance.now();
  try {
    const result = await pipeline.generate(readOptions(), (step, steps, timestep) => {
      $("progress").value = step / steps;
      status(`Step ${step}/${steps} (t = ${timestep.toFixed(0)})`);
      // Yield to the event loop so the page paints and a Cancel click is seen.
      return new Promise((resolve) => setTimeout(resolve, 0));
    });
    draw(result);
    const seconds = ((performance.now() - started) / 1000).toFixed(2);
    status([`Done in ${seconds} s.`, ...result.warnings].join(" "));
  } catch (error) {
    status(error.message, true);
  } finally {
    $("generate").disabled = false;
    $("cancel").disabled = true;
  }
}

async function main() {
  try {
    await init();
    if (!navigator.gpu) throw new Error("This browser has no WebGPU (navigator.gpu is missing).");
    pipeline = await loadModel();
    status("Ready.");
    $("generate").disabled = false;
  } catch (error) {
    status(error.message, true);
  }
  $("controls").addEventListener("submit", generate);
  $("cancel").addEventListener("click", () => pipeline && pipeline.cancel());
}

main();
