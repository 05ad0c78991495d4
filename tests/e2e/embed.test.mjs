// End-to-end tests of the embed API's contract (www/lina.js): options checked by name, requests
// aborted one by one, errors with codes, recovery from a crashed worker, and the npm package
// (www/package.json) serving its own example. Headless Chromium as in page.test.mjs; the model
// runs on the CPU backend (what "auto" picks on SwiftShader anyway), with 2 or 3 steps, except
// where a long run is what is cancelled. Needs www/pkg (scripts/build-web.sh).
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { DEFAULT_MODEL_FILES, FIXTURES, SLOW, WWW, canvasColours, launchBrowser, openPage, singleFileCheckpoint, startServer, waitForStatus } from "./harness.mjs";

let browser;
let server;
// Where the packed package is unpacked: served at /packed/.
let PACKED;
// Files the tests make (a single-file checkpoint): served at /made/. The fixtures are at
// /fixtures/.
let MADE;

before(async () => {
  PACKED = await mkdtemp(join(tmpdir(), "lina-packed-"));
  MADE = await mkdtemp(join(tmpdir(), "lina-made-"));
  await writeFile(join(MADE, "sd1_tiny.safetensors"), await singleFileCheckpoint("sd1_tiny"));
  await writeFile(join(MADE, "sdxl_tiny.safetensors"), await singleFileCheckpoint("sdxl_tiny"));
  await writeFile(join(MADE, "control_tiny.safetensors"), await singleFileCheckpoint("controlnet_tiny"));
  await writeFile(join(MADE, "sdxl_refiner_tiny.safetensors"), await singleFileCheckpoint("sdxl_refiner_tiny"));
  await writeFile(join(MADE, "flux_tiny.safetensors"), await singleFileCheckpoint("flux_tiny"));
  // SD 3 as StabilityAI's `sd3_medium_incl_clips` file holds it: without T5.
  await writeFile(join(MADE, "sd3_tiny_no_t5.safetensors"), await singleFileCheckpoint("sd3_tiny", (name) => !name.startsWith("text_encoders.t5xxl.")));
  // The helpers the tests run inside the page: /helpers/reference.js.
  const helpers = join(dirname(fileURLToPath(import.meta.url)), "page");
  server = await startServer({ mounts: { "/packed/": join(PACKED, "package"), "/made/": MADE, "/fixtures/": FIXTURES, "/helpers/": helpers } });
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  server?.close();
  if (PACKED) await rm(PACKED, { recursive: true, force: true });
  if (MADE) await rm(MADE, { recursive: true, force: true });
});

// Runs in the page before lina.js loads: every Worker it starts is watched, so that a test
// sees what the page sent to the worker, which requests the worker actually ran (their step
// reports, which arrive even for a request whose promise has settled), and how many workers
// were started and stopped.
function watchWorkers() {
  const log = { created: 0, terminated: 0, sent: [], steps: [] };
  window.workerLog = log;
  const Base = window.Worker;
  window.Worker = class extends Base {
    constructor(...args) {
      super(...args);
      log.created++;
      this.addEventListener("message", ({ data }) => {
        if (data.type === "step") log.steps.push({ id: data.id, step: data.step, steps: data.steps });
      });
    }
    postMessage(...args) {
      log.sent.push({ type: args[0].type, id: args[0].id });
      return super.postMessage(...args);
    }
    terminate() {
      log.terminated++;
      return super.terminate();
    }
  };
}

// Any page of the origin will do to import the module from; this one loads nothing.
const apiPage = () => openPage(browser, `${server.base}lina.js`, { init: watchWorkers });

test("options are checked by name, an aborted signal rejects at once without a request, and errors have codes", { timeout: SLOW }, async () => {
  const page = await apiPage();
  const out = await page.evaluate(async () => {
    const { LinaModel, loadModel } = await import("./lina.js");
    const failure = (e) => ({ code: e.code, name: e.name, message: e.message });
    const outcome = (promise) => promise.then(() => "resolved", failure);
    const model = new LinaModel();
    const out = {};
    out.misspelt = await outcome(model.generate({ prompt: "x", stpes: 3 }));
    out.controls = await outcome(model.generate({ prompt: "x" }, { onstep: () => {} }));
    out.preview = await outcome(model.generate({ prompt: "x", preview: true }));
    out.sweep = await outcome(model.sweep({ prompt: "x" }, { signall: null }));
    out.reinpaint = await outcome(
      model.reinpaint({ prompt: "x" }, { width: 1, height: 1, rgba: new Uint8ClampedArray(4) }, "ball", 0.5, { strenght: 1 }),
    );
    out.bench = await outcome(model.benchUnet(1, { sigal: null }));
    out.source = await outcome(loadModel({ urll: "models/default/" }));
    out.backend = await outcome(model.load({ backend: "gpu" }));
    out.loadedNothing = model.deviceInfo;
    // Nothing of the above reached the worker.
    out.sentBefore = window.workerLog.sent.length;

    const aborted = new AbortController();
    aborted.abort();
    out.aborted = await outcome(model.generate({ prompt: "x" }, { signal: aborted.signal }));
    const reason = new Error("the page moved on");
    const withReason = new AbortController();
    withReason.abort(reason);
    out.reasonKept = await model.load({ signal: withReason.signal }).then(
      () => false,
      (e) => e === reason,
    );
    out.sentAfterAborts = window.workerLog.sent.length;

    // A call that needs a model, on a worker without one.
    out.noModel = await outcome(model.generate({ prompt: "x", steps: 2 }));
    model.dispose();
    out.disposed = await outcome(model.linaPlan());
    return out;
  });
  const refused = (what, key) => {
    assert.equal(out[what].code, "invalid_input", `${what}: ${JSON.stringify(out[what])}`);
    assert.match(out[what].message, new RegExp(`"${key}"`), what);
  };
  refused("misspelt", "stpes");
  refused("controls", "onstep");
  refused("preview", "preview");
  refused("sweep", "signall");
  refused("reinpaint", "strenght");
  refused("bench", "sigal");
  refused("source", "urll");
  assert.equal(out.backend.code, "invalid_input", JSON.stringify(out.backend));
  assert.match(out.backend.message, /backend/);
  assert.equal(out.loadedNothing, null);
  assert.equal(out.sentBefore, 0, "refused calls send nothing to the worker");

  assert.equal(out.aborted.name, "AbortError", JSON.stringify(out.aborted));
  // No code of ours: a DOMException's `code` is its legacy number (20 for an AbortError).
  assert.notEqual(typeof out.aborted.code, "string", "an abort is no coded error");
  assert.equal(out.reasonKept, true, "an aborted call rejects with the signal's reason");
  assert.equal(out.sentAfterAborts, 0, "an already aborted signal sends nothing");

  assert.equal(out.noModel.code, "no_model", JSON.stringify(out.noModel));
  assert.equal(out.disposed.code, "disposed", JSON.stringify(out.disposed));
  await page.close();
});

test("an aborted queued generation never runs, an aborted running one stops alone, and cancel() stops the running one", { timeout: SLOW * 2 }, async () => {
  const page = await apiPage();
  const out = await page.evaluate(async () => {
    const { loadModel } = await import("./lina.js");
    const log = window.workerLog;
    const model = await loadModel({ backend: "cpu" });
    const options = { prompt: "a red ball on a small mirror", seed: 1 };
    const out = { pixels: model.nativeSize ** 2 * 4 };

    // A runs; B, queued behind it, is aborted at A's first step; C, queued behind B, runs.
    log.sent.length = 0;
    log.steps.length = 0;
    const settled = [];
    const queued = new AbortController();
    const a = model
      .generate({ ...options, steps: 3 }, { onStep: ({ step }) => step === 1 && queued.abort() })
      .then((image) => (settled.push("a done"), image.rgba.length));
    const b = model
      .generate({ ...options, steps: 200 }, { signal: queued.signal })
      .then(() => settled.push("b done"), (e) => settled.push(`b ${e.name}`));
    const c = model.generate({ ...options, steps: 2 }).then((image) => (settled.push("c done"), image.rgba.length));
    [out.a, , out.c] = await Promise.all([a, b, c]);
    out.settled = settled;
    out.generates = log.sent.filter((m) => m.type === "generate").map((m) => m.id);
    out.cancels = log.sent.filter((m) => m.type === "cancel").map((m) => m.id);
    out.queuedSteps = log.steps.map((s) => s.id);

    // D runs and is aborted at its second step; E, queued behind it, still runs.
    log.sent.length = 0;
    log.steps.length = 0;
    const running = new AbortController();
    const d = model
      .generate({ ...options, steps: 200 }, { signal: running.signal, onStep: ({ step }) => step === 2 && running.abort() })
      .then(() => "generated", (e) => e.name);
    const e = model.generate({ ...options, steps: 2 }).then((image) => image.rgba.length, (e) => e.code);
    [out.d, out.e] = await Promise.all([d, e]);
    const [dId, eId] = log.sent.filter((m) => m.type === "generate").map((m) => m.id);
    out.dSteps = log.steps.filter((s) => s.id === dId).length;
    out.eSteps = log.steps.filter((s) => s.id === eId).length;

    // cancel() stops whatever runs; without a signal, that is a "cancelled" error.
    out.cancelled = await model
      .generate({ ...options, steps: 200 }, { onStep: ({ step }) => step === 1 && model.cancel() })
      .then(() => "generated", (e) => `${e.name} ${e.code}`);
    model.dispose();
    return out;
  });
  assert.deepEqual(out.settled, ["b AbortError", "a done", "c done"]);
  assert.equal(out.a, out.pixels);
  assert.equal(out.c, out.pixels);
  const [aId, bId, cId] = out.generates;
  assert.deepEqual(out.cancels, [bId], "one cancel, for the aborted request");
  assert.ok(!out.queuedSteps.includes(bId), "the aborted queued request never ran a step");
  assert.equal(out.queuedSteps.filter((id) => id === aId).length, 3);
  assert.equal(out.queuedSteps.filter((id) => id === cId).length, 2);

  assert.equal(out.d, "AbortError");
  assert.equal(out.e, out.pixels, "the request queued behind the aborted one ran");
  // It stops at the step after the abort reaches the worker: a few, never the 200 asked for.
  assert.ok(out.dSteps >= 2 && out.dSteps < 20, `the aborted run took ${out.dSteps} steps`);
  assert.equal(out.eSteps, 2);
  assert.equal(out.cancelled, "Error cancelled");
  await page.close();
});

test("a weight file whose header claims more than the file holds is refused with a code, and the same model then loads the default one", { timeout: SLOW * 2 }, async () => {
  const page = await apiPage();
  const out = await page.evaluate(async (paths) => {
    const { LinaModel, DEFAULT_MODEL_URL } = await import("./lina.js");
    const files = {};
    for (const path of paths) files[path] = await (await fetch(DEFAULT_MODEL_URL + path)).blob();
    // 77 bytes that claim a 400 MB tensor: the size prefix and the header, and no data. (The
    // claim stays under 512 MiB: on wasm32 the safetensors crate counts a tensor's size in
    // bits in a 32-bit integer, and refuses anything larger as an overflow before we see it.)
    const header = new TextEncoder().encode(
      JSON.stringify({ w: { dtype: "F32", shape: [100_000_000], data_offsets: [0, 400_000_000] } }),
    );
    const bytes = new Uint8Array(8 + header.length);
    new DataView(bytes.buffer).setBigUint64(0, BigInt(header.length), true);
    bytes.set(header, 8);
    files["unet/diffusion_pytorch_model.safetensors"] = new Blob([bytes]);

    const failure = (e) => ({ code: e.code, message: e.message });
    const model = new LinaModel();
    const out = { size: bytes.length };
    out.refused = await model.load({ files, backend: "cpu" }).then(() => "loaded", failure);
    out.deviceInfo = model.deviceInfo;
    out.noModel = await model.generate({ prompt: "x", steps: 2 }).then(() => "generated", failure);

    await model.load({ backend: "cpu" });
    const image = await model.generate({ prompt: "a red ball on a small mirror", steps: 2 });
    const colours = new Set();
    for (let i = 0; i < image.rgba.length; i += 4) colours.add((image.rgba[i] << 16) | (image.rgba[i + 1] << 8) | image.rgba[i + 2]);
    out.colours = colours.size;
    model.dispose();
    return out;
  }, DEFAULT_MODEL_FILES.filter((path) => path !== "unet/diffusion_pytorch_model.safetensors"));
  assert.equal(out.refused.code, "weight_file", JSON.stringify(out.refused));
  assert.match(out.refused.message, /unet\/diffusion_pytorch_model\.safetensors/);
  assert.match(out.refused.message, new RegExp(`describes a file of \\d+ bytes, but it has ${out.size}\\b`));
  assert.equal(out.deviceInfo, null);
  assert.equal(out.noModel.code, "no_model", "the failed load left no model behind");
  assert.ok(out.colours > 50, `the default model drew ${out.colours} colours`);
  await page.close();
});

test("a single-file checkpoint loads by URL and as a file beside its family's folder, reading only that folder's tokenizer and configs, and draws the folder's image; another layout is refused", { timeout: SLOW }, async () => {
  const page = await apiPage();
  const before = server.requests.length;
  const out = await page.evaluate(async () => {
    const { LinaModel } = await import("./lina.js");
    const { drawnPixels, samePixels: same } = await import("/helpers/reference.js");
    const folder = "/fixtures/sd1_tiny/";
    const draw = (source) => drawnPixels(LinaModel, source, 64);
    const byUrl = await draw({ url: folder, checkpoint: "/made/sd1_tiny.safetensors" });
    const bytes = new Uint8Array(await (await fetch("/made/sd1_tiny.safetensors")).arrayBuffer());
    const asFile = await draw({ url: folder, checkpoint: new Blob([bytes]) });
    const plain = await draw({ url: folder });
    const unet = new Blob([await (await fetch(folder + "unet/diffusion_pytorch_model.safetensors")).arrayBuffer()]);
    const refused = await draw({ url: folder, checkpoint: unet }).then(
      () => "loaded",
      (e) => ({ code: e.code, message: e.message }),
    );
    const badType = await draw({ checkpoint: 42 }).then(() => "loaded", (e) => e.code);
    return { url: same(byUrl, plain), file: same(asFile, plain), colours: new Set(plain).size, refused, badType };
  });
  const requests = server.requests.slice(before);
  // Until the plain folder load, only configs, the tokenizer and the checkpoint were fetched.
  const firstWeights = requests.findIndex((r) => r.includes("/fixtures/sd1_tiny/") && r.includes(".safetensors"));
  const checkpointGets = requests.filter((r) => r.startsWith("GET /made/sd1_tiny.safetensors"));
  assert.ok(firstWeights > requests.indexOf(checkpointGets[1]), `a folder weight was fetched beside a checkpoint: ${requests.join(", ")}`);
  assert.equal(out.url, true, "the checkpoint by URL draws the folder's image");
  assert.equal(out.file, true, "the checkpoint as a file draws the folder's image");
  assert.ok(out.colours > 10, `the image has ${out.colours} values`);
  assert.equal(out.refused.code, "unknown_layout", JSON.stringify(out.refused));
  assert.match(out.refused.message, /nearest: diffusers UNet/);
  assert.equal(out.badType, "invalid_input");
  await page.close();
});

test("FLUX's transformer file (Black Forest Labs' layout) beside a FLUX folder, by URL and as files, draws the folder's image: the folder gives the VAE's and text encoders' weights, fetched after the file; an SD 3 file without T5 takes the folder's T5 with `t5: true`", { timeout: SLOW }, async () => {
  const page = await apiPage();
  const before = server.requests.length;
  const out = await page.evaluate(async () => {
    const { LinaModel } = await import("./lina.js");
    const { drawnPixels, samePixels: same } = await import("/helpers/reference.js");
    const folder = "/fixtures/flux_tiny/";
    const draw = (source) => drawnPixels(LinaModel, source, 32);
    const byUrl = await draw({ url: folder, checkpoint: "/made/flux_tiny.safetensors" });
    // The folder as a folder picker hands it over, without the transformer's weights.
    const paths = ["model_index.json", "scheduler/scheduler_config.json", "transformer/config.json", "vae/config.json",
      "vae/diffusion_pytorch_model.safetensors", "tokenizer_2/tokenizer.json", "tokenizer_2/tokenizer_config.json",
      ...["text_encoder", "text_encoder_2"].flatMap((f) => [`${f}/config.json`, `${f}/model.safetensors`]),
      ...["tokenizer_config.json", "vocab.json", "merges.txt"].map((f) => `tokenizer/${f}`)];
    const files = {};
    for (const path of paths) files[path] = await (await fetch(folder + path)).blob();
    const checkpoint = new Blob([await (await fetch("/made/flux_tiny.safetensors")).arrayBuffer()]);
    const asFiles = await draw({ files, checkpoint });
    const plain = await draw({ url: folder });
    const sd3 = "/fixtures/sd3_tiny/";
    const sd3File = await draw({ url: sd3, t5: true, checkpoint: "/made/sd3_tiny_no_t5.safetensors" });
    const sd3Folder = await draw({ url: sd3, t5: true });
    const sd3WithoutT5 = await draw({ url: sd3 });
    return {
      url: same(byUrl, plain), files: same(asFiles, plain), colours: new Set(plain).size,
      sd3: same(sd3File, sd3Folder), t5Matters: !same(sd3Folder, sd3WithoutT5),
    };
  });
  assert.equal(out.url, true, "the file by URL draws the folder's image");
  assert.equal(out.files, true, "the file beside the folder's files draws the folder's image");
  assert.ok(out.colours > 10, `the image has ${out.colours} values`);
  assert.equal(out.sd3, true, "the SD 3 file without T5 draws the folder's image with T5");
  assert.equal(out.t5Matters, true, "T5 changes SD 3's image");
  // By URL: the folder's transformer weights never fetched; its VAE's after the checkpoint.
  const requests = server.requests.slice(before);
  const firstGet = (part) => requests.findIndex((r) => r.startsWith(`GET ${part}`));
  const checkpoint = firstGet("/made/flux_tiny.safetensors");
  const vae = firstGet("/fixtures/flux_tiny/vae/diffusion_pytorch_model.safetensors");
  assert.ok(checkpoint >= 0 && vae > checkpoint, `checkpoint at ${checkpoint}, the VAE's weights at ${vae}: ${requests.join(", ")}`);
  const transformer = firstGet("/fixtures/flux_tiny/transformer/diffusion_pytorch_model.safetensors");
  const plainLoad = requests.findLastIndex((r) => r.startsWith("GET /fixtures/flux_tiny/model_index.json"));
  assert.ok(transformer === -1 || transformer > plainLoad, `the folder's transformer weights were fetched beside the file: ${requests.join(", ")}`);
  await page.close();
});

test("SDXL (two text encoders, size conditioning), as a folder and as a single file beside it, draws diffusers' image", { timeout: SLOW }, async () => {
  const page = await apiPage();
  const out = await page.evaluate(async () => {
    const { LinaModel } = await import("./lina.js");
    const { referenceTensors, drawAgainst } = await import("/helpers/reference.js");
    const folder = "/fixtures/sdxl_tiny/";
    // diffusers' references: the starting latents and the image they give.
    const tensor = await referenceTensors(folder);
    const options = {
      prompt: "a red ball on a small mirror",
      negativePrompt: "blurry",
      steps: 10,
      guidanceScale: 7.5,
      width: 64,
      height: 64,
      initialLatents: Array.from(tensor("latents")),
    };
    const draw = (source) => drawAgainst(LinaModel, source, options, tensor("image"));
    return { folder: await draw({ url: folder }), file: await draw({ url: folder, checkpoint: "/made/sdxl_tiny.safetensors" }) };
  });
  assert.ok(out.folder.worst <= 1, `the browser's SDXL image is ${out.folder.worst}/255 from diffusers'`);
  assert.equal(out.folder.nativeSize, 64);
  assert.ok(out.file.worst <= 1, `the SDXL single file's image is ${out.file.worst}/255 from diffusers'`);
  await page.close();
});

test("SDXL-Turbo at 4 steps, given the noise diffusers' ancestral sampler drew (`stepNoise`), draws diffusers' image", { timeout: SLOW }, async () => {
  const page = await apiPage();
  const out = await page.evaluate(async () => {
    const { LinaModel } = await import("./lina.js");
    const { referenceTensors, drawAgainst } = await import("/helpers/reference.js");
    // The tiny SDXL folder with sdxl-turbo's scheduler config (Euler ancestral, trailing).
    const base = "/fixtures/sdxl_tiny/";
    const turbo = "/fixtures/sdxl_turbo_tiny/";
    const paths = ["model_index.json", "unet/config.json", "unet/diffusion_pytorch_model.safetensors",
      "vae/config.json", "vae/diffusion_pytorch_model.safetensors",
      ...["text_encoder", "text_encoder_2"].flatMap((f) => [`${f}/config.json`, `${f}/model.safetensors`]),
      ...["tokenizer", "tokenizer_2"].flatMap((f) => [`${f}/tokenizer_config.json`, `${f}/vocab.json`, `${f}/merges.txt`])];
    const files = {};
    for (const path of paths) files[path] = await (await fetch(base + path)).blob();
    files["scheduler/scheduler_config.json"] = await (await fetch(turbo + "scheduler/scheduler_config.json")).blob();
    const tensor = await referenceTensors(turbo);
    const options = {
      prompt: "a red ball on a small mirror",
      steps: 4,
      guidanceScale: 0,
      initialLatents: Array.from(tensor("latents")),
      stepNoise: Array.from(tensor("noise_4")),
    };
    // Noise for two steps where four run: refused, naming what fits.
    const short = (model) =>
      model.generate({ ...options, stepNoise: Array.from(tensor("noise_2")) }).then(
        () => null,
        (error) => ({ code: error.code, message: error.message }),
      );
    return drawAgainst(LinaModel, { files }, options, tensor("image_4"), short);
  });
  assert.ok(out.worst <= 1, `the browser's SDXL-Turbo image is ${out.worst}/255 from diffusers'`);
  assert.equal(out.then?.code, "invalid_input", JSON.stringify(out.then));
  assert.match(out.then.message, /4 steps/);
  await page.close();
});

test("a zero-terminal-SNR scheduler config (`rescale_betas_zero_snr`) with `guidanceRescale` 0.7 draws diffusers' image; a rescale above 1 is refused", { timeout: SLOW }, async () => {
  const page = await apiPage();
  const out = await page.evaluate(async () => {
    const { LinaModel } = await import("./lina.js");
    const { referenceTensors, drawAgainst } = await import("/helpers/reference.js");
    // The tiny SD 2.x folder with its scheduler config rescaled to zero terminal SNR.
    const base = "/fixtures/sd2_tiny/";
    const zeroSnr = "/fixtures/sd2_zero_snr/";
    const paths = ["model_index.json", "unet/config.json", "unet/diffusion_pytorch_model.safetensors",
      "vae/config.json", "vae/diffusion_pytorch_model.safetensors", "text_encoder/config.json",
      "text_encoder/model.safetensors", "tokenizer/tokenizer_config.json", "tokenizer/vocab.json", "tokenizer/merges.txt"];
    const files = {};
    for (const path of paths) files[path] = await (await fetch(base + path)).blob();
    files["scheduler/scheduler_config.json"] = await (await fetch(zeroSnr + "scheduler/scheduler_config.json")).blob();
    const tensor = await referenceTensors(zeroSnr);
    const options = {
      prompt: "a red ball on a small mirror",
      negativePrompt: "blurry",
      steps: 10,
      guidanceScale: 7.5,
      guidanceRescale: 0.7,
      initialLatents: Array.from(tensor("latents")),
    };
    const tooMuch = (model) =>
      model.generate({ ...options, guidanceRescale: 1.5 }).then(
        () => null,
        (error) => ({ code: error.code, message: error.message }),
      );
    return drawAgainst(LinaModel, { files }, options, tensor("image"), tooMuch);
  });
  assert.ok(out.worst <= 1, `the browser's zero-SNR image is ${out.worst}/255 from diffusers'`);
  assert.equal(out.then?.code, "invalid_input", JSON.stringify(out.then));
  assert.match(out.then.message, /between 0 and 1/);
  await page.close();
});

test("ControlNets loaded by URL, from files and as an original ControlNet file beside the tiny SD 1.x UNet draw diffusers' images (`controlnets` with scales and windows, `controlnetGuessMode`, two at once with `addControlNet`); without their inputs the run is refused, an SDXL ControlNet rejects with \"config\" and keeps those loaded, and after `removeControlNets` the UNet runs alone", { timeout: SLOW }, async () => {
  const page = await apiPage();
  const out = await page.evaluate(async () => {
    const { LinaModel } = await import("./lina.js");
    const { referenceTensors, imageInput } = await import("/helpers/reference.js");
    const folder = "/fixtures/controlnet_tiny/";
    const tensor = await referenceTensors(folder);
    const worst = (image, expected) => {
      let most = 0;
      for (let p = 0; p < image.width * image.height; p++) {
        for (let c = 0; c < 3; c++) most = Math.max(most, Math.abs(image.rgba[p * 4 + c] - expected[p * 3 + c] * 255));
      }
      return most;
    };
    const failure = (promise) => promise.then(() => null, (error) => ({ code: error.code, message: error.message }));
    const card = imageInput(tensor("card"), 64, 64);
    const plain = {
      prompt: "a red ball on a small mirror",
      negativePrompt: "blurry",
      steps: 10,
      guidanceScale: 7.5,
      initialLatents: Array.from(tensor("latents")),
    };
    const options = { ...plain, controlnets: [{ image: card }] };
    const model = new LinaModel();
    try {
      await model.load({ backend: "cpu", url: "/fixtures/sd1_tiny/" });
      await model.loadControlNet({ url: folder });
      const windowed = { ...plain, controlnets: [{ image: card, scale: 0.6, start: 0.2, end: 0.8 }] };
      const byUrl = worst(await model.generate(windowed), tensor("image_window"));
      const files = {};
      for (const name of ["config.json", "diffusion_pytorch_model.safetensors"]) files[name] = await (await fetch(folder + name)).blob();
      await model.loadControlNet({ files });
      const byFiles = worst(await model.generate(options), tensor("image"));
      const guessed = worst(await model.generate({ ...options, controlnetGuessMode: true }), tensor("image_guess"));
      const refused = await failure(model.generate(plain));
      const unknownKey = await failure(model.generate({ ...plain, controlnets: [{ image: card, scael: 1 }] }));
      const misfit = await failure(model.addControlNet({ url: "/fixtures/controlnet_sdxl_tiny/" }));
      const kept = worst(await model.generate(options), tensor("image"));
      // The same ControlNet as an original file (lllyasviel's names; its config inferred),
      // added beside the first: two at once, each with its image, scale and window.
      await model.addControlNet({ url: "/made/control_tiny.safetensors" });
      const start = imageInput(tensor("start"), 64, 64);
      const two = [{ image: card, scale: 0.7 }, { image: start, scale: 0.5, start: 0.3, end: 0.9 }];
      const multi = worst(await model.generate({ ...plain, controlnets: two }), tensor("image_multi"));
      await model.removeControlNets();
      // At scale 0 the ControlNet adds nothing: diffusers' image is the UNet's alone.
      const alone = worst(await model.generate(plain), tensor("image_unguided"));
      return { byUrl, byFiles, guessed, refused, unknownKey, misfit, kept, multi, alone };
    } finally {
      model.dispose();
    }
  });
  for (const key of ["byUrl", "byFiles", "guessed", "kept", "multi", "alone"]) {
    assert.ok(out[key] <= 1, `${key}: the browser's image is ${out[key]}/255 from diffusers'`);
  }
  assert.equal(out.refused?.code, "invalid_input", JSON.stringify(out.refused));
  assert.match(out.refused.message, /give each loaded ControlNet its control image/);
  assert.equal(out.unknownKey?.code, "invalid_input", JSON.stringify(out.unknownKey));
  assert.match(out.unknownKey.message, /scael/);
  assert.equal(out.misfit?.code, "config", JSON.stringify(out.misfit));
  await page.close();
});

test("a T2I-Adapter loaded by URL beside the tiny SD 1.x UNet draws diffusers' image (`t2iAdapter` at scale 0.8); without its input the run is refused, and after `removeT2IAdapter` an input is refused", { timeout: SLOW }, async () => {
  const page = await apiPage();
  const out = await page.evaluate(async () => {
    const { LinaModel } = await import("./lina.js");
    const { referenceTensors, imageInput } = await import("/helpers/reference.js");
    const folder = "/fixtures/t2i_adapter_tiny/";
    const tensor = await referenceTensors(folder);
    const failure = (promise) => promise.then(() => null, (error) => ({ code: error.code, message: error.message }));
    const plain = {
      prompt: "a red ball on a small mirror",
      negativePrompt: "blurry",
      steps: 10,
      guidanceScale: 7.5,
      initialLatents: Array.from(tensor("latents")),
    };
    const adapted = { ...plain, t2iAdapter: { image: imageInput(tensor("card"), 64, 64), scale: 0.8 } };
    const model = new LinaModel();
    try {
      await model.load({ backend: "cpu", url: "/fixtures/sd1_tiny/" });
      await model.loadT2IAdapter({ url: folder });
      const image = await model.generate(adapted);
      const expected = tensor("image");
      let worst = 0;
      for (let p = 0; p < image.width * image.height; p++) {
        for (let c = 0; c < 3; c++) worst = Math.max(worst, Math.abs(image.rgba[p * 4 + c] - expected[p * 3 + c] * 255));
      }
      const refused = await failure(model.generate(plain));
      await model.removeT2IAdapter();
      const unloaded = await failure(model.generate(adapted));
      return { worst, refused, unloaded };
    } finally {
      model.dispose();
    }
  });
  assert.ok(out.worst <= 1, `the browser's T2I-Adapter image is ${out.worst}/255 from diffusers'`);
  assert.match(out.refused?.message ?? "", /T2I-Adapter is loaded/);
  assert.match(out.unloaded?.message ?? "", /no T2I-Adapter is loaded/);
  await page.close();
});

test("an SDXL refiner (text_encoder_2 alone, an aesthetic score) loads by URL and as a single file; its img2img (`initImage`, `strength`) and its run on SDXL base's handed-over latents (`denoisingEnd`, `handoffLatents`) draw diffusers' images", { timeout: SLOW }, async () => {
  const page = await apiPage();
  const before = server.requests.length;
  const out = await page.evaluate(async () => {
    const { LinaModel } = await import("./lina.js");
    const { referenceTensors, drawAgainst } = await import("/helpers/reference.js");
    const folder = "/fixtures/sdxl_refiner_tiny/";
    const tensor = await referenceTensors(folder);
    const card = tensor("card");
    const rgba = new Uint8ClampedArray(64 * 64 * 4);
    for (let p = 0; p < 64 * 64; p++) {
      for (let c = 0; c < 3; c++) rgba[p * 4 + c] = card[p * 3 + c];
      rgba[p * 4 + 3] = 255;
    }
    const options = {
      prompt: "a red ball on a small mirror",
      negativePrompt: "blurry",
      steps: 10,
      guidanceScale: 7.5,
      initialLatents: Array.from(tensor("noise")),
      initImage: { width: 64, height: 64, rgba },
      strength: 0.5,
    };
    const img2img = await drawAgainst(LinaModel, { url: folder }, options, tensor("image"));
    // The same weights as StabilityAI's single file names them, beside the folder.
    const single = await drawAgainst(LinaModel, { url: folder, checkpoint: "/made/sdxl_refiner_tiny.safetensors" }, options, tensor("image"));
    // The ensemble of experts: SDXL base stops at 80% of the schedule and hands its latents
    // (a Float32Array, passed on as it is) to the refiner.
    const base = new LinaModel();
    let handed;
    try {
      await base.load({ backend: "cpu", url: "/fixtures/sdxl_tiny/" });
      handed = await base.generate({ ...options, initImage: undefined, strength: undefined, initialLatents: Array.from(tensor("handoff_start")), denoisingEnd: 0.8 });
    } finally {
      base.dispose();
    }
    const refined = await drawAgainst(
      LinaModel,
      { url: folder },
      { prompt: options.prompt, negativePrompt: options.negativePrompt, steps: 10, guidanceScale: 7.5, handoffLatents: handed.latents, denoisingStart: 0.8 },
      tensor("handoff_image"),
    );
    return { worst: img2img.worst, single: single.worst, handedType: handed.latents?.constructor?.name, refined: refined.worst };
  });
  assert.ok(out.worst <= 1, `the browser's SDXL refiner image is ${out.worst}/255 from diffusers'`);
  assert.ok(out.single <= 1, `the refiner's single file draws ${out.single}/255 from diffusers'`);
  assert.equal(out.handedType, "Float32Array");
  assert.ok(out.refined <= 1, `base then refiner: ${out.refined}/255 from diffusers'`);
  // The folder's index names no first text encoder or tokenizer: none was asked for.
  const asked = server.requests.slice(before).filter((r) => r.includes("sdxl_refiner_tiny/"));
  assert.ok(!asked.some((r) => /\/(text_encoder|tokenizer)\//.test(r)), asked.join("\n"));
  await page.close();
});

test("SD 3 (an MMDiT with flow matching) without T5's weights, by URL and as files, draws diffusers' image without T5, and with `t5: true` by URL draws it with T5", { timeout: SLOW }, async () => {
  const page = await apiPage();
  const before = server.requests.length;
  const out = await page.evaluate(async () => {
    const { LinaModel } = await import("./lina.js");
    const { referenceTensors, drawAgainst } = await import("/helpers/reference.js");
    const folder = "/fixtures/sd3_tiny/";
    const tensor = await referenceTensors(folder);
    // The folder as the page's folder picker hands it over, every file by its path; without
    // T5 (text_encoder_3, tokenizer_3). By URL, T5's config is fetched and its weights are not.
    const paths = ["model_index.json", "scheduler/scheduler_config.json", "transformer/config.json",
      "transformer/diffusion_pytorch_model.safetensors", "vae/config.json", "vae/diffusion_pytorch_model.safetensors",
      ...["text_encoder", "text_encoder_2"].flatMap((f) => [`${f}/config.json`, `${f}/model.safetensors`]),
      ...["tokenizer", "tokenizer_2"].flatMap((f) => [`${f}/tokenizer_config.json`, `${f}/vocab.json`, `${f}/merges.txt`])];
    const files = {};
    for (const path of paths) files[path] = await (await fetch(folder + path)).blob();
    const options = {
      prompt: "a red ball on a small mirror",
      negativePrompt: "blurry",
      steps: 4,
      guidanceScale: 7.5,
      width: 48,
      height: 32,
      initialLatents: Array.from(tensor("latents_wide")),
    };
    // A UNet's scheduler is refused on a flow-matching model.
    const refusal = (model) =>
      model.generate({ prompt: "a red ball", steps: 2, scheduler: "euler" }).then(
        () => null,
        (error) => ({ code: error.code, message: error.message }),
      );
    const draw = (source) => drawAgainst(LinaModel, source, options, tensor("image_wide_no_t5"), refusal);
    const withT5 = await drawAgainst(LinaModel, { url: folder, t5: true }, options, tensor("image_wide"));
    return { url: await draw({ url: folder }), files: await draw({ files }), withT5 };
  });
  // Asked for, T5's weights and tokenizer come by URL too: diffusers' image with T5, no warning.
  const { withT5 } = out;
  delete out.withT5;
  assert.ok(withT5.worst <= 1, `SD 3 with T5 by URL: the browser's image is ${withT5.worst}/255 from diffusers'`);
  assert.deepEqual(withT5.warnings, []);
  // The load with T5 (the only one that fetches T5's weights) asked for every config and
  // tokenizer before the first weights: what the model needs is checked in between.
  const requests = server.requests.slice(before).filter((r) => r.includes("/fixtures/sd3_tiny/"));
  const t5Weights = requests.findIndex((r) => r.includes("/text_encoder_3/model.safetensors"));
  const model = requests.slice(requests.slice(0, t5Weights).findLastIndex((r) => r.includes("/model_index.json")), t5Weights + 1);
  const firstWeights = model.findIndex((r) => r.includes(".safetensors"));
  for (const file of ["transformer/config.json", "vae/config.json", "text_encoder_3/config.json", "tokenizer_3/tokenizer.json"]) {
    const at = model.findIndex((r) => r.includes(`/sd3_tiny/${file} `));
    assert.ok(at >= 0 && at < firstWeights, `${file} at ${at}, first weights at ${firstWeights}: ${model.join(", ")}`);
  }
  for (const [how, result] of Object.entries(out)) {
    assert.ok(result.worst <= 1, `SD 3 ${how}: the browser's image is ${result.worst}/255 from diffusers'`);
    assert.equal(result.nativeSize, 32);
    assert.equal(result.then?.code, "invalid_input", JSON.stringify(result.then));
    assert.match(result.then.message, /flow_euler/);
  }
  // By URL the folder has T5's config: the image says T5 was not run; the files lack it.
  assert.equal(out.url.warnings.length, 1, JSON.stringify(out.url.warnings));
  assert.match(out.url.warnings[0], /text_encoder_3/);
  assert.deepEqual(out.files.warnings, []);
  await page.close();
});

test("FLUX (double- and single-stream transformer, T5 as its second text encoder) by URL draws diffusers' image", { timeout: SLOW }, async () => {
  const page = await apiPage();
  const out = await page.evaluate(async () => {
    const { LinaModel } = await import("./lina.js");
    const { referenceTensors, drawAgainst } = await import("/helpers/reference.js");
    const folder = "/fixtures/flux_tiny/";
    const tensor = await referenceTensors(folder);
    const options = {
      prompt: "a red ball on a small mirror",
      steps: 4,
      guidanceScale: 3.5,
      width: 48,
      height: 32,
      initialLatents: Array.from(tensor("latents_wide")),
    };
    return drawAgainst(LinaModel, { url: folder }, options, tensor("image_wide"));
  });
  assert.ok(out.worst <= 1, `FLUX by URL: the browser's image is ${out.worst}/255 from diffusers'`);
  assert.deepEqual(out.warnings, []);
  await page.close();
});

test("FLUX.1 Fill (`initImage` and `mask`) and FLUX.1 Canny/Depth (`controlImage`) from files, FLUX.1-dev with a Canny/Depth control LoRA in BFL's names and FLUX.1 Kontext (`referenceImage`, an uneven one kept at its size and resized as Pillow does) by URL, draw diffusers' images; a control image for a model that takes none, an unknown `referenceSize` and one without a reference image are refused; `setMaxSequenceLength` changes the image and refuses 513", { timeout: SLOW }, async () => {
  const page = await apiPage();
  const out = await page.evaluate(async () => {
    const { LinaModel } = await import("./lina.js");
    const { referenceTensors, drawAgainst, imageInput } = await import("/helpers/reference.js");
    // flux_tiny's parts with each variant's transformer, as a folder picker hands them over.
    const parts = ["model_index.json", "scheduler/scheduler_config.json", "vae/config.json",
      "vae/diffusion_pytorch_model.safetensors", "tokenizer_2/tokenizer.json", "tokenizer_2/tokenizer_config.json",
      ...["text_encoder", "text_encoder_2"].flatMap((f) => [`${f}/config.json`, `${f}/model.safetensors`]),
      ...["tokenizer_config.json", "vocab.json", "merges.txt"].map((f) => `tokenizer/${f}`)];
    const files = async (variant) => {
      const all = {};
      for (const path of parts) all[path] = await (await fetch("/fixtures/flux_tiny/" + path)).blob();
      for (const path of ["transformer/config.json", "transformer/diffusion_pytorch_model.safetensors"]) {
        all[path] = await (await fetch(`/fixtures/${variant}/${path}`)).blob();
      }
      return all;
    };
    const latents = Array.from((await referenceTensors("/fixtures/flux_tiny/"))("latents_wide"));
    const base = { prompt: "a red ball on a small mirror", steps: 4, width: 48, height: 32, initialLatents: latents };
    const fill = await referenceTensors("/fixtures/flux_fill_tiny/");
    const control = await referenceTensors("/fixtures/flux_control_tiny/");
    const controlImage = imageInput(control("card"), 48, 32);
    // BFL's control LoRA for flux_tiny and diffusers' image with it (lora/flux_tiny_control_bfl_reference.safetensors).
    const controlLora = await referenceTensors("/fixtures/lora/flux_tiny_control_bfl_");
    const kontext = await referenceTensors("/fixtures/flux_kontext/");
    const kontextOptions = {
      ...base, width: 32, guidanceScale: 2.5, initialLatents: Array.from((await referenceTensors("/fixtures/flux_tiny/"))("latents")),
      referenceImage: imageInput(kontext("uneven_card"), 50, 34), referenceSize: "kept",
    };
    const refusal = (model) =>
      model.generate({ ...base, controlImage }).then(
        () => null,
        (error) => ({ code: error.code, message: error.message }),
      );
    return {
      fill: await drawAgainst(LinaModel, { files: await files("flux_fill_tiny") }, {
        ...base, guidanceScale: 30, strength: 1,
        initImage: imageInput(fill("card"), 48, 32), mask: imageInput(fill("mask"), 48, 32),
      }, fill("image"), refusal),
      control: await drawAgainst(LinaModel, { files: await files("flux_control_tiny") },
        { ...base, guidanceScale: 10, controlImage }, control("image")),
      controlLora: await drawAgainst(LinaModel, {
        url: "/fixtures/flux_tiny/",
        loras: [{ url: "/fixtures/lora/flux_tiny_control_bfl.safetensors", scale: controlLora("scale")[0] }],
      }, { ...base, guidanceScale: 10, controlImage: imageInput(controlLora("card"), 48, 32) }, controlLora("image")),
      // A 50x34 card kept at its size: resized to 48x32 with Pillow's Lanczos filter, as diffusers does.
      kontext: await drawAgainst(LinaModel, { url: "/fixtures/flux_tiny/" }, kontextOptions, kontext("image_kept"), async (model) => {
        const refused = (options) => model.generate(options).then(() => null, (error) => ({ code: error.code, message: error.message }));
        const before = await model.generate(kontextOptions);
        const tooLong = await model.setMaxSequenceLength(513).then(() => null, (error) => error.code);
        // T5's text padded to 256 tokens, not FLUX's 512: the padding takes part in attention.
        await model.setMaxSequenceLength(256);
        const after = await model.generate(kontextOptions);
        return {
          unknownSize: await refused({ ...kontextOptions, referenceSize: "native" }),
          sizeWithoutImage: await refused({ ...kontextOptions, referenceImage: undefined }),
          tooLong,
          shorterTextMoves: before.rgba.some((v, i) => v !== after.rgba[i]),
        };
      }),
    };
  });
  assert.ok(out.fill.worst <= 1, `FLUX Fill: the browser's image is ${out.fill.worst}/255 from diffusers'`);
  assert.ok(out.control.worst <= 1, `FLUX Control: the browser's image is ${out.control.worst}/255 from diffusers'`);
  assert.ok(out.controlLora.worst <= 1, `FLUX control LoRA: the browser's image is ${out.controlLora.worst}/255 from diffusers'`);
  assert.ok(out.kontext.worst <= 1, `FLUX Kontext: the browser's image is ${out.kontext.worst}/255 from diffusers'`);
  assert.equal(out.kontext.then.unknownSize?.code, "invalid_input", JSON.stringify(out.kontext.then));
  assert.match(out.kontext.then.unknownSize.message, /unknown reference size "native"/);
  assert.equal(out.kontext.then.sizeWithoutImage?.code, "invalid_input", JSON.stringify(out.kontext.then));
  assert.match(out.kontext.then.sizeWithoutImage.message, /referenceSize sizes a referenceImage/);
  assert.equal(out.kontext.then.tooLong, "invalid_input", "setMaxSequenceLength(513)");
  assert.ok(out.kontext.then.shorterTextMoves, "256 T5 tokens drew the same image as 512");
  assert.equal(out.fill.then?.code, "invalid_input", JSON.stringify(out.fill.then));
  assert.match(out.fill.then.message, /takes none/);
  await page.close();
});

test("a LoRA and an embedding load with the model: scale 0 changes nothing, scale 1 changes the image, and a LoRA for another model is refused naming its module", { timeout: SLOW * 2 }, async () => {
  const page = await apiPage();
  const out = await page.evaluate(async () => {
    const { LinaModel, DEFAULT_MODEL_URL } = await import("./lina.js");
    // The default UNet's first cross-attention query: its name and shape from the file's header.
    const unet = new Uint8Array(await (await fetch(DEFAULT_MODEL_URL + "unet/diffusion_pytorch_model.safetensors")).arrayBuffer());
    const headerLength = Number(new DataView(unet.buffer).getBigUint64(0, true));
    const header = JSON.parse(new TextDecoder().decode(unet.subarray(8, 8 + headerLength)));
    const name = Object.keys(header).find((k) => k.includes("attn2.to_q.weight"));
    const [rows, cols] = header[name].shape;
    // A safetensors file of f32 tensors, written by hand.
    const safetensors = (tensors) => {
      let offset = 0;
      const meta = {};
      for (const [key, shape, values] of tensors) {
        meta[key] = { dtype: "F32", shape, data_offsets: [offset, offset + values.length * 4] };
        offset += values.length * 4;
      }
      let json = new TextEncoder().encode(JSON.stringify(meta));
      const bytes = new Uint8Array(8 + json.length + offset);
      new DataView(bytes.buffer).setBigUint64(0, BigInt(json.length), true);
      bytes.set(json, 8);
      let at = 8 + json.length;
      for (const [, , values] of tensors) {
        bytes.set(new Uint8Array(new Float32Array(values).buffer), at);
        at += values.length * 4;
      }
      return bytes;
    };
    const ramp = (n) => Array.from({ length: n }, (_, i) => 0.05 * (i % 7));
    const lora = (module) =>
      safetensors([
        [`${module}.lora_down.weight`, [1, cols], ramp(cols)],
        [`${module}.lora_up.weight`, [rows, 1], ramp(rows)],
      ]);
    const module = "lora_unet_" + name.replace(/\.weight$/, "").replaceAll(".", "_");
    const draw = async (source) => {
      const model = new LinaModel();
      try {
        await model.load({ backend: "cpu", ...source });
        const image = await model.generate({ prompt: "a red ball on a small mirror", steps: 2, seed: 1 });
        return Array.from(image.rgba);
      } finally {
        model.dispose();
      }
    };
    const same = (a, b) => a.length === b.length && a.every((v, i) => v === b[i]);
    const plain = await draw({});
    const off = await draw({ loras: [{ file: lora(module), scale: 0 }] });
    const on = await draw({ loras: [{ file: new Blob([lora(module)]), scale: 1 }] });
    // The scale changed on the loaded model: the images of fresh loads at each scale.
    const rescaled = new LinaModel();
    let scaled;
    try {
      await rescaled.load({ backend: "cpu", loras: [{ file: lora(module), scale: 1 }] });
      const again = async (scales) => {
        await rescaled.setLoraScales(scales);
        return Array.from((await rescaled.generate({ prompt: "a red ball on a small mirror", steps: 2, seed: 1 })).rgba);
      };
      const [toOff, toOn] = [await again([0]), await again([1])];
      const wrongCount = await rescaled.setLoraScales([1, 1]).then(() => "set", (e) => e.code);
      scaled = { off: same(plain, toOff), on: same(on, toOn), wrongCount };
    } finally {
      rescaled.dispose();
    }
    const refused = await draw({ loras: [{ file: lora("lora_unet_no_such_block") }] }).then(
      () => "loaded",
      (e) => ({ code: e.code, message: e.message }),
    );
    const both = await draw({ loras: [{ file: lora(module), url: "x" }] }).then(() => "loaded", (e) => e.code);
    // An embedding of the text encoder's width, bound to a trigger the prompt then uses.
    const text = JSON.parse(await (await fetch(DEFAULT_MODEL_URL + "text_encoder/config.json")).text());
    const embedded = await draw({
      embeddings: [{ file: safetensors([["emb_params", [1, text.hidden_size], ramp(text.hidden_size)]]), trigger: "<ramp>" }],
    }).then(() => "loaded", (e) => e.code);
    return { off: same(plain, off), on: same(plain, on), refused, both, embedded, scaled };
  });
  assert.equal(out.off, true, "a LoRA at scale 0 changes nothing");
  assert.deepEqual(out.scaled, { off: true, on: true, wrongCount: "invalid_input" }, "setLoraScales on the loaded model");
  assert.equal(out.on, false, "a LoRA at scale 1 changes the image");
  assert.equal(out.refused.code, "invalid_input", JSON.stringify(out.refused));
  assert.match(out.refused.message, /no_such_block/);
  assert.equal(out.both, "invalid_input");
  assert.equal(out.embedded, "loaded");
  await page.close();
});

test("a trapped wasm instance fails the pending calls with worker_crashed, and a fresh worker loads and draws", { timeout: SLOW * 2 }, async () => {
  const page = await apiPage();
  const out = await page.evaluate(async () => {
    const { loadModel } = await import("./lina.js");
    const log = window.workerLog;
    const failure = (e) => ({ code: e.code, message: e.message });
    const options = { prompt: "a red ball on a small mirror", steps: 2 };
    const model = await loadModel({ backend: "cpu" });
    const out = {};
    const trapped = model.__trapForTesting().then(() => "returned", failure);
    const queued = model.generate(options).then(() => "generated", failure);
    [out.trapped, out.queued] = await Promise.all([trapped, queued]);
    out.deviceInfo = model.deviceInfo;
    out.workersAfterCrash = { created: log.created, terminated: log.terminated };

    // The next call starts a fresh worker, which has no model until one loads.
    out.noModel = await model.generate(options).then(() => "generated", failure);
    await model.load({ backend: "cpu" });
    out.loaded = model.deviceInfo !== null;
    const image = await model.generate(options);
    const colours = new Set();
    for (let i = 0; i < image.rgba.length; i += 4) colours.add((image.rgba[i] << 16) | (image.rgba[i + 1] << 8) | image.rgba[i + 2]);
    out.colours = colours.size;
    out.workers = { created: log.created, terminated: log.terminated };
    model.dispose();
    return out;
  });
  assert.equal(out.trapped.code, "worker_crashed", JSON.stringify(out.trapped));
  assert.match(out.trapped.message, /crashed/);
  assert.equal(out.queued.code, "worker_crashed", "a call queued behind the trap fails too");
  assert.equal(out.deviceInfo, null, "no model is loaded after a crash");
  assert.deepEqual(out.workersAfterCrash, { created: 1, terminated: 1 }, "the trapped worker was stopped");
  assert.equal(out.noModel.code, "no_model", JSON.stringify(out.noModel));
  assert.equal(out.loaded, true);
  assert.ok(out.colours > 50, `the fresh worker drew ${out.colours} colours`);
  assert.deepEqual(out.workers, { created: 2, terminated: 1 });
  await page.close();
});

test("the npm package (npm pack of www/) serves its example, which loads the default model and draws", { timeout: SLOW * 2 }, async () => {
  // Run from npm (npm test --prefix tests/e2e), this process carries npm's settings as
  // npm_config_* variables, its prefix among them: the inner npm starts without them.
  const env = Object.fromEntries(Object.entries(process.env).filter(([name]) => !/^npm_/i.test(name)));
  env.npm_config_update_notifier = "false";
  const json = execFileSync("npm", ["pack", WWW, "--pack-destination", PACKED, "--json"], { env, encoding: "utf8" });
  const [packed] = JSON.parse(json);
  const files = packed.files.map((f) => f.path);
  for (const file of [
    "package.json",
    "lina.js",
    "lina-worker.js",
    "lina.d.ts",
    "example.html",
    "pkg/lina.js",
    "pkg/lina_bg.wasm",
    "models/default/unet/diffusion_pytorch_model.safetensors",
  ]) {
    assert.ok(files.includes(file), `the package lacks ${file}: ${files.join(", ")}`);
  }
  for (const file of ["index.html", "main.js", "bench.html"]) assert.ok(!files.includes(file), `the package has ${file}`);
  execFileSync("tar", ["-xzf", join(PACKED, packed.filename), "-C", PACKED]);

  // Served from the unpacked folder alone: a file the package lacks is a 404 there. (Within
  // the model's folder, 404s are the optional files the default model does not have.)
  const page = await openPage(browser, `${server.base}packed/example.html`);
  assert.match(await waitForStatus(page, /^Done|^Error/), /^Done/);
  assert.ok((await canvasColours(page, "#image")) > 50, "the canvas shows an image");
  const missing = server.requests.filter(
    (r) => r.startsWith("GET /packed/") && !r.startsWith("GET /packed/models/") && r.endsWith(" 404"),
  );
  assert.deepEqual(missing, []);
  await page.close();
});
