// Load times of a model in the browser, for docs/models.md's memory and time table: the time
// from `load` to a loaded model in a fresh profile (every file downloaded, from this machine's
// loopback, then kept in the Cache API) and in the same profile again (every file from the
// Cache API, checked against its SHA-256). Headless Chromium, as tests/e2e runs it (WebGPU on
// SwiftShader here: the adapter is printed). The weights' upload to the device is part of
// both figures.
//
//   node tests/bench/load.mjs --model DIR [--backend webgpu|cpu] [--precision f32|f16] [--visits 2]
//
// DIR is a diffusers folder, such as one tools/make_full_size.py makes. Needs www/pkg
// (scripts/build-web.sh) and `npm ci` in tests/e2e.
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { launchWithProfile, startServer } from "../e2e/harness.mjs";

const { values } = parseArgs({
  options: {
    model: { type: "string" },
    backend: { type: "string", default: "webgpu" },
    precision: { type: "string", default: "auto" },
    visits: { type: "string", default: "2" },
  },
});
if (!values.model) throw new Error("--model DIR: a diffusers folder");

const server = await startServer({ mounts: { "/model/": values.model } });
// One profile on disk for every visit, as a user's browser has it: the first fills its Cache
// API, the others read from it. (A context without a profile keeps its storage in memory,
// where a few GB of weights do not fit.)
const profile = await mkdtemp(join(tmpdir(), "lina-load-"));
const context = await launchWithProfile(profile);
try {
  for (let visit = 0; visit < Number(values.visits); visit++) {
    const page = await context.newPage();
    page.on("pageerror", (e) => console.error(`[page] ${e.message}`));
    await page.goto(`${server.base}lina.js`);
    const before = server.requests.length;
    const out = await page.evaluate(
      async ({ backend, precision }) => {
        const { LinaModel } = await import("./lina.js");
        const model = new LinaModel();
        const from = {};
        const started = performance.now();
        try {
          const info = await model.load({
            url: "/model/",
            backend,
            precision,
            onProgress: (p) => {
              from[p.path] = p.from;
            },
          });
          return { ms: performance.now() - started, device: info.deviceInfo, notes: info.notes, from };
        } catch (e) {
          return { error: `${e.code}: ${e.message}` };
        } finally {
          model.dispose();
        }
      },
      { backend: values.backend, precision: values.precision },
    );
    await page.close();
    if (out.error) throw new Error(`visit ${visit + 1}: ${out.error}`);
    const fetched = server.requests.slice(before).filter((r) => /^GET \/model\/.*\.safetensors 200$/.test(r));
    const sources = [...new Set(Object.values(out.from))].join(", ");
    console.log(
      `visit ${visit + 1}: loaded in ${(out.ms / 1000).toFixed(1)} s; ${fetched.length} weight files downloaded; weights from ${sources}; ` +
        `${JSON.stringify(out.device)}${out.notes.length ? `; notes: ${out.notes.join(" | ")}` : ""}`,
    );
  }
} finally {
  await context.close();
  await rm(profile, { recursive: true, force: true });
  server.close();
}
