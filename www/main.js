// The page: a client of the embed API (lina.js), which runs the model in a Web Worker so that
// the page stays responsive while the model loads and generates. The image is the centre;
// the panels beside it (tabs) hold LINA's plan, the scene graph, the comparison, the
// diagnostics, the history and the model.
import { loadModel } from "./lina.js";
import { withMetadata } from "./png.js";
import { CsgEditor, PREDICATES } from "./csg-editor.js";
import { CsgGraph } from "./csg-graph.js";
import { plotSchedule, plotSweep } from "./plots.js";
import { LayoutBoxes } from "./layout-boxes.js";
import { AttentionOverlay } from "./attention-maps.js";
import { PlanPanel } from "./plan-panel.js";
import { Tabs } from "./tabs.js";
import { History, thumbnailOf } from "./history.js";
import { button } from "./dom.js";

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
// What the last load said about the model (its size, what it runs without), for the facts.
let loadNotes = [];
// The name of the ControlNet loaded beside the model, or null.
let controlNet = null;

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

// ---- Downloads: bytes, speed, and whether they came from the browser's cache ----

const MiB = 1048576;
let download = null;

function onProgress({ path, received, total, from }) {
  const now = performance.now();
  if (!download || download.path !== path) download = { path, started: now, first: received };
  if (total) $("progress").value = received / total;
  const seconds = (now - download.started) / 1000;
  const speed = seconds > 0.2 ? ` at ${((received - download.first) / MiB / seconds).toFixed(1)} MiB/s` : "";
  const size = total ? ` of ${(total / MiB).toFixed(1)}` : "";
  const verb = { network: "Downloading", cache: "Reading from the browser's cache", file: "Reading" }[from] ?? "Loading";
  status(`${verb} ${path}: ${(received / MiB).toFixed(1)}${size} MiB${speed}`);
}

// ---- Settings: the controls, the address, validation ----

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

// The runtime refuses longer prompts (src/pipeline/mod.rs, MAX_PROMPT_CHARS); the page says so
// beside the prompt before asking it.
const MAX_PROMPT_CHARS = 2000;

/** Why the prompt cannot be generated, or "" when it can. */
function promptProblem() {
  const prompt = $("prompt").value;
  if (!prompt.trim()) return "Write a prompt first: what should the image show?";
  if (prompt.length > MAX_PROMPT_CHARS) {
    return `The prompt is ${prompt.length} characters long; at most ${MAX_PROMPT_CHARS} are accepted (and the model reads only its first 77 tokens).`;
  }
  return "";
}

function showPromptProblem() {
  const problem = promptProblem();
  $("prompt-error").textContent = problem;
  $("prompt").setAttribute("aria-invalid", String(problem !== ""));
  return problem;
}

// With LINA on, the address carries the plan too (lina=JSON), and an edited scene graph
// (csg=JSON); those need the model, so they are applied once it has loaded.
const address = new URLSearchParams(location.hash.slice(1));

function restoreFromAddress() {
  for (const [name, id] of Object.entries(FIELDS)) {
    if (address.has(name)) $(id).value = address.get(name);
  }
  if (address.has("skipLayers")) $("skip-layers").value = address.get("skipLayers");
  if (address.has("guidanceRescale")) $("guidance-rescale").value = address.get("guidanceRescale");
}

// Skip-layer guidance (SD 3.5): shown only for models whose blocks it can skip.

/** The blocks to skip as the field lists them, or null where it is hidden or empty. */
function skipLayers() {
  const text = $("skip-layers").value.trim();
  if ($("skip-layers-field").hidden || !text) return null;
  return text.split(",").map((part) => Number(part.trim()));
}

/** Why the blocks listed cannot be skipped, or "" when they can (or none are listed). */
function skipLayersProblem() {
  const layers = skipLayers();
  const blocks = model?.skippableBlocks;
  if (!layers || blocks == null) return "";
  const bad = layers.find((layer) => !Number.isInteger(layer) || layer < 0 || layer >= blocks);
  if (bad === undefined) return "";
  return `Skip layers: list block numbers from 0 to ${blocks - 1}, separated by commas.`;
}

function showSkipLayersProblem() {
  const problem = skipLayersProblem();
  $("skip-layers-error").textContent = problem;
  $("skip-layers").setAttribute("aria-invalid", String(problem !== ""));
  return problem;
}

// Images to start from: img2img, inpainting (inpainting models need it), a control image.

/**
 * The image picked in `id` as `{ width, height, rgba }`, null when none is: drawn at the model's
 * native size; a reference image at its own size, for the runtime to resize to Kontext's trained
 * size, or else at about the model's area with its own aspect and sides that are multiples of 16.
 */
async function pickedImage(id) {
  const file = $(id).files?.[0];
  if (!file) return null;
  const bitmap = await createImageBitmap(file);
  const side = model.nativeSize;
  const reference = id === "reference-image";
  const aspect = reference ? bitmap.width / bitmap.height : 1;
  const sixteens = (length) => Math.max(16, Math.round(length / 16) * 16);
  const [width, height] = reference && $("reference-size").value === "trained"
    ? [bitmap.width, bitmap.height]
    : aspect === 1 ? [side, side] : [sixteens(side * Math.sqrt(aspect)), sixteens(side / Math.sqrt(aspect))];
  const canvas = document.createElement("canvas");
  canvas.width = width;
  canvas.height = height;
  const context = canvas.getContext("2d");
  context.drawImage(bitmap, 0, 0, width, height);
  return { width, height, rgba: context.getImageData(0, 0, width, height).data };
}

/** The generation options the picked images make; the runtime says what a model lacks or refuses. */
async function imageOptions() {
  const picked = await Promise.all(["init-image", "mask-image", "control-image", "reference-image"].map(pickedImage));
  const [initImage, mask, controlImage, referenceImage] = picked;
  const options = {};
  if (initImage) Object.assign(options, { initImage, strength: Number($("strength").value) });
  if (mask) options.mask = mask;
  // The one control image goes to the loaded ControlNet, else to FLUX.1 Canny or Depth.
  if (controlImage && controlNet) {
    options.controlnets = [{ image: controlImage, scale: Number($("controlnet-scale").value) }];
  } else if (controlImage && !$("control-image-field").hidden) {
    options.controlImage = controlImage;
  }
  if (controlNet && $("controlnet-guess").checked) options.controlnetGuessMode = true;
  if (referenceImage && !$("reference-image-field").hidden) {
    Object.assign(options, { referenceImage, referenceSize: $("reference-size").value });
  }
  return options;
}

/**
 * Shows the control and reference images' fields where the model takes them, and opens the
 * section where the model needs an image. A loaded model's reference size starts at Kontext's
 * trained sizes (about a megapixel) only for a model of that size: the small models a page runs
 * take the reference at about their own size.
 */
function showImageInputs() {
  const condition = model.imageCondition;
  $("control-image-field").hidden = condition !== "control" && !controlNet;
  $("controlnet-scale-field").hidden = !controlNet;
  $("controlnet-guess-field").hidden = !controlNet;
  $("reference-image-field").hidden = !model.takesReferenceImage;
  $("reference-size-field").hidden = !model.takesReferenceImage;
  $("reference-size").value = model.nativeSize >= 1024 ? "trained" : "kept";
  if (condition !== "none" || controlNet) $("image-inputs").open = true;
}

async function restoreLinaFromAddress() {
  try {
    if (address.has("lina")) {
      plan.show(JSON.parse(address.get("lina")));
      plan.choose("custom");
    }
    if (address.has("csg") && (await acceptGraph(JSON.parse(address.get("csg")), true))) editor.show(csg);
  } catch (error) {
    status(`The link's LINA settings are unreadable: ${error.message}`, true);
  }
}

/** The address that reproduces `options` (the settings, the plan and an edited graph). */
function linkTo(options) {
  const params = new URLSearchParams();
  for (const [name] of Object.entries(FIELDS)) {
    if (options[name] !== undefined) params.set(name, options[name]);
  }
  if (options.skipLayerGuidance) params.set("skipLayers", options.skipLayerGuidance.layers.join(","));
  if (options.guidanceRescale) params.set("guidanceRescale", String(options.guidanceRescale));
  if (options.plan) params.set("lina", JSON.stringify(options.plan));
  if (options.plan && options.csg && options.graphEdited) params.set("csg", JSON.stringify(options.csg));
  return `${location.pathname}#${params}`;
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
  const layers = skipLayers();
  if (layers) options.skipLayerGuidance = { layers };
  const rescale = Number($("guidance-rescale").value);
  if (!$("guidance-rescale-field").hidden && rescale > 0) options.guidanceRescale = rescale;
  return options;
}

// With LINA: the plan from the controls and the scene graph from the editor.
function linaOptions() {
  const options = { ...baseOptions(), plan: plan.plan() ?? plan.sliderPlan() };
  return csg ? { ...options, csg } : options;
}

function readOptions() {
  return plan.plan() ? linaOptions() : baseOptions();
}

// ---- LINA: the plan panel and the schedule plot ----

const plan = new PlanPanel({
  sliders: $("plan-sliders"),
  presets: $("preset"),
  suggestion: $("suggestion"),
  json: $("plan-json"),
  apply: $("plan-apply"),
  error: $("plan-error"),
  onChange: () => replotSchedule(),
});

async function replotSchedule() {
  if (!model?.deviceInfo) return;
  try {
    plotSchedule($("schedule-plot"), await model.timesteps({ ...baseOptions(), plan: plan.sliderPlan() }));
    $("plan-error").textContent = "";
  } catch (error) {
    // A plan the runtime refuses (from the JSON view) is an error of the plan, shown there.
    $("plan-error").textContent = error.message;
  }
}

// ---- The scene graph: parsed from the prompt as it is typed, until the user edits it ----

let csg = null;
let graphEdited = false;

const csgStatus = (text, isError = false) => {
  $("csg-status").textContent = text;
  $("csg-status").classList.toggle("error", isError);
};

const graph = new CsgGraph($("csg-graph"), {
  relate: (subject, object) => {
    editor.relate(subject, object);
    csgStatus(`Added "${subject} on ${object}": change its predicate in the relations below.`);
  },
  removeNode: (id) => editor.removeNode(id),
  removeRelation: (index) => editor.removeRelation(index),
  selected: (selection) => {
    $("graph-delete").disabled = selection === null;
    // A relation selected in the drawing: its predicate can be changed right there.
    const predicate = $("graph-predicate");
    const relation = selection?.kind === "relation" ? editor.csg?.relations[selection.index] : null;
    predicate.disabled = !relation;
    predicate.replaceChildren(...(relation ? PREDICATES.map((p) => new Option(p.replaceAll("_", " "), p, false, p === relation.predicate)) : []));
    editor.highlight(selection);
  },
});

const editor = new CsgEditor({
  nodes: $("csg-nodes"),
  relations: $("csg-relations"),
  json: $("csg-json"),
  onChange: (next) => acceptGraph(next, true),
  onRender: (shown) => graph.show(shown),
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
  if (graphEdited || !model?.deviceInfo || promptProblem()) return;
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
    plan.suggest(await model.suggestPlan($("prompt").value, csg ?? undefined));
    replotSchedule();
  } catch (error) {
    if (graphEdited) return;
    csg = null;
    csgStatus(error.message, true);
  }
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

// ---- Diagnostics: the step sweep, and re-inpainting one node's region of the last image ----

async function sweep() {
  $("sweep").disabled = true;
  status("Sweeping: one run per step…");
  try {
    const result = await model.sweep({ ...linaOptions(), ...(await imageOptions()) });
    plotSweep($("sweep-chart"), result);
    // Below a twentieth of a level the change rounds to nothing on screen: said so.
    const change = (c) => (c < 0.05 ? "leaves the image as it was (under 0.05/255)" : `changes the image by ${c.toFixed(1)}/255 on average`);
    $("sweep-points").replaceChildren(
      ...result.points.map((p) => {
        const item = document.createElement("li");
        item.textContent = `${change(p.change)}; ${p.passed} of ${p.checks} checks pass`;
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
    // The node's region is the mask and the last image the start; a control or reference image still applies.
    const { controlImage, controlnets, controlnetGuessMode, referenceImage, referenceSize } = await imageOptions();
    const options = {
      ...linaOptions(),
      ...(controlImage && { controlImage }),
      ...(controlnets && { controlnets, controlnetGuessMode }),
      ...(referenceImage && { referenceImage, referenceSize }),
    };
    const result = await model.reinpaint(options, image, $("reinpaint-node").value, Number($("reinpaint-strength").value));
    drawInto("reinpainted-image", result);
    $("reinpainted-image").hidden = false;
    showVerdicts($("reinpaint-verdicts"), result.after);
    const passed = (list) => list.filter((v) => v.passed).length;
    status(`Re-inpainted: ${passed(result.before)} of ${result.before.length} checks passed before, ${passed(result.after)} after.`);
  } catch (error) {
    await failed(error);
  } finally {
    enableModelButtons();
  }
}

// ---- Compare: baseline and LINA with the same settings and seed ----

/** The mean absolute difference of two same-sized images, in levels of 255. */
function meanDifference(a, b) {
  if (a.width !== b.width || a.height !== b.height) return Infinity;
  let sum = 0;
  for (let i = 0; i < a.rgba.length; i += 4) {
    sum += Math.abs(a.rgba[i] - b.rgba[i]) + Math.abs(a.rgba[i + 1] - b.rgba[i + 1]) + Math.abs(a.rgba[i + 2] - b.rgba[i + 2]);
  }
  return sum / ((a.rgba.length / 4) * 3);
}

async function compare() {
  $("compare").disabled = true;
  $("generate").disabled = true;
  $("compare-summary").textContent = "";
  try {
    const images = {};
    const verdicts = {};
    // Both runs start from the images picked, as Generate would.
    const picked = await imageOptions();
    for (const [name, options] of [["baseline", baseOptions()], ["lina", linaOptions()]]) {
      status(`Comparing: generating the ${name === "lina" ? "LINA" : "baseline"} image…`);
      const image = await model.generate({ ...options, ...picked }, {
        onStep: ({ step, steps }) => ($("progress").value = step / steps),
      });
      drawInto(`${name}-image`, image);
      $("comparison").hidden = false;
      $("compare-slider").disabled = false;
      images[name] = image;
      if (csg) {
        verdicts[name] = await model.checkImage(image, csg);
        showVerdicts($(`${name}-verdicts`), verdicts[name]);
      }
    }
    // A difference no eye sees is said to be none, with its figure.
    const difference = meanDifference(images.baseline, images.lina);
    const passed = (list) => list?.filter((v) => v.passed).length;
    const checks = csg ? ` Checks passed: baseline ${passed(verdicts.baseline)}, LINA ${passed(verdicts.lina)} of ${verdicts.lina.length}.` : "";
    $("compare-summary").textContent =
      difference < 0.5
        ? `The two images are the same to the eye (they differ by ${difference.toFixed(2)}/255 on average): this plan changes nothing for this prompt and seed.${checks}`
        : `The images differ by ${difference.toFixed(1)}/255 on average.${checks}`;
    status("Compared.");
  } catch (error) {
    await failed(error);
  } finally {
    enableModelButtons();
  }
}

// ---- History ----

let kept = null;

function historyStatus(text, isError = false) {
  $("history-status").textContent = text;
  $("history-status").classList.toggle("error", isError);
}

/**
 * Why stored settings cannot go back into this page's controls, or "" (entries outlive
 * upgrades). Only what the page itself must know is checked here: their values are the
 * runtime's to judge (`restoreEntry` asks it).
 */
function settingsProblem(settings) {
  if (typeof settings !== "object" || settings === null) return "it holds no settings";
  const known = new Set([...Object.keys(FIELDS), "skipLayerGuidance", "plan", "csg"]);
  const unknown = Object.keys(settings).find((key) => !known.has(key));
  if (unknown) return `it has a setting this page no longer knows ("${unknown}")`;
  return "";
}

async function restoreEntry(entry, item) {
  const problem = settingsProblem(entry.settings);
  if (problem) {
    item.querySelector(".entry-error").textContent = `Cannot restore: ${problem}. The entry stays stored.`;
    return;
  }
  if (model?.deviceInfo) {
    // Settings the runtime now refuses are found before anything changes on the page.
    try {
      await model.timesteps(entry.settings);
    } catch (error) {
      item.querySelector(".entry-error").textContent = `Cannot restore: ${error.message}. The entry stays stored.`;
      return;
    }
  }
  for (const [name, id] of Object.entries(FIELDS)) $(id).value = entry.settings[name] ?? (name === "scheduler" ? "" : $(id).value);
  $("skip-layers").value = entry.settings.skipLayerGuidance?.layers.join(",") ?? "";
  if (entry.settings.plan) {
    plan.show(entry.settings.plan);
    plan.choose("custom");
  } else plan.choose("off");
  if (entry.settings.csg && model?.deviceInfo && (await acceptGraph(entry.settings.csg, true))) editor.show(csg);
  const bitmap = await createImageBitmap(entry.png);
  const canvas = $("image");
  canvas.width = bitmap.width;
  canvas.height = bitmap.height;
  canvas.getContext("2d").drawImage(bitmap, 0, 0);
  attention.clear();
  drawnWith = { ...entry.settings, page: location.href };
  $("save").disabled = false;
  status(`Restored the image of ${new Date(entry.time).toLocaleString()} and its settings.`);
}

function downloadBlob(blob, name) {
  const link = document.createElement("a");
  link.href = URL.createObjectURL(blob);
  link.download = name;
  link.click();
  setTimeout(() => URL.revokeObjectURL(link.href), 10_000);
}

async function showHistory() {
  if (!kept) return;
  const entries = await kept.list();
  const urls = [...$("history-list").querySelectorAll("img")].map((img) => img.src);
  for (const url of urls) URL.revokeObjectURL(url);
  $("history-list").replaceChildren(
    ...entries.map((entry) => {
      const item = document.createElement("li");
      const when = new Date(entry.time).toLocaleString();
      const prompt = String(entry.settings?.prompt ?? "");
      const restore = document.createElement("button");
      restore.type = "button";
      restore.className = "restore";
      restore.setAttribute("aria-label", `restore "${prompt}" (seed ${entry.settings?.seed}, ${when})`);
      const image = document.createElement("img");
      image.src = URL.createObjectURL(entry.thumbnail);
      image.alt = "";
      restore.append(image);
      restore.addEventListener("click", () => restoreEntry(entry, item));
      const what = document.createElement("p");
      what.className = "what";
      what.textContent = prompt;
      what.title = `${prompt} (seed ${entry.settings?.seed}, ${when})`;
      const actions = document.createElement("div");
      actions.className = "entry-actions";
      actions.append(
        button("PNG", `download "${prompt}" (${when}) as PNG`, () => downloadBlob(entry.png, `lina-${entry.settings?.seed ?? entry.id}.png`)),
        button("Link", `copy a link to "${prompt}" (${when})`, () => shareEntry(entry, item)),
        button("Delete", `delete "${prompt}" (${when}) from the history`, async () => {
          await kept.remove(entry.id);
          await showHistory();
        }),
      );
      const error = document.createElement("p");
      error.className = "entry-error";
      error.setAttribute("role", "alert");
      item.append(restore, what, actions, error);
      return item;
    }),
  );
  historyStatus(entries.length ? `${entries.length} result${entries.length === 1 ? "" : "s"} kept in this browser.` : "Nothing kept yet: generated images appear here.");
}

async function shareEntry(entry, item) {
  const url = new URL(linkTo({ ...entry.settings, graphEdited: !!entry.settings.csg }), location.href).href;
  try {
    await navigator.clipboard.writeText(url);
    historyStatus("Link copied: it opens this page with the result's settings.");
  } catch {
    // No clipboard permission (an embedded or insecure page): the link is shown to copy.
    item.querySelector(".entry-error").textContent = url;
  }
}

/** The image on the page as a PNG file with `settings` inside (what Save PNG writes). */
async function imagePng(settings) {
  const blob = await new Promise((resolve) => $("image").toBlob(resolve, "image/png"));
  return new Blob([withMetadata(new Uint8Array(await blob.arrayBuffer()), settings)], { type: "image/png" });
}

// The settings hold the plan and the scene graph of a LINA run (`linaOptions`).
async function keep(settings, verdicts) {
  if (!kept) return;
  try {
    await kept.add({
      time: Date.now(),
      png: await imagePng(settings),
      thumbnail: await thumbnailOf($("image")),
      settings,
      verdicts: verdicts ?? null,
    });
    await showHistory();
  } catch (error) {
    historyStatus(error.message, true);
  }
}

// ---- Generating ----

// The last image's settings, saved with it.
let drawnWith = null;

async function savePng() {
  downloadBlob(await imagePng(drawnWith), `lina-${drawnWith.seed}.png`);
}

// The buttons that need a model: enabled exactly while one is loaded. `deviceInfo` is null
// from the moment a load starts until it succeeds, and after a crash.
function enableModelButtons() {
  const loaded = model !== null && model.deviceInfo !== null;
  for (const id of ["generate", "compare", "sweep", "reinpaint"]) $(id).disabled = !loaded;
}

// The adapter as a badge, with plain advice where the page runs on a software adapter or on
// the CPU, and the model's facts in the Model tab.
function describeDevice(notes) {
  const device = model.deviceInfo;
  const software = device.software;
  const badge = $("adapter-badge");
  badge.hidden = false;
  badge.textContent = `${device.adapter} · ${device.precision}${device.shaderF16 ? " · f16 shaders" : ""} · ${software ? "software" : "GPU"}`;
  badge.className = `badge ${software ? "software" : "hardware"}`;
  const advice = $("adapter-advice");
  advice.hidden = !software;
  advice.textContent = software
    ? "No hardware GPU is in use: images take seconds per step here. A browser with WebGPU on a real GPU (recent Chrome or Edge; Firefox or Safari with WebGPU enabled) is many times faster."
    : "";
  const facts = [
    ["Adapter", device.adapter],
    ["Precision", device.precision],
    ["f16 shaders", device.shaderF16 ? "yes" : "no"],
    ["Largest buffer binding", `${(device.maxBindingBytes / MiB).toFixed(0)} MiB`],
    ["Native image size", `${model.nativeSize} px`],
    ["LoRA", (source.loras ?? []).map((l) => `${l.file.name ?? "file"} at scale ${l.scale}`).join(", ") || "none"],
    ["Embeddings", (source.embeddings ?? []).map((e) => `${e.file.name ?? "file"} as ${e.trigger}`).join(", ") || "none"],
    ["ControlNet", controlNet ?? "none"],
    ["Notes", notes.length ? notes.join(" ") : "none"],
  ];
  $("model-facts").replaceChildren(
    ...facts.flatMap(([term, value]) => {
      const dt = document.createElement("dt");
      dt.textContent = term;
      const dd = document.createElement("dd");
      dd.textContent = value;
      return [dt, dd];
    }),
  );
}

function ready(notes = []) {
  loadNotes = notes;
  // A model loaded afresh has no ControlNet beside it.
  controlNet = null;
  $("remove-controlnet").disabled = true;
  const blocks = model.skippableBlocks;
  $("skip-layers-field").hidden = blocks == null;
  if (blocks != null) $("skip-layers").placeholder = `blocks 0 to ${blocks - 1}`;
  showSkipLayersProblem();
  $("guidance-rescale-field").hidden = !model.takesGuidanceRescale;
  showImageInputs();
  const device = model.deviceInfo;
  status([`Ready (${device.adapter}, ${device.precision}).`, ...notes].join(" "));
  describeDevice(notes);
  enableModelButtons();
  graphFromPrompt();
  replotSchedule();
}

async function generate(event) {
  event.preventDefault();
  if (showPromptProblem()) {
    $("prompt").focus();
    return;
  }
  if (showSkipLayersProblem()) {
    $("skip-layers").focus();
    return;
  }
  $("generate").disabled = true;
  $("save").disabled = true;
  $("cancel").disabled = false;
  $("progress").value = 0;
  // Said at once: the picked images are read before the first step.
  status("Starting…");
  const started = performance.now();
  running = new AbortController();
  const options = readOptions();
  history.replaceState(null, "", linkTo({ ...options, graphEdited }));
  // The maps of the last image no longer describe the one being drawn.
  attention.clear();
  // Recording the maps is no setting of the image: it stays out of the saved settings.
  const recording = $("attention-maps").checked ? { attentionMaps: true } : {};
  try {
    const images = await imageOptions();
    const result = await model.generate({ ...options, ...recording, ...images }, {
      signal: running.signal,
      preview: $("previews").checked,
      onStep: ({ step, steps, timestep, preview }) => {
        $("progress").value = step / steps;
        const elapsed = (performance.now() - started) / 1000;
        const left = step > 0 ? (elapsed / step) * (steps - step) : 0;
        status(`Step ${step}/${steps} (t = ${timestep.toFixed(0)})`);
        $("step-info").textContent = `${elapsed.toFixed(1)} s so far, about ${left.toFixed(0)} s left`;
        if (preview) drawInto("image", preview);
      },
    });
    drawInto("image", result);
    if (result.attention) attention.show(result.attention, result.width, result.height);
    drawnWith = { ...options, page: location.href };
    $("save").disabled = false;
    const seconds = ((performance.now() - started) / 1000).toFixed(2);
    $("step-info").textContent = "";
    status([`Done in ${seconds} s.`, ...result.warnings].join(" "));
    const verdicts = options.plan && csg ? await model.checkImage(result, csg).catch(() => null) : null;
    await keep(options, verdicts);
  } catch (error) {
    $("step-info").textContent = "";
    // Cancel aborts the call's signal: it rejects with an AbortError, not a coded error.
    if (error.name === "AbortError") status("Generation cancelled.");
    else await failed(error);
  } finally {
    running = null;
    enableModelButtons();
    $("cancel").disabled = true;
  }
}

// ---- Models ----

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

// The current model again, with the LoRA files and the embedding chosen in the Model tab
// (none chosen: without any). A trigger is what prompts name an embedding by, so one is
// needed with it.
function loadWithAdapters() {
  const scale = Number($("lora-scale").value);
  const loras = [...$("lora-files").files].map((file) => ({ file, scale }));
  const embedding = $("embedding-file").files[0];
  const trigger = $("embedding-trigger").value.trim();
  if (embedding && !trigger) {
    $("adapters-error").textContent = "Give the embedding a trigger word: prompts use it to call the embedding in.";
    $("embedding-trigger").focus();
    return;
  }
  $("adapters-error").textContent = "";
  const embeddings = embedding ? [{ file: embedding, trigger }] : [];
  const { loras: _, embeddings: __, ...base } = source;
  const what = [
    loras.length ? `${loras.length} LoRA${loras.length > 1 ? "s" : ""} at scale ${scale}` : "",
    embedding ? `the embedding "${trigger}"` : "",
  ].filter(Boolean);
  switchModel({ ...base, loras, embeddings }, what.length ? `the model with ${what.join(" and ")}` : "the model without LoRA or embeddings");
}

// With LoRAs loaded, moving the scale changes it on the loaded model: the parts they adapt are
// rebuilt from weights kept on the GPU, with no download and no reload. (Choosing other files
// still loads the model again, with "Load the model with these".)
async function rescaleLoras() {
  if (!source.loras?.length || running || model?.deviceInfo == null) return;
  const scale = Number($("lora-scale").value);
  try {
    await model.setLoraScales(source.loras.map(() => scale));
    source = { ...source, loras: source.loras.map((l) => ({ ...l, scale })) };
    describeDevice(loadNotes);
    status(`LoRA scale ${scale}: set on the loaded model.`);
  } catch (error) {
    await failed(error);
  }
}

// A ControlNet beside the loaded model, from a picked folder (a diffusers one's config and
// weights by their names, or an original ControlNet's one file) or a URL (a folder's, or an
// original file's); a refused one leaves the one loaded before.
async function loadControlNet() {
  const picked = [...$("controlnet-folder").files].filter((f) => f.name === "config.json" || f.name.endsWith(".safetensors"));
  const url = $("controlnet-url").value.trim();
  const problem = !picked.length && !url ? "Choose a ControlNet folder, or give its URL." : "";
  $("controlnet-error").textContent = problem;
  if (problem || running || model?.deviceInfo == null) return;
  const name = picked.length ? picked[0].webkitRelativePath.split("/")[0] || "the picked folder" : url;
  status(`Loading the ControlNet ${name}…`);
  try {
    // A folder with a config is a diffusers ControlNet; a lone weight file an original one.
    const lone = !picked.some((f) => f.name === "config.json") && picked.length === 1;
    const from = !picked.length ? { url } : lone ? { file: picked[0] } : { files: Object.fromEntries(picked.map((f) => [f.name, f])) };
    await model.loadControlNet(from);
    controlNet = name;
    $("remove-controlnet").disabled = false;
    showImageInputs();
    describeDevice(loadNotes);
    status(`ControlNet ${name} loaded: pick its control image beside the start image.`);
  } catch (error) {
    $("controlnet-error").textContent = error.message;
    await failed(error);
  }
}

async function removeControlNets() {
  if (running || !controlNet) return;
  try {
    await model.removeControlNets();
    controlNet = null;
    $("remove-controlnet").disabled = true;
    showImageInputs();
    describeDevice(loadNotes);
    status("ControlNet removed: the model runs alone.");
  } catch (error) {
    await failed(error);
  }
}

// A single-file checkpoint with the folder (picked or at a URL) that gives its tokenizer and
// configs; the worker reads nothing else from that folder.
function loadCheckpoint() {
  const file = $("checkpoint-file").files[0];
  const folder = $("checkpoint-folder").files;
  const url = $("checkpoint-config").value.trim();
  const problem = !file
    ? "Choose the checkpoint file."
    : !folder.length && !url
      ? "A single-file checkpoint holds no tokenizer: choose a diffusers folder of its family, or give its URL."
      : "";
  $("checkpoint-error").textContent = problem;
  if (problem) {
    $(file ? "checkpoint-folder" : "checkpoint-file").focus();
    return;
  }
  const companion = folder.length ? { files: folderFiles(folder) } : { url };
  switchModel({ checkpoint: file, ...companion }, `the checkpoint ${file.name}`);
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
  new Tabs($("tabs"));
  $("controls").addEventListener("submit", generate);
  $("cancel").addEventListener("click", () => running?.abort());
  $("save").addEventListener("click", savePng);
  let typing;
  $("prompt").addEventListener("input", () => {
    if ($("prompt-error").textContent) showPromptProblem();
    clearTimeout(typing);
    typing = setTimeout(graphFromPrompt, 300);
  });
  for (const id of ["steps", "scheduler"]) $(id).addEventListener("input", replotSchedule);
  $("skip-layers").addEventListener("input", showSkipLayersProblem);
  $("add-node").addEventListener("click", () => editor.addNode());
  $("add-relation").addEventListener("click", () => editor.addRelation());
  $("graph-delete").addEventListener("click", () => graph.deleteSelected());
  $("graph-predicate").addEventListener("change", (event) => {
    if (graph.selection?.kind === "relation") editor.setPredicate(graph.selection.index, event.target.value);
  });
  $("csg-import").addEventListener("click", importGraph);
  $("csg-reset").addEventListener("click", () => {
    graphEdited = false;
    graphFromPrompt();
  });
  $("compare").addEventListener("click", compare);
  $("sweep").addEventListener("click", sweep);
  $("reinpaint").addEventListener("click", reinpaint);
  $("compare-slider").addEventListener("input", (event) =>
    $("lina-image").style.setProperty("--split", `${event.target.value}%`),
  );
  $("history-clear").addEventListener("click", async () => {
    await kept?.clear();
    await showHistory();
  });
  restoreFromAddress();
  $("model-folder").addEventListener("change", (event) =>
    switchModel({ files: folderFiles(event.target.files) }, "the model from the folder"),
  );
  $("load-url").addEventListener("click", () =>
    switchModel({ url: $("model-url").value, t5: $("model-t5").checked }, `the model at ${$("model-url").value}`),
  );
  $("load-default").addEventListener("click", () => switchModel({}, "the embedded model"));
  $("load-checkpoint").addEventListener("click", loadCheckpoint);
  $("load-adapters").addEventListener("click", loadWithAdapters);
  $("load-controlnet").addEventListener("click", loadControlNet);
  $("remove-controlnet").addEventListener("click", removeControlNets);
  $("lora-scale").addEventListener("input", () => ($("lora-scale-value").value = $("lora-scale").value));
  $("lora-scale").addEventListener("change", rescaleLoras);
  // The history opens beside the model's download: a browser without IndexedDB (some
  // private modes) still generates, and says why nothing is kept.
  History.open()
    .then((opened) => {
      kept = opened;
      return showHistory();
    })
    .catch((error) => historyStatus(`No history in this browser: ${error.message}`, true));
  try {
    if (!navigator.gpu) throw new Error("This browser has no WebGPU (navigator.gpu is missing).");
    status("Starting…");
    model = await loadModel({ onProgress });
    $("progress").value = 0;
    plan.setBase(await model.linaPlan());
    await restoreLinaFromAddress();
    ready(model.notes);
  } catch (error) {
    status(error.message, true);
  }
}

main();
