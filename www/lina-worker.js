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

// Streams one local file (a File or Blob) into the loader chunk by chunk.
async function streamBlob(loader, path, blob, progress) {
  loader.beginFile(path);
  const reader = blob.stream().getReader();
  let received = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    loader.push(value);
    received += value.length;
    progress(path, received, blob.size);
  }
  loader.endFile();
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
    if (url !== undefined) {
      for (const path of [...REQUIRED, ...OPTIONAL]) {
        const found = await loader.fetch(path, url + path, (received, total) =>
          progress(path, received, total),
        );
        if (!found && REQUIRED.includes(path)) {
          throw new Error(`${path}: not found at ${url}${path}`);
        }
      }
    } else {
      // Weights may come in shards, named by an index file next to them.
      const missing = REQUIRED.filter(
        (path) => !(path in files) && !(path.endsWith(".safetensors") && `${path}.index.json` in files),
      );
      if (missing.length) throw new Error(`the model's files lack ${missing.join(", ")}`);
      // Only the components' files: a folder may hold other checkpoints, READMEs, images.
      const wanted = Object.entries(files).filter(([path]) => COMPONENT_FILE.test(path));
      for (const [path, data] of wanted) {
        if (data instanceof Blob) await streamBlob(loader, path, data, progress);
        else loader.addFile(path, data);
      }
    }
    pipeline = Pipeline.fromLoader(loader);
    return { deviceInfo: pipeline.deviceInfo(), nativeSize: pipeline.nativeSize() };
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
