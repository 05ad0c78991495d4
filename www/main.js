// The page: a client of the embed API (lina.js), which runs the model in a Web Worker so that
// the page stays responsive while the model loads and generates.
import { loadModel } from "./lina.js";
import { withMetadata } from "./png.js";
import { CsgEditor } from "./csg-editor.js";
import { plotSchedule, plotSweep } from "./plots.js";
import { LayoutBoxes } from "./layout-boxes.js";
import { AttentionOverlay } from "./attention-maps.js";

const $ = (id) => document.getElementById(id);
const status = (text, isError = false) => {
  $("status").textContent = text;
  $("status").classList.toggle("error", isError);
};

let model = null;
// The running generation's or load's abort controller, for the Cancel button.
let running = null;
// What the model was loaded from, to load it again after a device failure.
let source = {};

// A failed GPU device (lost, out of memory) took the model's weights with it, and a crashed
// worker took the whole model: a fresh device or worker comes with the next load, so the page
// loads the model again rather than asking for a reload of the page. The runtime's "device"
// errors are also other failures (no adapter), told apart by what they ask for.
const needsReload = (error) =>
  error.code === "device_lost" ||
  error.code === "worker_crashed" ||
  (error.code === "device" && error.message.includes("load the model again"));

// Shows why a call failed, and loads the model again where the failure took it.
async function failed(error) {
  status(error.message, true);
  if (needsReload(error)) await reload(error.message);
}

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

// With LINA on, the address carries the plan too (lina=JSON), and an edited scene graph
// (csg=JSON); those need the model, so they are applied once it has loaded.
const address = new URLSearchParams(location.hash.slice(1));

function restoreFromAddress() {
  for (const [name, id] of Object.entries(FIELDS)) {
    if (address.has(name)) $(id).value = address.get(name);
  }
}

async function restoreLinaFromAddress() {
  try {
    if (address.has("lina")) {
      $("use-lina").checked = true;
      showPlan({ ...readPlan(), ...JSON.parse(address.get("lina")) });
    }
    if (address.has("csg") && (await acceptGraph(JSON.parse(address.get("csg")), true))) editor.show(csg);
  } catch (error) {
    status(`The link's LINA settings are unreadable: ${error.message}`, true);
  }
}

function saveToAddress() {
  const params = new URLSearchParams();
  for (const [name, id] of Object.entries(FIELDS)) params.set(name, $(id).value);
  if ($("use-lina").checked) params.set("lina", JSON.stringify(readPlan()));
  if ($("use-lina").checked && graphEdited && csg) params.set("csg", JSON.stringify(csg));
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

function baseOptions() {
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

// With LINA: the plan from the controls and the scene graph from the editor.
function linaOptions() {
  return csg ? { ...baseOptions(), plan: readPlan(), csg } : { ...baseOptions(), plan: readPlan() };
}

function readOptions() {
  return $("use-lina").checked ? linaOptions() : baseOptions();
}

// ---- LINA: the plan's controls, the schedule plot, the scene graph ----

const number = (id) => Number($(id).value);

function readPlan() {
  return {
    promptStrength: number("promptStrength"),
    promptWindow: [number("promptStart"), number("promptEnd")],
    nodeWeight: number("nodeWeight"),
    effectWeight: number("effectWeight"),
    regionWindow: [number("regionStart"), number("regionEnd")],
    attentionStrength: number("attentionStrength"),
    attentionWindow: [number("attentionStart"), number("attentionEnd")],
    warp: number("warp"),
  };
}

function showPlan(plan) {
  for (const id of ["promptStrength", "nodeWeight", "effectWeight", "attentionStrength", "warp"]) {
    $(id).value = plan[id];
  }
  [$("promptStart").value, $("promptEnd").value] = plan.promptWindow;
  [$("regionStart").value, $("regionEnd").value] = plan.regionWindow;
  [$("attentionStart").value, $("attentionEnd").value] = plan.attentionWindow;
  $("warp-value").value = plan.warp;
}

async function replotSchedule() {
  $("warp-value").value = $("warp").value;
  try {
    plotSchedule($("schedule-plot"), await model.timesteps({ ...baseOptions(), plan: readPlan() }));
  } catch (error) {
    status(error.message, true);
  }
}

// The scene graph: parsed from the prompt as it is typed, until the user edits it.
let csg = null;
let graphEdited = false;

const csgStatus = (text, isError = false) => {
  $("csg-status").textContent = text;
  $("csg-status").classList.toggle("error", isError);
};

const editor = new CsgEditor({
  nodes: $("csg-nodes"),
  relations: $("csg-relations"),
  json: $("csg-json"),
  onChange: (next) => acceptGraph(next, true),
});

const boxes = new LayoutBoxes($("layout-boxes"), (id, box) => editor.setLayout(id, box));

const attention = new AttentionOverlay({
  panel: $("attention"),
  words: $("attention-words"),
  step: $("attention-step"),
  stepValue: $("attention-step-value"),
  canvas: $("attention-overlay"),
});

async function acceptGraph(next, edited) {
  // An edit wins over a parse of the prompt still in flight from the moment it is made, not
  // once the worker has validated it: a parse landing in between would put back the
  // prompt's graph (and its derived boxes) over the edit.
  if (edited) graphEdited = true;
  try {
    csg = await model.validateCsg(next);
    listNodes();
    boxes.show(csg);
    graphEdited = edited;
    csgStatus(edited ? "Edited: the graph no longer follows the prompt." : "");
    return true;
  } catch (error) {
    csgStatus(error.message, true);
    return false;
  }
}

// The prompt's graph comes with a layout box for every node it names, derived from its
// relations: the boxes LINA's layout controls would steer toward anyway, shown so that they
// can be seen and dragged.
async function graphFromPrompt() {
  if (graphEdited || !model) return;
  try {
    const parsed = await model.deriveLayout(await model.parsePrompt($("prompt").value));
    // An edit or an import that landed while the prompt was parsed wins over it.
    if (graphEdited) return;
    csg = parsed;
    editor.show(csg);
    listNodes();
    boxes.show(csg);
    const boxed = csg.nodes.some((node) => node.layout);
    csgStatus(boxed ? "Layout boxes derived from the prompt's relations: drag them over the image to change them." : "");
    await suggestPlan();
  } catch (error) {
    if (graphEdited) return;
    csg = null;
    csgStatus(error.message, true);
  }
}

// The learned predictor's plan for the prompt and its graph, shown beside the controls; the
// button copies it into them, where every value can still be changed.
let suggested = null;

async function suggestPlan() {
  suggested = null;
  $("use-suggestion").disabled = true;
  const suggestion = await model.suggestPlan($("prompt").value, csg ?? undefined);
  if (!suggestion) {
    $("suggestion").textContent = "This model has no learned plan predictor.";
    return;
  }
  const percent = (share) => `${(100 * share).toFixed(0)}%`;
  const others = suggestion.predicted.map(([name, share]) => `${name} ${percent(share)}`).join(", ");
  $("suggestion").textContent = `The predictor suggests "${suggestion.candidate}" (predicted share of checks passed: ${others}).`;
  suggested = suggestion.plan;
  $("use-suggestion").disabled = false;
}

async function importGraph() {
  let parsed;
  try {
    parsed = JSON.parse($("csg-json").value);
  } catch (error) {
    csgStatus(`The JSON does not parse: ${error.message}`, true);
    return;
  }
  if (await acceptGraph(parsed, true)) editor.show(csg);
}

function showVerdicts(list, verdicts) {
  list.replaceChildren(
    ...verdicts.map((v) => {
      const item = document.createElement("li");
      item.className = v.passed ? "passed" : "failed";
      item.textContent = `${v.check}${v.passed ? "" : ` (${v.detail})`}`;
      return item;
    }),
  );
}

function drawInto(id, image) {
  const canvas = $(id);
  canvas.width = image.width;
  canvas.height = image.height;
  canvas.getContext("2d").putImageData(new ImageData(image.rgba, image.width, image.height), 0, 0);
}

// Diagnostics: the step sweep, and re-inpainting one node's region of the last image.
async function sweep() {
  $("sweep").disabled = true;
  status("Sweeping: one run per step…");
  try {
    const result = await model.sweep(linaOptions());
    plotSweep($("sweep-chart"), result);
    $("sweep-points").replaceChildren(
      ...result.points.map((p) => {
        const item = document.createElement("li");
        item.textContent = `changes the image by ${p.change.toFixed(1)}/255; ${p.passed} of ${p.checks} checks pass`;
        return item;
      }),
    );
    status(`Swept ${result.points.length} steps; unguided, ${result.baselinePassed} of ${result.checks} checks pass.`);
  } catch (error) {
    await failed(error);
  } finally {
    enableModelButtons();
  }
}

function listNodes() {
  const chosen = $("reinpaint-node").value;
  $("reinpaint-node").replaceChildren(
    ...(csg?.nodes ?? []).map((node) => new Option(`${node.id} (${node.class})`, node.id, false, node.id === chosen)),
  );
}

async function reinpaint() {
  const canvas = $("image");
  if (!drawnWith) {
    status("Generate an image first: re-inpainting works on the last generated image.", true);
    return;
  }
  $("reinpaint").disabled = true;
  status(`Re-inpainting ${$("reinpaint-node").value}…`);
  try {
    const { data } = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height);
    const image = { width: canvas.width, height: canvas.height, rgba: data };
    const result = await model.reinpaint(linaOptions(), image, $("reinpaint-node").value, number("reinpaint-strength"));
    drawInto("reinpainted-image", result);
    showVerdicts($("reinpaint-verdicts"), result.after);
    const passed = (list) => list.filter((v) => v.passed).length;
    status(`Re-inpainted: ${passed(result.before)} of ${result.before.length} checks passed before, ${passed(result.after)} after.`);
  } catch (error) {
    await failed(error);
  } finally {
    enableModelButtons();
  }
}

// Baseline and LINA with the same settings and seed, each judged by the probe's checker on
// the scene graph.
async function compare() {
  $("compare").disabled = true;
  $("generate").disabled = true;
  try {
    const runs = [
      ["baseline", baseOptions()],
      ["lina", linaOptions()],
    ];
    for (const [name, options] of runs) {
      status(`Comparing: generating the ${name === "lina" ? "LINA" : "baseline"} image…`);
      const image = await model.generate(options, {
        onStep: ({ step, steps }) => ($("progress").value = step / steps),
      });
      drawInto(`${name}-image`, image);
      if (csg) showVerdicts($(`${name}-verdicts`), await model.checkImage(image, csg));
    }
    status("Compared.");
  } catch (error) {
    await failed(error);
  } finally {
    enableModelButtons();
  }
}


// The buttons that need a model: enabled exactly while one is loaded. `deviceInfo` is null
// from the moment a load starts until it succeeds, and after a crash.
function enableModelButtons() {
  const loaded = model !== null && model.deviceInfo !== null;
  for (const id of ["generate", "compare", "sweep", "reinpaint"]) $(id).disabled = !loaded;
}

function ready(notes = []) {
  const device = model.deviceInfo;
  status([`Ready (${device.adapter}, ${device.precision}).`, ...notes].join(" "));
  enableModelButtons();
  graphFromPrompt();
  replotSchedule();
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
  // The maps of the last image no longer describe the one being drawn.
  attention.clear();
  const options = readOptions();
  // Recording the maps is no setting of the image: it stays out of the saved settings.
  const recording = $("attention-maps").checked ? { attentionMaps: true } : {};
  try {
    const result = await model.generate({ ...options, ...recording }, {
      signal: running.signal,
      preview: $("previews").checked,
      onStep: ({ step, steps, timestep, preview }) => {
        $("progress").value = step / steps;
        status(`Step ${step}/${steps} (t = ${timestep.toFixed(0)})`);
        if (preview) drawInto("image", preview);
      },
    });
    drawInto("image", result);
    if (result.attention) attention.show(result.attention, result.width, result.height);
    drawnWith = { ...options, page: location.href };
    $("save").disabled = false;
    const seconds = ((performance.now() - started) / 1000).toFixed(2);
    status([`Done in ${seconds} s.`, ...result.warnings].join(" "));
  } catch (error) {
    // Cancel aborts the call's signal: it rejects with an AbortError, not a coded error.
    if (error.name === "AbortError") status("Generation cancelled.");
    else await failed(error);
  } finally {
    running = null;
    enableModelButtons();
    $("cancel").disabled = true;
  }
}

// Loads another model into the worker; on failure the page says why and has no model until
// one loads.
async function switchModel(wanted, what) {
  for (const id of ["generate", "compare", "sweep", "reinpaint"]) $(id).disabled = true;
  $("cancel").disabled = false;
  running = new AbortController();
  status(`Loading ${what}…`);
  try {
    const { notes } = await model.load({ ...wanted, onProgress, signal: running.signal });
    source = wanted;
    $("progress").value = 0;
    ready(notes);
  } catch (error) {
    const why = error.name === "AbortError" ? "loading cancelled; no model is loaded" : error.message;
    status(`${what}: ${why}`, true);
    enableModelButtons();
  } finally {
    running = null;
    $("cancel").disabled = true;
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
  let typing;
  $("prompt").addEventListener("input", () => {
    clearTimeout(typing);
    typing = setTimeout(graphFromPrompt, 300);
  });
  for (const id of ["warp", "steps", "scheduler"]) $(id).addEventListener("input", replotSchedule);
  $("add-node").addEventListener("click", () => editor.addNode());
  $("add-relation").addEventListener("click", () => editor.addRelation());
  $("csg-import").addEventListener("click", importGraph);
  $("csg-reset").addEventListener("click", () => {
    graphEdited = false;
    graphFromPrompt();
  });
  $("compare").addEventListener("click", compare);
  $("use-suggestion").addEventListener("click", () => {
    showPlan(suggested);
    $("use-lina").checked = true;
    replotSchedule();
  });
  $("sweep").addEventListener("click", sweep);
  $("reinpaint").addEventListener("click", reinpaint);
  $("compare-slider").addEventListener("input", (event) =>
    $("lina-image").style.setProperty("--split", `${event.target.value}%`),
  );
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
    showPlan(await model.linaPlan());
    await restoreLinaFromAddress();
    ready(model.notes);
  } catch (error) {
    status(error.message, true);
  }
}

main();
