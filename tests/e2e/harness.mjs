// What the end-to-end tests and the soak script share: a static server for www/ and for
// model folders the tests make, and headless Chromium with WebGPU on SwiftShader.
import { createServer } from "node:http";
import { readFile, stat } from "node:fs/promises";
import { extname, join, normalize } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

export const WWW = fileURLToPath(new URL("../../www/", import.meta.url));

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
      const body = await readFile(file);
      const { mtime } = await stat(file);
      response.writeHead(200, {
        "content-type": TYPES[extname(file)] ?? "application/octet-stream",
        "content-length": body.length,
        "last-modified": mtime.toUTCString(),
      });
      if (request.method === "HEAD") return response.end();
      if (!slow) return response.end(body);
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

/** Debian's Chromium (or $CHROMIUM), headless, with WebGPU on SwiftShader. */
export function launchBrowser(args = []) {
  return chromium.launch({
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
      ...args,
    ],
  });
}
