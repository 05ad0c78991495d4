// The model's own thread. The wasm runtime and its WebGPU device live here, so that loading
// and generating never block the page. Driven by lina.js: requests ({ id, type, ... }) run one
// at a time, in order; only "cancel" is handled at once. Every request ends with a "done" or
// an "error" ({ message, code, name }: structured clone would drop an Error's `code`), unless
// the wasm instance traps: then the worker reports "crashed" once and answers nothing more,
// and lina.js replaces it.
import init, { ModelLoader, Pipeline } from "./pkg/lina.js";

// The diffusers folder layout: files a model must have, and files it may have.
const SHARED = [
  "scheduler/scheduler_config.json",
  "vae/config.json",
  "vae/diffusion_pytorch_model.safetensors",
];
// The denoiser: a UNet (SD 1.x, 2.x, XL), or SD 3's transformer. The text encoder: the first,
// or for the SDXL refiner, which has none, the second alone.
const denoiserFiles = (folder) => [`${folder}/config.json`, `${folder}/diffusion_pytorch_model.safetensors`];
const textFiles = (folder) => [`${folder}/config.json`, `${folder}/model.safetensors`];
const required = (denoiser, text = "text_encoder") => [...SHARED, ...textFiles(text), ...denoiserFiles(denoiser)];
// A tokenizer comes as vocab.json and merges.txt or as one tokenizer.json: the second is
// asked for only where the first two are missing. SDXL has two of each.
const OPTIONAL = [
  "tokenizer/tokenizer_config.json",
  "tokenizer/vocab.json",
  "tokenizer/merges.txt",
  "tokenizer/tokenizer.json",
  // SDXL's and SD 3's second text encoder and its tokenizer.
  "text_encoder_2/config.json",
  "text_encoder_2/model.safetensors",
  "tokenizer_2/tokenizer_config.json",
  "tokenizer_2/vocab.json",
  "tokenizer_2/merges.txt",
  "tokenizer_2/tokenizer.json",
  // SD 3's T5 (text_encoder_3): by URL only its config, so that the runtime says it runs
  // without it; its weights (about 9.5 GB in f16) come with a folder's files, or by URL when
  // the load asks for them (`t5: true`, see T5_FILES).
  "text_encoder_3/config.json",
  "vae_tiny/config.json",
  "vae_tiny/diffusion_pytorch_model.safetensors",
  "lina_predictor.json",
];

// SD 3's T5 weights and tokenizer, fetched by URL only on request: T5-XXL is the largest
// download of the model.
const T5_FILES = ["text_encoder_3/model.safetensors", "tokenizer_3/tokenizer.json", "tokenizer_3/tokenizer_config.json"];

// Where the loader takes a single-file checkpoint (src/single_file/'s CHECKPOINT_FILE).
const CHECKPOINT = "checkpoint.safetensors";

// Beside a single-file checkpoint, a diffusers folder gives its tokenizer and configs (not the
// tiny VAE, whose weights those would be) and, once the checkpoint is in, the weights of the
// components it lacks (`lacking`: a FLUX transformer file's VAE and text encoders).
const besideCheckpoint = (path) => !path.endsWith(".safetensors") && !path.startsWith("vae_tiny/");
const lackedWeights = (lacking) => (path) => isWeights(path) && lacking.some((folder) => path.startsWith(`${folder}/`));

const COMPONENT_FILE = /^((scheduler|text_encoder|text_encoder_2|text_encoder_3|tokenizer|tokenizer_2|tokenizer_3|unet|transformer|vae|vae_tiny)\/[^/]+\.(json|safetensors|txt)|lina_predictor\.json|model_index\.json)$/;

// An Error with one of the API's codes (lina.d.ts), for the failures found on this side.
const failure = (code, message) => Object.assign(new Error(message), { code });

const started = init().catch((error) => {
  // A module that does not compile is no download problem, and retrying will not help.
  const broken = error instanceof WebAssembly.CompileError || error instanceof WebAssembly.LinkError;
  throw failure(broken ? "internal" : "network", `cannot start the wasm module (pkg/lina_bg.wasm): ${error?.message ?? error}`);
});
// Every request awaits it and reports the failure; until one does, it is no unhandled error.
started.catch(() => {});
let pipeline = null;

const reply = (id, type, body = {}, transfer = []) => postMessage({ id, type, ...body }, transfer);

// The running load's abort controller: "cancel" aborts its downloads and stops it between
// chunks.
let loading = null;

const cancelled = (message) => failure("cancelled", message);

// Streams a body (a Blob's or a response's) into the loader chunk by chunk: weight files go
// to the GPU tensor by tensor as their bytes arrive. Resolves to the file's SHA-256 (hex)
// when `digest` is asked for, and to its bytes as text when `keep` is. `length`, where the
// body's exact size is known (a Blob's size, an uncompressed response's Content-Length),
// lets the loader refuse a weight header that claims more than the file holds. A body that
// cannot be read fails with `unreadable`'s code: "network" for a download, "io" for a File.
async function streamInto(loader, path, body, total, progress, { signal, digest = false, keep = false, length, unreadable, from }) {
  loader.beginFile(path, digest, length);
  const reader = body.getReader();
  const kept = [];
  let received = 0;
  try {
    for (;;) {
      if (signal.aborted) throw cancelled("loading cancelled");
      let next;
      try {
        next = await reader.read();
      } catch (error) {
        if (signal.aborted) throw cancelled("loading cancelled");
        throw failure(unreadable, `${path}: reading it failed: ${error?.message ?? error}`);
      }
      const { done, value } = next;
      if (done) break;
      loader.push(value);
      if (keep) kept.push(value);
      received += value.length;
      progress(path, received, total, from);
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

// Streams files from the web into the loader: from the Cache API where it has a current
// copy (except the URLs in `distrust`), from the server otherwise. `take(path, fileUrl, keep)`
// streams one file in at `path` and resolves to null when the server does not have it, to
// its text when `keep` is asked for. `stored()` resolves, once every download is in, to notes
// for the user on files that could not be cached.
function fetcher(loader, { cache, distrust, signal, progress }) {
  const stores = [];
  const take = async (path, fileUrl, keep = false) => {
    const hit = distrust.has(fileUrl) ? null : await cache?.lookup(fileUrl);
    if (hit) {
      const total = Number(hit.response.headers.get("content-length")) || undefined;
      let read;
      try {
        read = await streamInto(loader, path, hit.response.body, total, progress, { signal, digest: true, keep, unreadable: "io", from: "cache" });
      } catch (error) {
        if (signal.aborted || error instanceof WebAssembly.RuntimeError) throw error;
        throw new DamagedEntry(fileUrl, path, error.message);
      }
      if (read.sha256 !== hit.sha256) throw new DamagedEntry(fileUrl, path, "its SHA-256 differs from the stored one");
      return read;
    }
    let response;
    try {
      response = await fetch(fileUrl, { cache: "no-store", signal });
    } catch (error) {
      if (signal.aborted) throw cancelled("loading cancelled");
      throw failure("network", `${path}: cannot download ${fileUrl}: ${error?.message ?? error}`);
    }
    // A dev server that answers a missing file with its HTML page must not pass as one.
    const html = (response.headers.get("content-type") ?? "").includes("text/html");
    if (response.status === 404 || html) return null;
    if (!response.ok) throw failure("network", `${path}: HTTP ${response.status}`);
    const total = Number(response.headers.get("content-length")) || undefined;
    // With a content encoding the Content-Length counts compressed bytes, not the file's.
    const encoding = (response.headers.get("content-encoding") ?? "identity").trim().toLowerCase();
    const length = encoding === "identity" ? total : undefined;
    let digested;
    const sha256 = new Promise((resolve, reject) => (digested = { resolve, reject }));
    sha256.catch(() => {}); // a failed store reports it; an unawaited rejection must not
    if (cache) stores.push(cache.store(fileUrl, response.clone(), sha256).catch((e) => `${path}: ${e.message}`));
    try {
      const read = await streamInto(loader, path, response.body, total, progress, {
        signal,
        digest: !!cache,
        keep,
        length,
        unreadable: "network",
        from: "network",
      });
      digested.resolve(read.sha256);
      return read;
    } catch (error) {
      digested.reject(error);
      throw error;
    }
  };
  const stored = async () => {
    const failed = (await Promise.all(stores)).filter((r) => typeof r === "string");
    return failed.length ? [`not cached for the next visit (${failed[0]})`] : [];
  };
  return { take, stored };
}

// Streams a diffusers folder at `url` into the loader (see `fetcher`); with `single`, only
// the configs and tokenizers a single-file checkpoint lacks; with `lacking`, after the
// checkpoint, only the weights of the components it lacks. Resolves to notes for the user.
async function loadFromUrl(loader, url, { single, lacking, t5, ...options }) {
  const fetched = fetcher(loader, options);
  const take = (path, keep = false) => fetched.take(path, url + path, keep);
  const { signal } = options;
  // A diffusers folder's model_index.json names its components: an optional folder it does
  // not name (vae_tiny/, unless it is listed) is not asked for, since each miss is a 404 in
  // the browser's console. A folder without the index gets every optional file tried.
  const { components, bytes: index } = await componentsOf(url, signal);
  // The runtime reads its settings too (SDXL's force_zeros_for_empty_prompt).
  if (index) loader.addFile("model_index.json", index);
  const found = new Set();
  // SD 3's folders name a transformer where the others have a UNet.
  const text = components && !components.has("text_encoder") && components.has("text_encoder_2") ? "text_encoder_2" : "text_encoder";
  const listed = required(components?.has("transformer") ? "transformer" : "unet", text);
  // After a checkpoint: its lacking components' weights, SD 3's T5 only where asked for.
  const lacked = lacking && lackedWeights(lacking.filter((folder) => t5 || folder !== "text_encoder_3"));
  const needed = lacked ? listed.filter(lacked) : single ? [] : listed;
  const wanted = (path) => {
    const folder = path.includes("/") ? path.slice(0, path.indexOf("/")) : null;
    const named = listed.includes(path) || components === null || folder === null || components.has(folder);
    // tokenizer.json only where vocab.json and merges.txt were not found beside it.
    if (named && path.endsWith("/tokenizer.json")) return !(found.has(`${folder}/vocab.json`) && found.has(`${folder}/merges.txt`));
    return named;
  };
  const fetchOne = async (path) => {
    if (!wanted(path) || (single && !besideCheckpoint(path)) || (lacked && !lacked(path))) return;
    if (await take(path)) {
      found.add(path);
      return;
    }
    // Large weights come in shards, listed by an index beside where the file would be.
    const index = isWeights(path) ? await take(`${path}.index.json`, true) : null;
    if (index) {
      for (const shard of shardsOf(`${url}${path}.index.json`, index.text)) {
        const shardPath = path.slice(0, path.lastIndexOf("/") + 1) + shard;
        if (!(await take(shardPath))) throw failure("missing_file", `${shardPath}: not found at ${url}${shardPath}`);
      }
      return;
    }
    if (needed.includes(path)) throw failure("missing_file", `${path}: not found at ${url}${path}`);
  };
  const notes = await configsFirst([...listed, ...OPTIONAL, ...(t5 ? T5_FILES : [])], (path) => path, fetchOne, () =>
    single || lacked ? [] : requirementNotes(loader, t5),
  );
  return [...notes, ...(await fetched.stored())];
}

const isWeights = (path) => path.endsWith(".safetensors");

// Reads `items` (each with a file path, `pathOf(item)`) through `read`, every config and
// tokenizer before any weights, and between the two asks `between()` for notes: what the
// model needs is known from its configs before its weights are fetched.
async function configsFirst(items, pathOf, read, between) {
  for (const item of items.filter((i) => !isWeights(pathOf(i)))) await read(item);
  const notes = between();
  for (const item of items.filter((i) => isWeights(pathOf(i)))) await read(item);
  return notes;
}

// What the model of the configs in `loader` needs, said before its weights are read: a model
// the adapter cannot run at any size is refused here ("device_limit"), and large weights get
// a note with their size, since WebGPU tells no page how much memory a GPU has.
function requirementNotes(loader, withT5) {
  const { weightBytes } = loader.requirements(withT5);
  const gib = weightBytes / 2 ** 30;
  return gib >= 2 ? [`The model's weights take ${gib.toFixed(2)} GiB of GPU memory; WebGPU cannot tell whether this GPU has that much.`] : [];
}

// Streams a single-file checkpoint (a URL, a File or Blob, or bytes) into the loader.
// Resolves to notes for the user.
async function loadCheckpoint(loader, checkpoint, { signal, progress, ...options }) {
  if (checkpoint instanceof Uint8Array) {
    loader.addFile(CHECKPOINT, checkpoint);
    return [];
  }
  if (checkpoint instanceof Blob) {
    const size = checkpoint.size;
    await streamInto(loader, CHECKPOINT, checkpoint.stream(), size, progress, { signal, length: size, unreadable: "io", from: "file" });
    return [];
  }
  const fetched = fetcher(loader, { signal, progress, ...options });
  if (!(await fetched.take(CHECKPOINT, checkpoint))) throw failure("missing_file", `${CHECKPOINT}: not found at ${checkpoint}`);
  return fetched.stored();
}

// The components a folder's model_index.json names, and its bytes; nulls where it has none
// (or one that does not parse: the files themselves then say what the folder holds).
async function componentsOf(url, signal) {
  const none = { components: null, bytes: null };
  let response;
  try {
    response = await fetch(`${url}model_index.json`, { cache: "no-store", signal });
  } catch (error) {
    if (signal.aborted) throw cancelled("loading cancelled");
    return none;
  }
  const html = (response.headers.get("content-type") ?? "").includes("text/html");
  if (!response.ok || html) return none;
  try {
    const bytes = new Uint8Array(await response.arrayBuffer());
    const index = JSON.parse(new TextDecoder().decode(bytes));
    if (typeof index !== "object" || index === null) return none;
    // A component the folder leaves out is `[null, null]` (the SDXL refiner's text_encoder).
    const present = Object.entries(index).filter(([, v]) => !(Array.isArray(v) && v.every((x) => x === null)));
    return { components: new Set(present.map(([key]) => key)), bytes };
  } catch {
    return none;
  }
}

// The shard files an index names; each must be a plain file name beside the index.
function shardsOf(indexUrl, text) {
  let map;
  try {
    map = JSON.parse(text)?.weight_map;
  } catch (error) {
    throw failure("config", `${indexUrl}: not JSON: ${error.message}`);
  }
  const shards = [...new Set(Object.values(map ?? {}))];
  const bad = shards.find((s) => typeof s !== "string" || !/^[^/\\]+\.safetensors$/.test(s) || s.includes(".."));
  if (bad !== undefined) throw failure("config", `${indexUrl}: the index names ${JSON.stringify(bad)}, not a .safetensors file beside it`);
  return shards.sort();
}

// Streams files the page holds ({ path: Blob | Uint8Array }) into `loader`; with `single` and
// `lacking`, as `loadFromUrl`. Resolves to notes for the user.
async function loadFromFiles(loader, files, { signal, progress, single, lacking }) {
  // Weights may come in shards, named by an index file next to them.
  const denoiser = "transformer/config.json" in files ? "transformer" : "unet";
  const text = !("text_encoder/config.json" in files) && "text_encoder_2/config.json" in files ? "text_encoder_2" : "text_encoder";
  const lacked = lacking && lackedWeights(lacking);
  const missing = (lacked ? required(denoiser, text).filter(lacked) : single ? [] : required(denoiser, text)).filter(
    (path) => !(path in files) && !(path.endsWith(".safetensors") && `${path}.index.json` in files),
  );
  if (missing.length) throw failure("missing_file", `the model's files lack ${missing.join(", ")}`);
  // Only the components' files: a folder may hold other checkpoints, READMEs, images. Configs
  // and tokenizers first, so that what the model needs is known before its weights are read.
  const component = Object.entries(files).filter(
    ([path]) => COMPONENT_FILE.test(path) && (!single || besideCheckpoint(path)) && (!lacked || lacked(path)),
  );
  const withT5 = component.some(([path]) => path.startsWith("text_encoder_3/") && isWeights(path));
  const read = async ([path, data]) => {
    if (signal.aborted) throw cancelled("loading cancelled");
    if (data instanceof Blob) {
      await streamInto(loader, path, data.stream(), data.size, progress, { signal, length: data.size, unreadable: "io", from: "file" });
    } else {
      loader.addFile(path, data);
    }
  };
  return configsFirst(component, ([path]) => path, read, () => (single || lacked ? [] : requirementNotes(loader, withT5)));
}

/**
 * The bytes of a LoRA or an embedding: fetched from its `url` (not cached: such files are
 * small and change often) or read from its `file`. Returns `[name, bytes]`.
 */
async function adapterBytes({ url, file }, signal) {
  if (file instanceof Uint8Array) return ["file", file];
  if (file !== undefined) {
    try {
      return [file.name ?? "file", new Uint8Array(await file.arrayBuffer())];
    } catch (error) {
      throw failure("io", `reading ${file.name ?? "a file"}: ${error.message}`);
    }
  }
  let response;
  try {
    response = await fetch(url, { signal });
  } catch (error) {
    if (signal.aborted) throw cancelled("loading cancelled");
    throw failure("io", `${url}: ${error.message}`);
  }
  if (!response.ok) throw failure("io", `${url}: HTTP ${response.status}`);
  return [url, new Uint8Array(await response.arrayBuffer())];
}

/**
 * The backend for `"auto"`: WebGPU, unless the browser has no adapter or only a software one
 * (SwiftShader, Chromium's fallback): there WebGPU runs about 40 times slower than the
 * CPU backend compiled into the wasm module (docs/bench.md), so the CPU backend is used.
 */
async function chooseBackend(backend, precision) {
  const adapter = await navigator.gpu?.requestAdapter();
  const info = adapter?.info ?? {};
  const softwareAdapter = !adapter || info.isFallbackAdapter || /swiftshader/i.test(`${info.vendor} ${info.architecture} ${info.description}`);
  // Asking for f16 asks for a GPU: the CPU backend computes in f32.
  const chosen = backend !== "auto" || precision === "f16" ? (backend === "auto" ? "webgpu" : backend) : softwareAdapter ? "cpu" : "webgpu";
  // `software`: no GPU does the work (the page says so, and what to do about it).
  const software = chosen === "cpu" || softwareAdapter;
  if (backend !== "auto" || chosen === "webgpu") return { backend: chosen, software, note: null };
  const why = adapter ? "the WebGPU adapter is a software one (SwiftShader)" : "this browser offers no WebGPU adapter";
  return { backend: chosen, software, note: `Running on the CPU: ${why}.` };
}

/**
 * A ControlNet's (or a T2I-Adapter's) files: its folder's by URL, or as given; or an
 * original ControlNet's one file (by URL or as a file), as such a folder's weight file. Held
 * in memory while it is built.
 */
async function controlNetFiles({ url, files, file }) {
  const abort = new AbortController();
  const weights = "diffusion_pytorch_model.safetensors";
  const bytes = {};
  if (file !== undefined || url?.endsWith(".safetensors")) {
    [, bytes[weights]] = await adapterBytes({ url, file }, abort.signal);
  } else if (url !== undefined) {
    for (const name of ["config.json", weights]) {
      [, bytes[name]] = await adapterBytes({ url: new URL(name, url).href }, abort.signal);
    }
  } else {
    for (const [path, data] of Object.entries(files)) [, bytes[path]] = await adapterBytes({ file: data }, abort.signal);
  }
  return bytes;
}

const handlers = {
  // { url } (a folder URL ending in "/") or { files } ({ path: Blob | Uint8Array }), and a
  // single-file `checkpoint` (a URL, a Blob or bytes) for which they give only the tokenizer
  // and configs.
  async load({ id, url, files, checkpoint, t5 = false, precision, kernels, loras = [], embeddings = [], backend: asked = "auto" }) {
    // The old model's buffers go with its device's next failure or with the page; drop it
    // now so that a failed load leaves no half model behind.
    pipeline?.free();
    pipeline = null;
    loading = new AbortController();
    const { signal } = loading;
    const progress = (path, received, total, from) => reply(id, "progress", { path, received, total, from });
    try {
      const cache = url === undefined && typeof checkpoint !== "string" ? null : await ModelCache.open();
      const distrust = new Set();
      const notes = [];
      const { backend, software, note } = await chooseBackend(asked, precision);
      if (note) notes.push(note);
      // LoRA files merge into the weights as they load; embeddings bind once the model is built.
      const loraBytes = [];
      for (const lora of loras) loraBytes.push([...(await adapterBytes(lora, signal)), lora.scale ?? 1]);
      const embeddingBytes = [];
      for (const e of embeddings) embeddingBytes.push([e.trigger, ...(await adapterBytes(e, signal))]);
      for (;;) {
        if (signal.aborted) throw cancelled("loading cancelled");
        const loader = await ModelLoader.create({ backend, precision, kernels });
        try {
          for (const [name, bytes, scale] of loraBytes) loader.addLora(name, bytes, scale);
          const single = checkpoint !== undefined;
          if (url === undefined) notes.push(...(await loadFromFiles(loader, files ?? {}, { signal, progress, single })));
          else notes.push(...(await loadFromUrl(loader, url, { cache, distrust, signal, progress, single, t5 })));
          if (single) {
            notes.push(...(await loadCheckpoint(loader, checkpoint, { cache, distrust, signal, progress })));
            const lacking = loader.checkpointLacks();
            if (lacking.length && url === undefined) notes.push(...(await loadFromFiles(loader, files ?? {}, { signal, progress, lacking })));
            else if (lacking.length) notes.push(...(await loadFromUrl(loader, url, { cache, distrust, signal, progress, lacking, t5 })));
          }
        } catch (error) {
          // A trapped instance must not be called again, not even to free the loader.
          if (error instanceof WebAssembly.RuntimeError) throw error;
          // Its weights are on the GPU: free them now, not when the collector gets to it.
          loader.free();
          if (signal.aborted) throw cancelled("loading cancelled");
          if (!(error instanceof DamagedEntry)) throw error;
          await cache.forget(error.url);
          distrust.add(error.url);
          notes.push(`${error.message}; downloaded again.`);
          continue;
        }
        pipeline = Pipeline.fromLoader(loader);
        try {
          for (const [trigger, name, bytes] of embeddingBytes) pipeline.addEmbedding(trigger, name, bytes);
        } catch (error) {
          if (!(error instanceof WebAssembly.RuntimeError)) pipeline.free();
          pipeline = null;
          throw error;
        }
        notes.push(...pipeline.notes());
        const skippableBlocks = pipeline.skippableBlocks() ?? null;
        const imageCondition = pipeline.imageCondition();
        const takesReferenceImage = pipeline.takesReferenceImage();
        const takesGuidanceRescale = pipeline.takesGuidanceRescale();
        return {
          deviceInfo: { ...pipeline.deviceInfo(), software }, nativeSize: pipeline.nativeSize(), skippableBlocks, imageCondition,
          takesReferenceImage, takesGuidanceRescale, notes,
        };
      }
    } finally {
      loading = null;
    }
  },

  async generate({ id, options, preview }) {
    return model().generate({ ...options, preview }, (step, steps, timestep, image) => {
      reply(id, "step", { step, steps, timestep, preview: image }, image ? [image.rgba.buffer] : []);
      // Let a "cancel" message in between steps.
      return new Promise((resolve) => setTimeout(resolve, 0));
    });
  },

  sweep: ({ options }) => model().sweep(options),
  reinpaint: ({ options, image, node, strength }) => model().reinpaint(options, image, node, strength),
  checkImage: ({ image, csg }) => Pipeline.checkImage(image, csg),
  parsePrompt: ({ prompt }) => Pipeline.parsePrompt(prompt),
  validateCsg: ({ csg }) => Pipeline.validateCsg(csg),
  deriveLayout: ({ csg }) => Pipeline.deriveLayout(csg),
  linaPlan: () => Pipeline.linaPlan(),
  suggestPlan: ({ prompt, csg }) => model().suggestPlan(prompt, csg),
  timesteps: ({ options }) => model().timesteps(options),
  memoryUsage: () => model().memoryUsage(),
  setLoraScales: ({ scales }) => model().setLoraScales(scales),
  setMaxSequenceLength: ({ tokens }) => model().setMaxSequenceLength(tokens),
  removeControlNets: () => model().removeControlNets(),
  loadControlNet: async (source) => model().loadControlNet(await controlNetFiles(source)),
  addControlNet: async (source) => model().addControlNet(await controlNetFiles(source)),
  // A T2I-Adapter's folder files, as a diffusers ControlNet folder's are read.
  loadT2IAdapter: async (source) => model().loadT2IAdapter(await controlNetFiles(source)),
  removeT2IAdapter: () => model().removeT2IAdapter(),
  // For tests of recovery: a lost device, and a trapped wasm instance.
  __loseDeviceForTesting: () => model().__loseDeviceForTesting(),
  __trapForTesting: () => Pipeline.__trapForTesting(),

  // Timed here, next to the device, so that message passing stays out of the figures. One
  // UNet call has no cancel token of its own: a cancel stops the series between calls.
  async benchUnet({ repeat }, request) {
    const times = [];
    for (let i = 0; i <= repeat; i++) {
      if (request.cancelled) throw cancelled("the benchmark was cancelled");
      const start = performance.now();
      await model().benchUnet();
      times.push(performance.now() - start);
    }
    return { warmupMs: times[0], timesMs: times.slice(1) };
  },
};

function model() {
  if (!pipeline) throw failure("no_model", "no model is loaded: load one first");
  return pipeline;
}

// The requests not yet started, in order, and the one running ({ id, cancelled }).
const queue = [];
let running = null;
// Set once the wasm instance has trapped: nothing may call into it again.
let dead = false;

onmessage = ({ data }) => {
  if (dead) return;
  if (data.type === "cancel") cancel(data.id);
  else {
    queue.push(data);
    next();
  }
};

// Cancels request `id` (the running one when no id is given): a queued request is dropped
// unrun; only the running one is stopped, so that aborting one request never stops another.
function cancel(id = running?.id) {
  const at = queue.findIndex((request) => request.id === id);
  if (at >= 0) {
    queue.splice(at, 1);
    reply(id, "error", { error: serialised(cancelled("cancelled before it started")) });
  } else if (running && running.id === id) {
    running.cancelled = true;
    loading?.abort();
    pipeline?.cancel();
  }
}

async function next() {
  if (running || dead || !queue.length) return;
  const request = queue.shift();
  running = { id: request.id, cancelled: false };
  try {
    await started;
    // A cancel that came while the wasm module was starting: the pipeline's own token,
    // which `cancel` set, is replaced by the call about to start.
    if (running.cancelled) throw cancelled("cancelled before it started");
    const handler = handlers[request.type];
    if (!handler) throw failure("invalid_input", `unknown request "${request.type}"`);
    const result = await handler(request, running);
    // Images move to the page without a copy.
    const transfer = result?.rgba instanceof Uint8ClampedArray ? [result.rgba.buffer] : [];
    // A generation's attention maps (one Float32Array per step) move rather than copy.
    for (const step of result?.attention?.steps ?? []) transfer.push(step.buffer);
    reply(request.id, "done", { result }, transfer);
  } catch (error) {
    if (error instanceof WebAssembly.RuntimeError) return crashed(error);
    reply(request.id, "error", { error: serialised(error) });
  } finally {
    running = null;
  }
  next();
}

// An error as plain fields. The wasm's errors and this file's carry a `code`; anything else is
// a bug here (a DOMException's numeric legacy `code` is no code of ours).
function serialised(error) {
  const code = typeof error?.code === "string" ? error.code : "internal";
  return { message: error?.message ?? String(error), code, name: error?.name ?? "Error" };
}

// A trap (a Rust panic, an exhausted memory) leaves the instance's memory as it was mid-call:
// no request may run on it again. lina.js replaces this worker on the first report.
function crashed(error) {
  if (dead) return;
  dead = true;
  queue.length = 0;
  postMessage({ type: "crashed", message: `${error.name}: ${error.message}` });
}

// A trap inside an async wasm call surfaces outside every request's promise: in the task that
// polled it.
addEventListener("error", (event) => {
  if (event.error instanceof WebAssembly.RuntimeError) crashed(event.error);
});
addEventListener("unhandledrejection", (event) => {
  if (event.reason instanceof WebAssembly.RuntimeError) crashed(event.reason);
});
// A request that could not be read would never be answered: give up the whole worker rather
// than leave its caller waiting.
onmessageerror = () => crashed(new Error("a request could not be read"));
