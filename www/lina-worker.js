// The model's own thread. The wasm runtime and its WebGPU device live here, so that loading
// and generating never block the page. Driven by lina.js: requests run one at a time, in
// order; only "cancel" is handled at once. Every request ends with a "done" or an "error".
import init, { ModelLoader, Pipeline } from "./pkg/lina.js";

// The diffusers folder layout: files a model must have, and files it may have.
const REQUIRED = [
  "scheduler/scheduler_config.json",
  "text_encoder/config.json",
  "text_encoder/model.safetensors",
  "unet/config.json",
  "unet/diffusion_pytorch_model.safetensors",
  "vae/config.json",
  "vae/diffusion_pytorch_model.safetensors",
];
const OPTIONAL = [
  "tokenizer/tokenizer.json",
  "tokenizer/tokenizer_config.json",
  "tokenizer/vocab.json",
  "tokenizer/merges.txt",
  "vae_tiny/config.json",
  "vae_tiny/diffusion_pytorch_model.safetensors",
];

const COMPONENT_FILE = /^(scheduler|text_encoder|tokenizer|unet|vae|vae_tiny)\/[^/]+\.(json|safetensors|txt)$/;

const started = init();
let pipeline = null;

const reply = (id, type, body = {}, transfer = []) => postMessage({ id, type, ...body }, transfer);

// Streams a body (a Blob's or a response's) into the loader chunk by chunk: weight files go
// to the GPU tensor by tensor as their bytes arrive.
async function streamInto(loader, path, body, total, progress) {
  loader.beginFile(path);
  const reader = body.getReader();
  let received = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    loader.push(value);
    received += value.length;
    progress(path, received, total);
  }
  loader.endFile();
}

// Model files are kept in the Cache API, so that a second visit downloads nothing. A cached
// file is used while the server reports the same size and modification time for it (one HEAD
// request, no body), or when the server cannot be reached. An entry appears only once its
// whole body is stored (Cache.put is atomic), so a download cut short is never used later.
const CACHE = "lina-models-v1";

async function openCache() {
  try {
    return self.caches ? await caches.open(CACHE) : null;
  } catch {
    return null; // storage disabled (private mode, insecure origin): download every time
  }
}

async function stillCurrent(url, cached) {
  try {
    const head = await fetch(url, { method: "HEAD", cache: "no-store" });
    if (!head.ok) return false;
    const same = (name) => head.headers.get(name) === cached.headers.get(name);
    return same("content-length") && same("last-modified") && same("etag");
  } catch {
    return true; // offline: the cached copy is all there is
  }
}

// A model file's response, from the cache when current; `stored` settles when a fresh
// download is in the cache (or failed to get there, quota exceeded say: the model still
// loads from the download).
async function modelFile(cache, url) {
  const cached = await cache?.match(url);
  if (cached && (await stillCurrent(url, cached))) return { response: cached, stored: null };
  const response = await fetch(url, { cache: "no-store" });
  const isFile = response.ok && !(response.headers.get("content-type") ?? "").includes("text/html");
  const stored = cache && isFile ? cache.put(url, response.clone()) : null;
  return { response, stored };
}

// The shard files an index names (read again from the cache, where it was just stored, or
// from the server); each must be a plain file name beside the index.
async function shardsOf(cache, indexUrl) {
  const response = (await cache?.match(indexUrl)) ?? (await fetch(indexUrl));
  const { weight_map: map } = await response.json();
  const shards = [...new Set(Object.values(map ?? {}))];
  const bad = shards.find((s) => typeof s !== "string" || !/^[^/\\]+\.safetensors$/.test(s) || s.includes(".."));
  if (bad !== undefined) throw new Error(`${indexUrl}: the index names ${JSON.stringify(bad)}, not a .safetensors file beside it`);
  return shards.sort();
}

const handlers = {
  // { url } (a folder URL ending in "/") or { files } ({ path: Blob | Uint8Array }).
  async load({ id, url, files, precision }) {
    // The old model's buffers go with its device's next failure or with the page; drop it
    // now so that a failed load leaves no half model behind.
    pipeline?.free();
    pipeline = null;
    const loader = await ModelLoader.create({ precision });
    const progress = (path, received, total) => reply(id, "progress", { path, received, total });
    const notes = [];
    if (url !== undefined) {
      const cache = await openCache();
      const stores = [];
      // Streams one file in; false when the server does not have it.
      const take = async (path) => {
        const { response, stored } = await modelFile(cache, url + path);
        // A dev server that answers a missing file with its HTML page must not pass as one.
        const html = (response.headers.get("content-type") ?? "").includes("text/html");
        if (response.status === 404 || html) return false;
        if (!response.ok) throw new Error(`${path}: HTTP ${response.status}`);
        const total = Number(response.headers.get("content-length")) || undefined;
        await streamInto(loader, path, response.body, total, progress);
        if (stored) stores.push(stored.catch((e) => `${path}: ${e.message}`));
        return true;
      };
      for (const path of [...REQUIRED, ...OPTIONAL]) {
        if (await take(path)) continue;
        // Large weights come in shards, listed by an index beside where the file would be.
        if (path.endsWith(".safetensors") && (await take(`${path}.index.json`))) {
          for (const shard of await shardsOf(cache, url + path + ".index.json")) {
            const shardPath = path.slice(0, path.lastIndexOf("/") + 1) + shard;
            if (!(await take(shardPath))) throw new Error(`${shardPath}: not found at ${url}${shardPath}`);
          }
          continue;
        }
        if (REQUIRED.includes(path)) throw new Error(`${path}: not found at ${url}${path}`);
      }
      const failed = (await Promise.all(stores)).filter((r) => typeof r === "string");
      if (failed.length) notes.push(`not cached for the next visit (${failed[0]})`);
    } else {
      // Weights may come in shards, named by an index file next to them.
      const missing = REQUIRED.filter(
        (path) => !(path in files) && !(path.endsWith(".safetensors") && `${path}.index.json` in files),
      );
      if (missing.length) throw new Error(`the model's files lack ${missing.join(", ")}`);
      // Only the components' files: a folder may hold other checkpoints, READMEs, images.
      const wanted = Object.entries(files).filter(([path]) => COMPONENT_FILE.test(path));
      for (const [path, data] of wanted) {
        if (data instanceof Blob) await streamInto(loader, path, data.stream(), data.size, progress);
        else loader.addFile(path, data);
      }
    }
    pipeline = Pipeline.fromLoader(loader);
    return { deviceInfo: pipeline.deviceInfo(), nativeSize: pipeline.nativeSize(), notes };
  },

  async generate({ id, options, previews }) {
    const result = await model().generate({ ...options, preview: previews }, (step, steps, timestep, preview) => {
      reply(id, "step", { step, steps, timestep, preview }, preview ? [preview.rgba.buffer] : []);
      // Let a "cancel" message in between steps.
      return new Promise((resolve) => setTimeout(resolve, 0));
    });
    return result;
  },

  sweep: ({ options }) => model().sweep(options),
  reinpaint: ({ options, image, node, strength }) => model().reinpaint(options, image, node, strength),
  checkImage: ({ image, csg }) => Pipeline.checkImage(image, csg),
  parsePrompt: ({ prompt }) => Pipeline.parsePrompt(prompt),
  validateCsg: ({ csg }) => Pipeline.validateCsg(csg),
  linaPlan: () => Pipeline.linaPlan(),
  timesteps: ({ options }) => model().timesteps(options),
  loseDeviceForTesting: () => model().loseDeviceForTesting(),
};

function model() {
  if (!pipeline) throw new Error("no model is loaded");
  return pipeline;
}

let queue = Promise.resolve();

onmessage = ({ data }) => {
  if (data.type === "cancel") {
    pipeline?.cancel();
    return;
  }
  queue = queue.then(async () => {
    try {
      await started;
      const handler = handlers[data.type];
      if (!handler) throw new Error(`unknown request "${data.type}"`);
      const result = await handler(data);
      // Images move to the page without a copy.
      const transfer = result?.rgba instanceof Uint8ClampedArray ? [result.rgba.buffer] : [];
      reply(data.id, "done", { result }, transfer);
    } catch (error) {
      reply(data.id, "error", { message: error?.message ?? String(error) });
    }
  });
};
