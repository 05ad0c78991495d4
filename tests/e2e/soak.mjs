// Browser soak: many images in one page session on the embedded model, through the embed
// API, watching the worker's memory (GPU allocator, wasm memory, JS heap) and the page's JS
// heap. Prints a sample every --every images, then each figure's growth from the end of the
// first round of prompts (as the native soak, src/soak.rs, says why) to the last image; exits
// 1 if any grew by more than 5%. Run by scripts/soak.sh.
//
//   node tests/e2e/soak.mjs [--images 200] [--steps 1] [--every 20] [--plan lina|baseline]
//
// One step per image by default: on SwiftShader a LINA image takes over a minute at 4 steps.
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
    steps: { type: "string", default: "1" },
    every: { type: "string", default: "20" },
    plan: { type: "string", default: "lina" },
  },
});
if (!["lina", "baseline"].includes(values.plan)) throw new Error("--plan is lina or baseline");
const [images, steps, every] = [values.images, values.steps, values.every].map(Number);

const server = await startServer();
const browser = await launchBrowser();
const page = await browser.newPage();
page.on("pageerror", (e) => console.error(`[page] ${e.message}`));
await page.goto(`${server.base}lina.js`);
await page.evaluate(async () => {
  const { loadModel } = await import("./lina.js");
  // WebGPU even on SwiftShader (where "auto" picks the CPU): the soak watches its allocator.
  window.model = await loadModel({ backend: "webgpu" });
  window.plan = await window.model.linaPlan();
});
const pageHeap = await heapOf(await browser.newBrowserCDPSession(), "page");
const workerHeap = await heapOf(await browser.newBrowserCDPSession(), "worker");

// The JS heap of the page's or the model worker's isolate, after a collection, through the
// DevTools protocol (workers have no performance.memory).
async function heapOf(cdp, type) {
  const { targetInfos } = await cdp.send("Target.getTargets");
  const target = targetInfos.find((t) => t.type === type && t.url.startsWith(server.base));
  const { sessionId } = await cdp.send("Target.attachToTarget", { targetId: target.targetId, flatten: false });
  const replies = new Map();
  let next = 0;
  cdp.on("Target.receivedMessageFromTarget", ({ message }) => {
    const { id, result, error } = JSON.parse(message);
    replies.get(id)?.(result ?? Promise.reject(new Error(error.message)));
  });
  const call = (method) =>
    new Promise((resolve) => {
      const id = ++next;
      replies.set(id, resolve);
      cdp.send("Target.sendMessageToTarget", { sessionId, message: JSON.stringify({ id, method, params: {} }) });
    });
  return async () => {
    await call("HeapProfiler.collectGarbage");
    return (await call("Runtime.getHeapUsage")).usedSize;
  };
}

async function sample(image) {
  const model = await page.evaluate(() => window.model.memoryUsage());
  return {
    image,
    "GPU bytes in use": model.gpu?.bytesInUse ?? null,
    "GPU bytes reserved": model.gpu?.bytesReserved ?? null,
    "wasm memory": model.wasmBytes,
    "worker JS heap": await workerHeap(),
    "page JS heap": await pageHeap(),
  };
}

const baseline = Math.min(PROMPTS.length, images);
const started = performance.now();
const samples = [];
for (let image = 1; image <= images; image++) {
  const options = { prompt: PROMPTS[(image - 1) % PROMPTS.length], seed: image, steps };
  // The image stays in the page: handing it back to the driver would make the driver's own
  // serialisation part of the page heap being measured.
  await page.evaluate(
    async ({ options, lina }) => {
      await window.model.generate(lina ? { ...options, plan: window.plan } : options);
    },
    { options, lina: values.plan === "lina" },
  );
  if ([1, baseline, images].includes(image) || image % every === 0) {
    const s = await sample(image);
    samples.push(s);
    const seconds = ((performance.now() - started) / 1000).toFixed(1);
    console.log(`image ${image} at ${seconds} s: ${JSON.stringify(s)}`);
  }
}
const seconds = (performance.now() - started) / 1000;
const plan = values.plan === "lina" ? "LINA's default plan" : "no interventions";
console.log(`${images} images, ${steps} steps each, ${plan}, ${(seconds / images).toFixed(2)} s per image`);
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
