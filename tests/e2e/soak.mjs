// Browser soak: many images in one page session on the embedded model, through the embed
// API, watching the worker's memory (GPU allocator, wasm memory, JS heap) and the page's JS
// heap. Prints a sample every --every images, then each figure's growth from the end of the
// first round of prompts (as the native soak, src/soak.rs, says why) to the last image; exits
// 1 if any grew by more than 5%. Run by scripts/soak.sh.
//
//   node tests/e2e/soak.mjs [--images 200] [--steps 4] [--every 20]
import { parseArgs } from "node:util";
import { launchBrowser, startServer } from "./harness.mjs";

const ALLOWED_GROWTH = 5;
// The same prompts as the native soak (src/soak.rs): every category's relations.
const PROMPTS = [
  "a red ball on a small mirror",
  "a blue cube on a table, lit from the left",
  "a green cone to the left of a yellow ball",
  "a jar of sand on a table",
  "a person close to the water and in the sand",
  "a red cube in front of a blue cone",
];

const { values } = parseArgs({
  options: {
    images: { type: "string", default: "200" },
    steps: { type: "string", default: "4" },
    every: { type: "string", default: "20" },
  },
});
const [images, steps, every] = [values.images, values.steps, values.every].map(Number);

const server = await startServer();
// --expose-gc: the worker collects garbage before each sample, so heaps count live objects.
const browser = await launchBrowser(["--js-flags=--expose-gc", "--enable-precise-memory-info"]);
const page = await browser.newPage();
page.on("pageerror", (e) => console.error(`[page] ${e.message}`));
await page.goto(`${server.base}lina.js`);
const cdp = await page.context().newCDPSession(page);
await cdp.send("Performance.enable");
await page.evaluate(async () => {
  const { loadModel } = await import("./lina.js");
  window.model = await loadModel();
  window.plan = await window.model.linaPlan();
});

async function sample(image) {
  const worker = await page.evaluate(() => window.model.memoryUsage());
  await cdp.send("HeapProfiler.collectGarbage");
  const { metrics } = await cdp.send("Performance.getMetrics");
  const pageHeap = metrics.find((m) => m.name === "JSHeapUsedSize")?.value ?? null;
  return {
    image,
    "GPU bytes in use": worker.gpu?.bytesInUse ?? null,
    "GPU bytes reserved": worker.gpu?.bytesReserved ?? null,
    "wasm memory": worker.wasmBytes,
    "worker JS heap": worker.jsHeapBytes,
    "page JS heap": pageHeap,
  };
}

const baseline = Math.min(PROMPTS.length, images);
const started = performance.now();
const samples = [];
for (let image = 1; image <= images; image++) {
  const options = { prompt: PROMPTS[(image - 1) % PROMPTS.length], seed: image, steps };
  await page.evaluate((options) => window.model.generate({ ...options, plan: window.plan }), options);
  if ([1, baseline, images].includes(image) || image % every === 0) {
    const s = await sample(image);
    samples.push(s);
    const seconds = ((performance.now() - started) / 1000).toFixed(1);
    console.log(`image ${image} at ${seconds} s: ${JSON.stringify(s)}`);
  }
}
const seconds = (performance.now() - started) / 1000;
console.log(`${images} images, ${steps} steps each, LINA's default plan, ${(seconds / images).toFixed(2)} s per image`);
const [first, last] = [samples.find((s) => s.image === baseline), samples.at(-1)];
let grew = false;
for (const what of Object.keys(first).filter((k) => k !== "image")) {
  if (first[what] === null || last[what] === null) {
    console.log(`${what}: not reported by this browser`);
    continue;
  }
  const percent = ((last[what] - first[what]) / Math.max(first[what], 1)) * 100;
  grew ||= percent > ALLOWED_GROWTH;
  console.log(`${what}: ${first[what]} after image ${baseline}, ${last[what]} after the last (${percent >= 0 ? "+" : ""}${percent.toFixed(2)}%)`);
}
await browser.close();
server.close();
console.log(grew ? `memory grew by more than ${ALLOWED_GROWTH}%: a leak` : `memory at the end is within ${ALLOWED_GROWTH}% of its value after image ${baseline}`);
process.exit(grew ? 1 : 0);
