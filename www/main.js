// The page: a client of the embed API (lina.js), which runs the model in a Web Worker so that
// the page stays responsive while the model loads and generates.
import { loadModel } from "./lina.js";
import { withMetadata } from "./png.js";

const $ = (id) => document.getElementById(id);
const status = (text, isError = false) => {
  $("status").textContent = text;
  $("status").classList.toggle("error", isError);
};

let model = null;
let running = null;
// What the model was loaded from, to load it again after a device failure.
let source = {};

const onProgress = ({ path, received, total }) => {
  if (total) $("progress").value = received / total;
  status(`Downloading ${path}: ${(received / 1048576).toFixed(1)} MiB`);
};

// The controls that make up the settings, by option name; the page's address carries them
// (#prompt=…&seed=…), so a link reproduces an image.
const FIELDS = {
  prompt: "prompt",
  negativePrompt: "negative",
  seed: "seed",
  steps: "steps",
  guidanceScale: "guidance",
  scheduler: "scheduler",
};

function restoreFromAddress() {
  const params = new URLSearchParams(location.hash.slice(1));
  for (const [name, id] of Object.entries(FIELDS)) {
    if (params.has(name)) $(id).value = params.get(name);
  }
}

function saveToAddress() {
  const params = new URLSearchParams();
  for (const [name, id] of Object.entries(FIELDS)) params.set(name, $(id).value);
  history.replaceState(null, "", `#${params}`);
}

// The last image's settings, saved with it.
let drawnWith = null;

async function savePng() {
  const blob = await new Promise((resolve) => $("image").toBlob(resolve, "image/png"));
  const png = withMetadata(new Uint8Array(await blob.arrayBuffer()), drawnWith);
  const link = document.createElement("a");
  link.href = URL.createObjectURL(new Blob([png], { type: "image/png" }));
  link.download = `lina-${drawnWith.seed}.png`;
  link.click();
  setTimeout(() => URL.revokeObjectURL(link.href), 10_000);
}

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

function draw(image) {
  const canvas = $("image");
  canvas.width = image.width;
  canvas.height = image.height;
  canvas.getContext("2d").putImageData(new ImageData(image.rgba, image.width, image.height), 0, 0);
}

function ready(notes = []) {
  const device = model.deviceInfo;
  status([`Ready (${device.adapter}, ${device.precision}).`, ...notes].join(" "));
  $("generate").disabled = false;
}

async function generate(event) {
  event.preventDefault();
  $("generate").disabled = true;
  $("save").disabled = true;
  $("cancel").disabled = false;
  $("progress").value = 0;
  const started = performance.now();
  running = new AbortController();
  saveToAddress();
  const options = readOptions();
  try {
    const result = await model.generate(options, {
      signal: running.signal,
      previews: $("previews").checked,
      onStep: ({ step, steps, timestep, preview }) => {
        $("progress").value = step / steps;
        status(`Step ${step}/${steps} (t = ${timestep.toFixed(0)})`);
        if (preview) draw(preview);
      },
    });
    draw(result);
    drawnWith = { ...options, page: location.href };
    $("save").disabled = false;
    const seconds = ((performance.now() - started) / 1000).toFixed(2);
    status([`Done in ${seconds} s.`, ...result.warnings].join(" "));
  } catch (error) {
    status(error.message, true);
    // A failed GPU device (lost, out of memory) took the model's weights with it; a fresh
    // device comes with the next load, so load the model again rather than the page.
    if (error.message.includes("load the model again")) await reload(error.message);
  } finally {
    running = null;
    $("generate").disabled = model === null;
    $("cancel").disabled = true;
  }
}

// Loads another model into the worker; on failure the page says why and has no model until
// one loads.
async function switchModel(wanted, what) {
  $("generate").disabled = true;
  status(`Loading ${what}…`);
  try {
    const { notes } = await model.load({ ...wanted, onProgress });
    source = wanted;
    $("progress").value = 0;
    ready(notes);
  } catch (error) {
    status(`${what}: ${error.message}`, true);
  }
}

// The folder picker gives paths under the chosen folder ("my-model/unet/config.json"); the
// model wants them from the folder down.
function folderFiles(list) {
  const files = {};
  for (const file of list) {
    const path = file.webkitRelativePath || file.name;
    files[path.slice(path.indexOf("/") + 1)] = file;
  }
  return files;
}

async function reload(reason) {
  try {
    await model.load({ ...source, onProgress });
    status(`${reason} The model was loaded again; try once more.`, true);
  } catch (error) {
    status(`${reason} Loading the model again failed: ${error.message}`, true);
  }
}

async function main() {
  $("controls").addEventListener("submit", generate);
  $("cancel").addEventListener("click", () => running?.abort());
  $("save").addEventListener("click", savePng);
  restoreFromAddress();
  $("model-folder").addEventListener("change", (event) =>
    switchModel({ files: folderFiles(event.target.files) }, "the model from the folder"),
  );
  $("load-url").addEventListener("click", () =>
    switchModel({ url: $("model-url").value }, `the model at ${$("model-url").value}`),
  );
  $("load-default").addEventListener("click", () => switchModel({}, "the embedded model"));
  try {
    if (!navigator.gpu) throw new Error("This browser has no WebGPU (navigator.gpu is missing).");
    status("Starting…");
    model = await loadModel({ onProgress });
    $("progress").value = 0;
    ready(model.notes);
  } catch (error) {
    status(error.message, true);
  }
}

main();
