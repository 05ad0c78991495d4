// What the end-to-end tests and the soak script share: a static server for www/ and for
// model folders the tests make, and headless Chromium with WebGPU on SwiftShader.
import { createReadStream } from "node:fs";
import { createServer } from "node:http";
import { pipeline } from "node:stream/promises";
import { readFile, readdir, stat } from "node:fs/promises";
import { extname, join, normalize } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

export const WWW = fileURLToPath(new URL("../../www/", import.meta.url));
export const FIXTURES = fileURLToPath(new URL("../fixtures", import.meta.url));

const TYPES = {
  ".html": "text/html",
  ".js": "text/javascript",
  ".mjs": "text/javascript",
  ".css": "text/css",
  ".json": "application/json",
  ".wasm": "application/wasm",
  ".png": "image/png",
};

/**
 * Serves www/ on 127.0.0.1, and `extra` (a folder) at /extra/; `mounts` maps more URL
 * prefixes ("/ort/") to folders. Under /slow/ the same files come at about 1 MB/s, for
 * cancelling a download midway. `requests` lists every request as "METHOD /path STATUS", the
 * status "aborted" where the client went away first.
 */
export async function startServer({ extra, mounts = {} } = {}) {
  const roots = Object.entries({ ...mounts, ...(extra ? { "/extra/": extra } : {}) });
  const requests = [];
  const server = createServer(async (request, response) => {
    const requested = normalize(decodeURIComponent(new URL(request.url, "http://x").pathname));
    response.on("close", () =>
      requests.push(`${request.method} ${requested} ${response.writableFinished ? response.statusCode : "aborted"}`),
    );
    const slow = requested.startsWith("/slow/");
    const path = slow ? requested.slice(5) : requested;
    const mount = roots.find(([prefix]) => path.startsWith(prefix));
    const [root, rest] = mount ? [`${mount[1]}/`, path.slice(mount[0].length)] : [WWW, path];
    const file = join(root, rest.endsWith("/") ? `${rest}index.html` : rest);
    if (!file.startsWith(root)) return response.writeHead(403).end();
    try {
      const info = await stat(file);
      if (!info.isFile()) throw new Error("not a file");
      response.writeHead(200, {
        "content-type": TYPES[extname(file)] ?? "application/octet-stream",
        "content-length": info.size,
        "last-modified": info.mtime.toUTCString(),
      });
      if (request.method === "HEAD") return response.end();
      // Streamed: full-size weights pass Node's 2 GiB limit on reading a file whole.
      if (!slow) return await pipeline(createReadStream(file), response).catch(() => {});
      const body = await readFile(file);
      for (let at = 0; at < body.length && !response.destroyed; at += 65536) {
        response.write(body.subarray(at, at + 65536));
        await new Promise((resolve) => setTimeout(resolve, 60));
      }
      response.end();
    } catch {
      response.writeHead(404).end();
    }
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  return { base: `http://127.0.0.1:${server.address().port}/`, requests, close: () => server.close() };
}

// SwiftShader runs WebGPU on the CPU: loading and a few steps of the 64x64 model take tens of
// seconds.
export const SLOW = 240_000;

/** The embedded default model's files, as a diffusers folder lists them (page tests that
 * hand the model over as `files` fetch these). */
export const DEFAULT_MODEL_FILES = [
  "scheduler/scheduler_config.json",
  "text_encoder/config.json",
  "text_encoder/model.safetensors",
  "tokenizer/vocab.json",
  "tokenizer/merges.txt",
  "tokenizer/tokenizer_config.json",
  "unet/config.json",
  "unet/diffusion_pytorch_model.safetensors",
  "vae/config.json",
  "vae/diffusion_pytorch_model.safetensors",
];

/**
 * A new tab at `url`, its console errors and uncaught exceptions echoed to the test's output.
 * `init`, a function, runs in the page before any of its own scripts.
 */
export async function openPage(browser, url, { init } = {}) {
  const page = await browser.newPage();
  page.on("console", (m) => m.type() === "error" && console.error(`[page] ${m.text()}`));
  page.on("pageerror", (e) => console.error(`[page] ${e.message}`));
  if (init) await page.addInitScript(init);
  await page.goto(url);
  return page;
}

/** The text of the page's #status line. */
export const statusText = (page) => page.locator("#status").textContent();

/** Waits until #status matches `pattern`; resolves to its text. */
export async function waitForStatus(page, pattern) {
  try {
    await page.waitForFunction(
      (source) => new RegExp(source).test(document.getElementById("status").textContent),
      pattern.source,
      { timeout: SLOW, polling: 250 },
    );
  } catch (e) {
    // Say what the page showed instead: a timeout alone does not tell a stall from an error.
    throw new Error(`status never matched ${pattern}; it reads "${await statusText(page)}": ${e.message}`);
  }
  return statusText(page);
}

/** Distinct colours in a canvas: a blank or single-colour canvas means nothing was drawn. */
export const canvasColours = (page, selector) =>
  page.evaluate((selector) => {
    const canvas = document.querySelector(selector);
    const { data } = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height);
    const seen = new Set();
    for (let i = 0; i < data.length; i += 4) seen.add((data[i] << 16) | (data[i + 1] << 8) | data[i + 2]);
    return seen.size;
  }, selector);

/** How the tests launch Debian's Chromium (or $CHROMIUM): headless, WebGPU on SwiftShader. */
const BROWSER_OPTIONS = {
  executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
  ignoreDefaultArgs: ["--disable-gpu"],
  args: [
    "--enable-unsafe-webgpu",
    "--enable-unsafe-swiftshader",
    "--no-sandbox",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
    "--no-default-browser-check",
  ],
};

/** Debian's Chromium (or $CHROMIUM), headless, with WebGPU on SwiftShader. */
export function launchBrowser(args = []) {
  return chromium.launch({ ...BROWSER_OPTIONS, args: [...BROWSER_OPTIONS.args, ...args] });
}

/**
 * The same browser with a profile on disk at `dir` (a user's browser, whose Cache API
 * outlives a visit): resolves to its one context.
 */
export function launchWithProfile(dir) {
  return chromium.launchPersistentContext(dir, BROWSER_OPTIONS);
}

/**
 * A tiny fixture (tests/fixtures/`model`) as a single-file checkpoint in the original LDM
 * layout: its diffusers folder's tensors under the names tests/fixtures/single_file/`model`.json
 * lists (checked against diffusers' converters by tools/make_single_file.py), with the extra
 * tensors such files carry as zeros. As tests/single_file.rs builds it natively.
 */
export async function singleFileCheckpoint(model, keep = () => true) {
  const map = JSON.parse(await readFile(join(FIXTURES, "single_file", `${model}.json`), "utf8"));
  map.tensors = map.tensors.filter(([name]) => keep(name));
  const components = {};
  const used = new Set(map.tensors.map(([, component]) => component));
  for (const component of used) {
    // A model of one component (a ControlNet) keeps its weights at its folder's root.
    const own = join(FIXTURES, model, component);
    const folder = (await readdir(join(FIXTURES, model))).includes(component) ? own : join(FIXTURES, model);
    const file = (await readdir(folder)).find((f) => f.endsWith(".safetensors"));
    const bytes = await readFile(join(folder, file));
    const headerLength = Number(bytes.readBigUInt64LE(0));
    const header = JSON.parse(bytes.subarray(8, 8 + headerLength).toString("utf8"));
    components[component] = { header, data: bytes.subarray(8 + headerLength) };
  }
  const tensors = [];
  for (const [ldm, component, names, how] of map.tensors) {
    const { header, data } = components[component];
    const parts = names.map((name) => header[name]);
    let shape = [...parts[0].shape];
    shape[0] = parts.reduce((rows, p) => rows + p.shape[0], 0);
    // The original VAE's attention projections are 1x1 convolutions.
    if (ldm.includes("mid.attn_1.") && ldm.endsWith("weight") && shape.length === 2) shape.push(1, 1);
    let bytes = Buffer.concat(parts.map((p) => data.subarray(...p.data_offsets)));
    // OpenCLIP stores its projection the other way round.
    if (how === "transposed") {
      const [rows, cols] = shape;
      const size = bytes.length / (rows * cols);
      const out = Buffer.alloc(bytes.length);
      for (let r = 0; r < rows; r++) {
        for (let c = 0; c < cols; c++) bytes.copy(out, (c * rows + r) * size, (r * cols + c) * size, (r * cols + c + 1) * size);
      }
      bytes = out;
      shape = [cols, rows];
    }
    // SD 3's and FLUX's final adaLN projections yield shift before scale.
    if (how === "swapped") bytes = Buffer.concat([bytes.subarray(bytes.length / 2), bytes.subarray(0, bytes.length / 2)]);
    tensors.push([ldm, parts[0].dtype, shape, bytes]);
  }
  for (const [name, shape] of Object.entries(map.extras)) {
    tensors.push([name, "F32", shape, Buffer.alloc(shape.reduce((n, d) => n * d, 1) * 4)]);
  }
  const meta = {};
  let offset = 0;
  for (const [name, dtype, shape, bytes] of tensors) {
    meta[name] = { dtype, shape, data_offsets: [offset, offset + bytes.length] };
    offset += bytes.length;
  }
  const json = Buffer.from(JSON.stringify(meta));
  const length = Buffer.alloc(8);
  length.writeBigUInt64LE(BigInt(json.length));
  return Buffer.concat([length, json, ...tensors.map((t) => t[3])]);
}
