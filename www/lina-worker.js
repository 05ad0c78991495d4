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
  "lina_predictor.json",
];

const COMPONENT_FILE = /^((scheduler|text_encoder|tokenizer|unet|vae|vae_tiny)\/[^/]+\.(json|safetensors|txt)|lina_predictor\.json)$/;

const started = init();
let pipeline = null;

const reply = (id, type, body = {}, transfer = []) => postMessage({ id, type, ...body }, transfer);

// The running load's abort controller: "cancel" aborts its downloads and stops it between
// chunks.
let loading = null;

// Streams a body (a Blob's or a response's) into the loader chunk by chunk: weight files go
// to the GPU tensor by tensor as their bytes arrive. Resolves to the file's SHA-256 (hex)
// when `digest` is asked for, and to its bytes as text when `keep` is.
async function streamInto(loader, path, body, total, progress, { signal, digest = false, keep = false }) {
  loader.beginFile(path, digest);
  const reader = body.getReader();
  const kept = [];
  let received = 0;
  try {
    for (;;) {
      if (signal.aborted) throw new Error("cancelled");
      const { done, value } = await reader.read();
      if (done) break;
      loader.push(value);
      if (keep) kept.push(value);
      received += value.length;
      progress(path, received, total);
    }
  } catch (error) {
    reader.cancel().catch(() => {});
    throw error;
  }
  const sha256 = loader.endFile();
  return { sha256, text: keep ? new TextDecoder().decode(await new Blob(kept).arrayBuffer()) : null };
}

// Model files are kept in the Cache API, so that a second visit downloads nothing, each with
// its SHA-256 in a second cache. A cached file is used while the server reports the same size
// and modification time for it (one HEAD request, no body), or when the server cannot be
// reached; and only if it hashes, as it streams into the loader, to the digest stored with it.
// The digest is written after the file's entry is whole, so a store cut short (quota exceeded,
// a closed tab) leaves a file without a digest, which is never used; a damaged entry is
// dropped and the file downloaded again.
class ModelCache {
  static async open() {
    try {
      if (!self.caches) return null;
      return new ModelCache(await caches.open("lina-models-v1"), await caches.open("lina-digests-v1"));
    } catch {
      return null; // storage disabled (private mode, insecure origin): download every time
    }
  }

  constructor(files, digests) {
    this.files = files;
    this.digests = digests;
  }

  // `{ response, sha256 }` for a usable entry, or null.
  async lookup(url) {
    const [cached, digest] = await Promise.all([this.files.match(url), this.digests.match(url)]);
    if (!cached || !digest || !(await stillCurrent(url, cached))) return null;
    return { response: cached, sha256: await digest.text() };
  }

  // Stores a download; `sha256` settles with its digest once the loader has read it all.
  async store(url, response, sha256) {
    await this.digests.delete(url);
    await this.files.put(url, response);
    try {
      await this.digests.put(url, new Response(await sha256));
    } catch (error) {
      await this.files.delete(url).catch(() => {});
      throw error;
    }
  }

  forget(url) {
    return Promise.all([this.files.delete(url), this.digests.delete(url)]);
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

// A cached file that failed to load or to match its digest: the load starts again without it.
class DamagedEntry extends Error {
  constructor(url, path, reason) {
    super(`${path}: the cached copy is damaged (${reason})`);
    this.url = url;
  }
}

// Streams a diffusers folder at `url` into `loader`: from the cache where it holds a current
// copy (except the URLs in `distrust`), from the server otherwise. Resolves to notes for the
// user.
async function loadFromUrl(loader, url, { cache, distrust, signal, progress }) {
  const stores = [];
  // Streams one file in; null when the server does not have it, the file's text if `keep`.
  const take = async (path, keep = false) => {
    const fileUrl = url + path;
    const hit = distrust.has(fileUrl) ? null : await cache?.lookup(fileUrl);
    if (hit) {
      const total = Number(hit.response.headers.get("content-length")) || undefined;
      let read;
      try {
        read = await streamInto(loader, path, hit.response.body, total, progress, { signal, digest: true, keep });
      } catch (error) {
        if (signal.aborted) throw error;
        throw new DamagedEntry(fileUrl, path, error.message);
      }
      if (read.sha256 !== hit.sha256) throw new DamagedEntry(fileUrl, path, "its SHA-256 differs from the stored one");
      return read;
    }
    const response = await fetch(fileUrl, { cache: "no-store", signal });
    // A dev server that answers a missing file with its HTML page must not pass as one.
    const html = (response.headers.get("content-type") ?? "").includes("text/html");
    if (response.status === 404 || html) return null;
    if (!response.ok) throw new Error(`${path}: HTTP ${response.status}`);
    const total = Number(response.headers.get("content-length")) || undefined;
    let digested;
    const sha256 = new Promise((resolve, reject) => (digested = { resolve, reject }));
    sha256.catch(() => {}); // a failed store reports it; an unawaited rejection must not
    if (cache) stores.push(cache.store(fileUrl, response.clone(), sha256).catch((e) => `${path}: ${e.message}`));
    try {
      const read = await streamInto(loader, path, response.body, total, progress, { signal, digest: !!cache, keep });
      digested.resolve(read.sha256);
      return read;
    } catch (error) {
      digested.reject(error);
      throw error;
    }
  };
  for (const path of [...REQUIRED, ...OPTIONAL]) {
    if (await take(path)) continue;
    // Large weights come in shards, listed by an index beside where the file would be.
    const index = path.endsWith(".safetensors") ? await take(`${path}.index.json`, true) : null;
    if (index) {
      for (const shard of shardsOf(`${url}${path}.index.json`, index.text)) {
        const shardPath = path.slice(0, path.lastIndexOf("/") + 1) + shard;
        if (!(await take(shardPath))) throw new Error(`${shardPath}: not found at ${url}${shardPath}`);
      }
      continue;
    }
    if (REQUIRED.includes(path)) throw new Error(`${path}: not found at ${url}${path}`);
  }
  const failed = (await Promise.all(stores)).filter((r) => typeof r === "string");
  return failed.length ? [`not cached for the next visit (${failed[0]})`] : [];
}

// The shard files an index names; each must be a plain file name beside the index.
function shardsOf(indexUrl, text) {
  const { weight_map: map } = JSON.parse(text);
  const shards = [...new Set(Object.values(map ?? {}))];
  const bad = shards.find((s) => typeof s !== "string" || !/^[^/\\]+\.safetensors$/.test(s) || s.includes(".."));
  if (bad !== undefined) throw new Error(`${indexUrl}: the index names ${JSON.stringify(bad)}, not a .safetensors file beside it`);
  return shards.sort();
}

// Streams files the page holds ({ path: Blob | Uint8Array }) into `loader`.
async function loadFromFiles(loader, files, { signal, progress }) {
  // Weights may come in shards, named by an index file next to them.
  const missing = REQUIRED.filter(
    (path) => !(path in files) && !(path.endsWith(".safetensors") && `${path}.index.json` in files),
  );
  if (missing.length) throw new Error(`the model's files lack ${missing.join(", ")}`);
  // Only the components' files: a folder may hold other checkpoints, READMEs, images.
  const wanted = Object.entries(files).filter(([path]) => COMPONENT_FILE.test(path));
  for (const [path, data] of wanted) {
    if (signal.aborted) throw new Error("cancelled");
    if (data instanceof Blob) await streamInto(loader, path, data.stream(), data.size, progress, { signal });
    else loader.addFile(path, data);
  }
}

/**
 * The backend for `"auto"`: WebGPU, unless the browser has no adapter or only a software one
 * (SwiftShader, Chromium's fallback): there WebGPU runs about 40 times slower than the
 * CPU backend compiled into the wasm module (docs/bench.md), so the CPU backend is used.
 */
async function chooseBackend(backend, precision) {
  // Asking for f16 asks for a GPU: the CPU backend computes in f32.
  if (backend !== "auto" || precision === "f16") return { backend: backend === "auto" ? "webgpu" : backend, note: null };
  const adapter = await navigator.gpu?.requestAdapter();
  const info = adapter?.info ?? {};
  const software = info.isFallbackAdapter || /swiftshader/i.test(`${info.vendor} ${info.architecture} ${info.description}`);
  if (adapter && !software) return { backend: "webgpu", note: null };
  const why = adapter ? "the WebGPU adapter is a software one (SwiftShader)" : "this browser offers no WebGPU adapter";
  return { backend: "cpu", note: `Running on the CPU: ${why}.` };
}

const handlers = {
  // { url } (a folder URL ending in "/") or { files } ({ path: Blob | Uint8Array }).
  async load({ id, url, files, precision, kernels, backend: asked = "auto" }) {
    // The old model's buffers go with its device's next failure or with the page; drop it
    // now so that a failed load leaves no half model behind.
    pipeline?.free();
    pipeline = null;
    loading = new AbortController();
    const { signal } = loading;
    const progress = (path, received, total) => reply(id, "progress", { path, received, total });
    const cache = url === undefined ? null : await ModelCache.open();
    const distrust = new Set();
    const notes = [];
    const { backend, note } = await chooseBackend(asked, precision);
    if (note) notes.push(note);
    try {
      for (;;) {
        const loader = await ModelLoader.create({ backend, precision, kernels });
        try {
          if (url === undefined) await loadFromFiles(loader, files, { signal, progress });
          else notes.push(...(await loadFromUrl(loader, url, { cache, distrust, signal, progress })));
        } catch (error) {
          // Its weights are on the GPU: free them now, not when the collector gets to it.
          loader.free();
          if (signal.aborted) throw new Error("cancelled");
          if (!(error instanceof DamagedEntry)) throw error;
          await cache.forget(error.url);
          distrust.add(error.url);
          notes.push(`${error.message}; downloaded again.`);
          continue;
        }
        pipeline = Pipeline.fromLoader(loader);
        notes.push(...pipeline.notes());
        return { deviceInfo: pipeline.deviceInfo(), nativeSize: pipeline.nativeSize(), notes };
      }
    } finally {
      loading = null;
    }
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
  suggestPlan: ({ prompt, csg }) => model().suggestPlan(prompt, csg),
  timesteps: ({ options }) => model().timesteps(options),
  loseDeviceForTesting: () => model().loseDeviceForTesting(),
  memoryUsage: () => model().memoryUsage(),

  // Timed here, next to the device, so that message passing stays out of the figures.
  async benchUnet({ repeat }) {
    const times = [];
    for (let i = 0; i <= repeat; i++) {
      const start = performance.now();
      await model().benchUnet();
      times.push(performance.now() - start);
    }
    return { warmupMs: times[0], timesMs: times.slice(1) };
  },
};

function model() {
  if (!pipeline) throw new Error("no model is loaded");
  return pipeline;
}

let queue = Promise.resolve();

onmessage = ({ data }) => {
  if (data.type === "cancel") {
    loading?.abort();
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
