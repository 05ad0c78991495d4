// The browser benchmark: www/bench.html in headless Chromium (WebGPU on SwiftShader here; the
// adapter is printed), for the embedded default model and the tiny SD 1.5-architecture
// fixture. Per model: a cold visit (fresh profile: wasm, shaders and weights all fetched and
// compiled) with every figure and ONNX Runtime Web's UNet call beside ours, then a warm
// visit (the same profile again: model files from the Cache API) for its time to first image.
// With --webgpu, a third visit forces our WebGPU backend (where "auto" chose the CPU one on
// a software adapter), for the ratio to ONNX Runtime Web's WebGPU provider on the same adapter,
// and a fourth times the UNet call there with burn's kernels only (kernels=burn), for what
// the fused kernels of shaders/ bring.
// Prints a table with the ratios and writes the figures as JSON with --json.
//
//   node tests/bench/bench.mjs [--repeat 3] [--steps 4] [--webgpu] [--only NAME] [--json FILE]
//
// --only: the models whose name contains NAME ("default" or "sd1_tiny").
//
// Needs www/pkg (scripts/build-web.sh) and `npm ci` in tests/e2e and here (scripts/bench.sh).
import { writeFile } from "node:fs/promises";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { launchBrowser, startServer } from "../e2e/harness.mjs";

const { values } = parseArgs({
  options: {
    repeat: { type: "string", default: "3" },
    steps: { type: "string", default: "4" },
    webgpu: { type: "boolean", default: false },
    only: { type: "string" },
    json: { type: "string" },
  },
});
const here = (path) => fileURLToPath(new URL(path, import.meta.url));
const server = await startServer({
  mounts: {
    "/ort/": here("node_modules/onnxruntime-web/dist"),
    "/fixtures/": here("../fixtures"),
  },
});
const MODELS = [
  { name: "default (embedded)", folder: "models/default/", onnx: "fixtures/onnx/default_unet.onnx" },
  { name: "sd1_tiny (SD 1.5 architecture)", folder: "fixtures/sd1_tiny/", onnx: "fixtures/onnx/sd1_tiny_unet.onnx" },
];

const browser = await launchBrowser();
const all = [];
try {
  for (const m of MODELS.filter((m) => !values.only || m.name.includes(values.only))) {
    const model = new URL(m.folder, server.base).href;
    const query = new URLSearchParams({ model, repeat: values.repeat, steps: values.steps });
    const context = await browser.newContext();
    const cold = await visit(context, `${query}&${new URLSearchParams({
      ort: new URL("ort/ort.all.min.mjs", server.base).href,
      onnx: new URL(m.onnx, server.base).href,
      weights: new URL(`${m.folder}unet/diffusion_pytorch_model.safetensors`, server.base).href,
    })}`);
    const warm = await visit(context, `${query}&only=first-image`);
    await context.close();
    all.push({ name: m.name, cold, warm: warm.timeToFirstImage });
    report(m.name, cold, warm.timeToFirstImage);
    if (values.webgpu && cold.adapter === "CPU") {
      const context = await browser.newContext();
      const gpu = await visit(context, `${query}&backend=webgpu`);
      const unfused = await visit(context, `${query}&backend=webgpu&kernels=burn&only=unet`);
      await context.close();
      all.at(-1).webgpu = gpu;
      all.at(-1).webgpuBurnKernels = unfused;
      report(`${m.name}, backend webgpu`, gpu, null, cold.onnxRuntimeWeb);
      const ratio = (unfused.unetMs.median / gpu.unetMs.median).toFixed(2);
      console.log(`  UNet call with burn's kernels only: median ${unfused.unetMs.median.toFixed(1)} ms (the fused kernels are ${ratio}x faster)`);
    }
  }
} finally {
  await browser.close();
  server.close();
}
if (values.json) await writeFile(values.json, `${JSON.stringify(all, null, 2)}\n`);

async function visit(context, query) {
  const page = await context.newPage();
  page.on("pageerror", (e) => console.error(`[page] ${e.message}`));
  await page.goto(`${server.base}bench.html?${query}`);
  await page.waitForFunction(() => window.benchResults, null, { timeout: 3_600_000, polling: 1000 });
  const results = await page.evaluate(() => window.benchResults);
  await page.close();
  if (results.error) throw new Error(`bench page: ${results.error}`);
  return results;
}

function report(name, r, warm, peer = r.onnxRuntimeWeb) {
  const ms = (v) => `${v.toFixed(1)} ms`;
  const row = (what, s) => console.log(`  ${what.padEnd(34)} median ${ms(s.median)} (min ${ms(s.min)}, max ${ms(s.max)}, ${s.runs} runs)`);
  const f = r.timeToFirstImage;
  console.log(`\n${name} on ${r.adapter}, ${r.steps} steps`);
  console.log(`  ${r.userAgent}`);
  for (const [label, t] of [["cold", f], ["warm", warm]].filter(([, t]) => t)) {
    console.log(`  time to first image, ${label}: ${ms(t.totalMs)} (wasm ${ms(t.wasmMs)}, load ${ms(t.loadMs)}, first step ${ms(t.firstStepMs)}, first image ${ms(t.imageMs)})`);
  }
  row("UNet call, batch 2 (ours)", r.unetMs);
  row("step with guidance (ours)", r.stepMs);
  row("image (ours)", r.imageMs);
  row("image with LINA (ours)", r.linaImageMs);
  console.log(`  LINA's overhead: ${(r.linaImageMs.median / r.imageMs.median).toFixed(2)}x`);
  console.log(`  GPU memory reserved: ${r.gpuBytesReserved ?? "unknown"} bytes`);
  const ort = peer;
  for (const provider of ["webgpu", "wasm"]) {
    const p = ort?.[provider];
    if (!p) continue;
    if (p.error) {
      console.log(`  ONNX Runtime Web ${ort.version} (${provider}): failed: ${p.error}`);
      continue;
    }
    row(`UNet call, ONNX Runtime Web (${provider})`, p.unetMs);
    console.log(`    session ${ms(p.createMs)}, warm-up ${ms(p.warmupMs)}; ours / theirs: ${(r.unetMs.median / p.unetMs.median).toFixed(2)}x`);
  }
}
