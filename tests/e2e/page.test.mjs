// End-to-end tests of the page (www/index.html) and the embed API (www/lina.js) in headless
// Chromium, WebGPU on SwiftShader. Needs www/pkg (scripts/build-web.sh) and Debian's
// chromium; run by scripts/test.sh. Screenshots go to tests/e2e/artifacts/.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { readFile, writeFile, mkdir, mkdtemp, cp, rm, truncate, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { DEFAULT_MODEL_FILES, FIXTURES, SLOW, WWW, canvasColours, launchBrowser, openPage as open, singleFileCheckpoint, startServer, statusText, waitForStatus } from "./harness.mjs";

// Served at /extra/: model folders the tests make.
let EXTRA;
const ARTIFACTS = fileURLToPath(new URL("./artifacts/", import.meta.url));

let closeServer;
let base;
let browser;
// Every request the server saw, as "METHOD /path STATUS".
let requests;

before(async () => {
  await mkdir(ARTIFACTS, { recursive: true });
  EXTRA = await mkdtemp(join(tmpdir(), "lina-extra-"));
  ({ base, requests, close: closeServer } = await startServer({ extra: EXTRA, mounts: { "/fixtures/": FIXTURES } }));
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  closeServer?.();
});

const openPage = (path) => open(browser, base + path);

// The panels beside the image are tabs: a control in one is usable once its tab is chosen.
const openTab = (page, name) => page.getByRole("tab", { name, exact: true }).click();

test("the page loads the default model, and a prompt typed and submitted from the keyboard draws an image", { timeout: SLOW * 2 }, async () => {
  const page = await openPage("");
  const ready = await waitForStatus(page, /^Ready|rror/);
  // On a software adapter (SwiftShader, as here) "auto" runs the model on the CPU, and says so.
  assert.match(ready, /^Ready \((CPU, f32\)\. Running on the CPU: the WebGPU adapter is a software one \(SwiftShader\)|.+, f(16|32)\))\.$/);

  // Every control is reachable by its label.
  for (const label of [
    "Prompt",
    "Negative prompt",
    "Seed",
    "Steps",
    "Guidance",
    "Scheduler",
    "Live preview at every step",
    "Load a diffusers-layout folder from this computer",
    "Or from a URL (a folder)",
  ]) {
    assert.equal(await page.getByLabel(label, { exact: true }).count(), 1, label);
  }
  await page.getByLabel("Prompt", { exact: true }).fill("a blue cube on a table");
  await page.getByLabel("Steps", { exact: true }).fill("3");
  await page.getByRole("button", { name: "Generate" }).focus();
  await page.keyboard.press("Enter");
  const done = await waitForStatus(page, /^Done|rror/);
  assert.match(done, /^Done in/);
  assert.ok((await canvasColours(page, "#image")) > 50, "the canvas shows an image");
  await page.screenshot({ path: join(ARTIFACTS, "page.png") });

  // The settings are in the address, and in the saved PNG's metadata.
  const address = page.url();
  assert.match(address, /#.*prompt=a\+blue\+cube\+on\+a\+table/);
  const [download] = await Promise.all([
    page.waitForEvent("download"),
    page.getByRole("button", { name: "Save PNG" }).click(),
  ]);
  const saved = new Uint8Array(await readFile(await download.path()));
  const { readMetadata } = await import("../../www/png.js");
  const settings = readMetadata(saved);
  assert.equal(settings.prompt, "a blue cube on a table");
  assert.equal(settings.steps, 3);
  await page.close();

  // A link with the settings fills the controls in.
  const linked = await openPage(address.slice(base.length));
  assert.equal(await linked.getByLabel("Prompt", { exact: true }).inputValue(), "a blue cube on a table");
  assert.equal(await linked.getByLabel("Steps", { exact: true }).inputValue(), "3");
  await linked.close();
});

test("a second visit loads the model from the browser's cache, downloading nothing", { timeout: SLOW * 2 }, async () => {
  const page = await openPage("");
  assert.match(await waitForStatus(page, /^Ready|rror/), /^Ready/);
  const weightDownloads = () => requests.filter((r) => /^GET .*\.safetensors 200$/.test(r)).length;
  const before = weightDownloads();
  await page.reload();
  const ready = await waitForStatus(page, /^Ready|rror/);
  assert.match(ready, /^Ready/);
  assert.doesNotMatch(ready, /not cached/);
  assert.equal(weightDownloads(), before, "no weight file was downloaded again");
  // Nothing the page asks for is missing: optional files come only where model_index.json
  // names their folder, tokenizer.json only where vocab.json and merges.txt are missing.
  assert.deepEqual(requests.filter((r) => / 404$/.test(r)), []);
  await page.close();
});

test("the scene graph follows the prompt; editing a relation changes the image and the verdicts; the schedule plot follows the warp", { timeout: SLOW * 3 }, async () => {
  const page = await openPage("");
  await waitForStatus(page, /^Ready|rror/);
  await page.getByLabel("Prompt", { exact: true }).fill("a red ball on a small mirror");
  await openTab(page, "Scene graph");
  // The parser's graph, with the reflection physics implies, drawn: the implied node dashed.
  await page.waitForFunction(() => document.getElementById("csg-nodes").textContent.includes("(implied)"), null, {
    timeout: SLOW,
  });
  assert.equal(await page.getByLabel("node reflection_of_object: class", { exact: true }).inputValue(), "reflection");
  assert.equal(await page.locator("#csg-graph .node.implied").count(), 1);
  assert.ok((await page.locator("#csg-graph .edge").count()) >= 2);
  await openTab(page, "LINA");

  // The warp lifts the reallocated schedule and leaves the plain one.
  const curves = () =>
    page.evaluate(() =>
      [...document.querySelectorAll("#schedule-plot polyline")].map((l) => l.getAttribute("points")),
    );
  // The plot is drawn after a round trip to the worker, which may finish after "Ready".
  await page.waitForSelector("#schedule-plot polyline.planned", { state: "attached", timeout: SLOW });
  const [plainBefore, plannedBefore] = await curves();
  await page.getByLabel(/^Schedule warp/).fill("2.5");
  await page.waitForFunction(
    (before) => {
      const planned = document.querySelector("#schedule-plot .planned");
      return planned !== null && planned.getAttribute("points") !== before;
    },
    plannedBefore,
    { timeout: SLOW },
  );
  const [plainAfter] = await curves();
  assert.equal(plainAfter, plainBefore);
  // Back to a mild warp (the default plan has none), so that the region guidance below has
  // early steps to act in.
  await page.getByLabel(/^Schedule warp/).fill("1.5");

  // Baseline and LINA side by side, each with the checker's verdicts. The default plan
  // leaves the region terms off; they are turned on here, over the first 40% of the run, so
  // that the effect guidance below has a step to act in.
  await page.getByLabel("Steps", { exact: true }).fill("3");
  await page.getByLabel("Region guidance: node weight").fill("1");
  await page.getByLabel("Region guidance: effect weight").fill("2");
  await page.getByLabel("Region guidance until").fill("0.4");
  assert.ok(await page.getByRole("radio", { name: "Custom" }).isChecked(), "moving a slider makes the plan Custom");
  await openTab(page, "Scene graph");
  // Region guidance acts where the graph has layout boxes (no judge reads a layout off the
  // image for it): the boxes the page derived from the prompt's relations give way to the
  // editor's for the ball and the mirror, and the mirror is made shorter than the ball from
  // the keyboard, so that a full reflection would spill below it.
  for (const node of ["object", "surface"]) {
    await page.getByRole("button", { name: `Drop box of node ${node}` }).click();
    await page.getByRole("button", { name: `Add box of node ${node}` }).click();
  }
  // The derived box's rectangle is there from the start: wait for the one the editor added
  // (at x = 0.35, once the worker has validated the edit) to replace it, so that the keys
  // move the new box, not the old one.
  await page.waitForFunction(
    () => Math.abs(Number(document.querySelector('#layout-boxes rect[data-node="surface"]')?.getAttribute("x")) - 0.35) < 1e-3,
    null,
    { timeout: SLOW },
  );
  const mirror = page.getByRole("button", { name: /^layout of node surface/ });
  await mirror.focus();
  for (let i = 0; i < 4; i++) await page.keyboard.press("Shift+ArrowUp");
  // Each change is validated by the runtime (a round trip to the worker), in order: the
  // status says "Edited" again once the last one is in.
  await page.waitForTimeout(500);
  await page.evaluate(() => (document.getElementById("csg-status").textContent = ""));
  await page.keyboard.press("Shift+ArrowUp");
  await page.waitForFunction(() => document.getElementById("csg-status").textContent.includes("Edited"), null, {
    timeout: SLOW,
  });
  const mirrorBox = JSON.parse(await page.getByLabel(/^Scene graph JSON/).inputValue()).nodes.find((n) => n.id === "surface").layout;
  assert.ok(mirrorBox[3] < 0.6, `${mirrorBox}`);
  const compare = async () => {
    await openTab(page, "Compare");
    await page.getByRole("button", { name: "Compare baseline and LINA" }).click();
    assert.match(await waitForStatus(page, /^Compared|rror/), /^Compared/);
    // The summary says how far apart the two images are, in levels of 255.
    assert.match(await page.locator("#compare-summary").textContent(), /\/255 on average/);
    const verdicts = await page.locator("#lina-verdicts li").allTextContents();
    await openTab(page, "Scene graph");
    return verdicts;
  };
  const before = await compare();
  const linaImage = () => page.evaluate(() => document.getElementById("lina-image").toDataURL());
  const imageBefore = await linaImage();
  assert.ok(before.some((v) => v.startsWith("on(")), before.join("; "));
  assert.ok((await canvasColours(page, "#baseline-image")) > 50);

  // The reflection need no longer stay within the mirror ("surface"), only close to it: the
  // effect guidance that kept it inside stops, and the checker checks closeness instead.
  // The runtime validates the edit (a round trip to the worker), then says "Edited" (the
  // status says so already, since the boxes were imported: cleared first, to see it again).
  await page.evaluate(() => (document.getElementById("csg-status").textContent = ""));
  await page.getByLabel("relation 3: predicate", { exact: true }).selectOption("close_to");
  await page.waitForFunction(() => document.getElementById("csg-status").textContent.includes("Edited"), null, {
    timeout: SLOW,
  });
  const after = await compare();
  assert.ok(after.some((v) => v.startsWith("close_to(")), after.join("; "));
  assert.ok(!after.some((v) => v.startsWith("bounded_by(")), after.join("; "));
  assert.notDeepEqual(after, before);
  assert.notEqual(await linaImage(), imageBefore, "the LINA image changed with the graph");
  await page.screenshot({ path: join(ARTIFACTS, "lina.png"), fullPage: true });

  // The drawn graph edits too: the ball, then the mirror, adds "object on surface"; the new
  // relation, selected by its label, goes with Delete.
  const relations = () => page.locator("#csg-relations li").count();
  const count = await relations();
  await page.getByRole("button", { name: /^object ball/ }).click();
  await page.getByRole("button", { name: /^surface mirror/ }).click();
  await page.waitForFunction((n) => document.querySelectorAll("#csg-relations li").length === n + 1, count, { timeout: SLOW });
  await page.getByRole("button", { name: `relation ${count + 1}: object on surface` }).locator("text").click();
  // Selected, its predicate changes beside the drawing; then Delete removes it.
  await page.getByLabel("Selected relation's predicate").selectOption("left_of");
  await page.getByRole("button", { name: `relation ${count + 1}: object left of surface` }).waitFor({ timeout: SLOW });
  assert.equal(await page.getByLabel(`relation ${count + 1}: predicate`, { exact: true }).inputValue(), "left_of");
  await page.getByRole("button", { name: `relation ${count + 1}: object left of surface` }).focus();
  await page.keyboard.press("Delete");
  await page.waitForFunction((n) => document.querySelectorAll("#csg-relations li").length === n, count, { timeout: SLOW });
  // A relation that closes a loop is refused with the reason, next to the graph.
  await page.getByRole("button", { name: /^surface mirror/ }).click();
  await page.getByRole("button", { name: /^object ball/ }).click();
  await page.waitForFunction(() => document.getElementById("csg-status").textContent.includes("make a cycle"), null, { timeout: SLOW });
  assert.match(await page.locator("#csg-status").textContent(), /object on surface, surface on object make a cycle/);
  await page.getByRole("button", { name: `remove relation ${count + 1}` }).click();

  // The boxes go again, so that the ball's below starts from the default box, alone.
  for (const node of ["object", "surface"]) {
    await page.getByRole("button", { name: `Drop box of node ${node}` }).click();
    await page.getByRole("button", { name: `Add box of node ${node}` }).waitFor({ state: "attached", timeout: SLOW });
  }

  // A layout box for the ball, dragged with the mouse, then moved from the keyboard.
  const layoutOf = async () =>
    JSON.parse(await page.getByLabel(/^Scene graph JSON/).inputValue()).nodes.find((n) => n.id === "object").layout;
  await page.getByRole("button", { name: "Add box of node object" }).click();
  const box = page.getByRole("button", { name: /^layout of node object/ });
  // The boxes drawn follow the graph once the runtime has validated each edit, in order: the
  // ball's new box is in once the mirror's dropped one is gone and the ball's is there (a
  // drag that starts on a box about to be redrawn loses its pointer).
  await page.waitForFunction(
    () => [...document.querySelectorAll("#layout-boxes rect.layout-box")].map((r) => r.dataset.node).join() === "object",
    null,
    { timeout: SLOW },
  );
  assert.deepEqual(await layoutOf(), [0.35, 0.35, 0.65, 0.65]);
  await page.locator("#layout-boxes").scrollIntoViewIfNeeded();
  const area = await page.locator("#layout-boxes").boundingBox();
  const from = { x: area.x + area.width * 0.5, y: area.y + area.height * 0.5 };
  await page.mouse.move(from.x, from.y);
  await page.mouse.down();
  await page.mouse.move(from.x - area.width * 0.2, from.y + area.height * 0.1, { steps: 5 });
  await page.mouse.up();
  await page.waitForFunction(
    () => !document.getElementById("csg-json").value.includes("0.35,"),
    null,
    { timeout: SLOW },
  );
  const dragged = await layoutOf();
  assert.ok(Math.abs(dragged[0] - 0.15) < 0.02 && Math.abs(dragged[1] - 0.45) < 0.02, `${dragged}`);
  await box.focus();
  await page.keyboard.press("ArrowRight");
  await page.keyboard.press("ArrowRight");
  await page.waitForFunction(
    (x0) => JSON.parse(document.getElementById("csg-json").value).nodes[0].layout[0] > x0 + 0.03,
    dragged[0],
    { timeout: SLOW },
  );

  // A graph naming an unknown node is refused with the reason, and the last good one stays.
  await page.getByText("Advanced: the scene graph as JSON").click();
  const json = JSON.parse(await page.getByLabel(/^Scene graph JSON/).inputValue());
  json.relations.push({ subject: "object", predicate: "on", object: "table" });
  await page.getByLabel(/^Scene graph JSON/).fill(JSON.stringify(json));
  await page.getByRole("button", { name: "Import JSON" }).click();
  await page.waitForFunction(() => document.getElementById("csg-status").textContent.includes("unknown node"), null, {
    timeout: SLOW,
  });
  assert.match(await page.locator("#csg-status").textContent(), /unknown node "table"/);
  await page.close();
});

test("any prompt gets layout boxes from its relations; a LINA run's attention maps show each word's map over the image, step by step", { timeout: SLOW * 3 }, async () => {
  const page = await openPage("");
  await waitForStatus(page, /^Ready|rror/);
  await page.getByLabel("Prompt", { exact: true }).fill("a cat sleeping on a sofa");
  // Nodes outside the probe's world, each with a draggable box derived from "on": the cat
  // higher than the sofa it lies on.
  const nodeBoxes = page.locator("#layout-boxes rect[data-node]");
  await page.locator('#layout-boxes rect[data-node="sofa"]').waitFor({ timeout: SLOW });
  const boxed = await nodeBoxes.evaluateAll((rects) => rects.map((r) => r.dataset.node).sort());
  assert.deepEqual(boxed, ["cat", "sofa"]);
  assert.match(await page.locator("#csg-status").textContent(), /derived from the prompt's relations/);
  const layouts = Object.fromEntries(
    JSON.parse(await page.getByLabel(/^Scene graph JSON/).inputValue()).nodes.map((n) => [n.id, n.layout]),
  );
  assert.ok(layouts.cat[1] + layouts.cat[3] < layouts.sofa[1] + layouts.sofa[3], JSON.stringify(layouts));

  // The alpha of the overlay's pixels, in rows; every pixel transparent means nothing is drawn.
  const overlayAlpha = () =>
    page.evaluate(() => {
      const canvas = document.getElementById("attention-overlay");
      const { data } = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height);
      const rows = [];
      for (let y = 0; y < canvas.height; y++) {
        rows.push(Array.from({ length: canvas.width }, (_, x) => data[4 * (y * canvas.width + x) + 3]));
      }
      return rows;
    });
  const drawn = (alpha) => alpha.flat().filter((a) => a > 0).length;

  assert.equal(await page.locator("#attention").isVisible(), false, "no maps before a run records them");
  await page.getByLabel("Record attention maps").check();
  await page.getByRole("radio", { name: "Custom" }).check();
  await page.getByLabel(/^Region-controlled attention: strength/).fill("2");
  await page.getByLabel("Steps", { exact: true }).fill("3");
  await page.getByRole("button", { name: "Generate" }).click();
  assert.match(await waitForStatus(page, /^Done|rror/), /^Done/);

  // One button per word, each once ("a" is named twice), and a slider over the run's steps.
  const words = page.getByRole("group", { name: /^Where the image attended to each word/ });
  assert.deepEqual(await words.getByRole("button").allTextContents(), ["a", "cat", "sleeping", "on", "sofa"]);
  const slider = page.getByLabel("Attention map step");
  assert.equal(await slider.getAttribute("max"), "3");
  assert.equal(await slider.inputValue(), "3");
  assert.equal(drawn(await overlayAlpha()), 0, "no word is chosen yet");

  const cat = words.getByRole("button", { name: "cat", exact: true });
  await cat.click();
  assert.equal(await cat.getAttribute("aria-pressed"), "true");
  const last = await overlayAlpha();
  assert.ok(drawn(last) > 0, "the cat's map is drawn over the image");

  // The first step, from the keyboard: inside the attention window, where the cat's word is
  // steered into its box, which then holds more of its map than its share of the image.
  await slider.focus();
  await page.keyboard.press("Home");
  assert.equal(await slider.inputValue(), "1");
  assert.equal(await page.locator("#attention-step-value").textContent(), "step 1 of 3");
  const first = await overlayAlpha();
  assert.notDeepEqual(first, last, "each step has its own map");
  const [x0, y0, x1, y1] = layouts.cat;
  let inside = 0;
  let total = 0;
  first.forEach((row, y) =>
    row.forEach((a, x) => {
      const [cx, cy] = [(x + 0.5) / row.length, (y + 0.5) / first.length];
      if (cx >= x0 && cx < x1 && cy >= y0 && cy < y1) inside += a;
      total += a;
    }),
  );
  const area = (x1 - x0) * (y1 - y0);
  assert.ok(inside / total > area + 0.1, `the cat's box holds ${(inside / total).toFixed(3)} of its map, ${area.toFixed(3)} of the image`);
  await page.screenshot({ path: join(ARTIFACTS, "attention.png") });

  // Pressing the word again hides its map.
  await cat.click();
  assert.equal(await cat.getAttribute("aria-pressed"), "false");
  assert.equal(drawn(await overlayAlpha()), 0);
  await page.close();
});

test("the predictor's suggestion fills the plan; the step sweep charts every step; a node of the image is re-inpainted and judged", { timeout: SLOW * 3 }, async () => {
  const page = await openPage("#prompt=a+red+ball+on+a+small+mirror&steps=3&seed=42&guidanceScale=3");
  await waitForStatus(page, /^Ready|rror/);

  // The learned predictor's plan for the prompt, copied into the controls on request.
  await page.waitForFunction(() => /^The predictor suggests "/.test(document.getElementById("suggestion").textContent), null, {
    timeout: SLOW,
  });
  const suggested = (await page.locator("#suggestion").textContent()).match(/suggests "([a-z-]+)"/)[1];
  const warps = { baseline: 1, schedule: 1.5, prompt: 1, mirror: 1, "prompt-mirror": 1, guidance: 1, "guidance-mirror": 1, collage: 1, "collage-mirror": 1 };
  assert.ok(suggested in warps, suggested);
  // Its expected shares read as shares: none over 100%.
  for (const share of (await page.locator("#suggestion").textContent()).matchAll(/(\d+)%/g)) assert.ok(Number(share[1]) <= 100, share[0]);
  await page.getByRole("radio", { name: "Suggested" }).check();
  assert.equal(Number(await page.getByLabel(/^Schedule warp/).inputValue()), warps[suggested]);
  assert.equal(Number(await page.getByLabel(/^Guidance factor/).inputValue()), suggested.startsWith("guidance") ? 0.5 : 1);
  // A stack on a mirror is not a collage's: the predictor never suggests one here.
  assert.equal(Number(await page.getByLabel(/^Collage/).inputValue()), 0);
  await page.getByRole("button", { name: "Generate" }).click();
  assert.match(await waitForStatus(page, /^Done|rror/), /^Done/);

  await openTab(page, "Diagnostics");
  await page.getByRole("button", { name: "Step sweep" }).click();
  assert.match(await waitForStatus(page, /^Swept|rror/), /^Swept 3 steps/);
  assert.equal(await page.locator("#sweep-points li").count(), 3);
  assert.equal(await page.locator("#sweep-chart rect").count(), 3);

  await page.getByLabel("Node to re-inpaint in the last generated image").selectOption("object");
  await page.getByRole("button", { name: "Re-inpaint" }).click();
  assert.match(await waitForStatus(page, /^Re-inpainted|rror/), /^Re-inpainted: \d+ of \d+ checks passed before, \d+ after\.$/);
  assert.ok((await page.locator("#reinpaint-verdicts li").count()) > 0);
  assert.ok((await canvasColours(page, "#reinpainted-image")) > 50);
  await page.close();
});

test("Cancel stops a generation between steps, and the page can generate again", { timeout: SLOW * 2 }, async () => {
  const page = await openPage("");
  await waitForStatus(page, /^Ready|rror/);
  await page.getByLabel("Steps", { exact: true }).fill("200");
  await page.getByRole("button", { name: "Generate" }).click();
  // Any step from the second on: a step can be shorter than the status poll, so waiting for
  // one exact step can miss it and see the whole generation end instead.
  await waitForStatus(page, /^Step ([2-9]|\d\d+)\//);
  await page.getByRole("button", { name: "Cancel" }).click();
  assert.match(await waitForStatus(page, /cancelled|^Done/), /cancelled/);
  // No step runs after the cancel: each would show "Step n/200" in the status.
  await new Promise((resolve) => setTimeout(resolve, 2000));
  assert.match(await statusText(page), /cancelled/);
  assert.equal(await page.getByRole("button", { name: "Generate" }).isEnabled(), true);
  assert.equal(await page.getByRole("button", { name: "Cancel" }).isEnabled(), false);
  await page.close();
});

test("Cancel stops a model's download midway; nothing is left running, and another model loads", { timeout: SLOW * 2 }, async () => {
  const page = await openPage("");
  await waitForStatus(page, /^Ready|rror/);
  await openTab(page, "Model");
  await page.getByLabel("Or from a URL (a folder)").fill(`${base}slow/models/default/`);
  await page.getByRole("button", { name: "Load", exact: true }).click();
  await waitForStatus(page, /^Downloading unet\/diffusion_pytorch_model\.safetensors/);
  await page.getByRole("button", { name: "Cancel" }).click();
  assert.match(await waitForStatus(page, /cancelled|^Ready|rror/), /loading cancelled; no model is loaded/);
  assert.equal(await page.getByRole("button", { name: "Generate" }).isEnabled(), false);
  // The download was cut off, and no request follows the cancel.
  const slowRequests = () => requests.filter((r) => r.includes(" /slow/"));
  await new Promise((resolve) => setTimeout(resolve, 1000));
  const afterCancel = slowRequests();
  assert.ok(afterCancel.includes("GET /slow/models/default/unet/diffusion_pytorch_model.safetensors aborted"), afterCancel.join("\n"));
  await new Promise((resolve) => setTimeout(resolve, 3000));
  assert.deepEqual(slowRequests(), afterCancel);

  await page.getByRole("button", { name: "Back to the embedded model" }).click();
  assert.match(await waitForStatus(page, /^Ready|rror/), /^Ready/);
  await page.getByLabel("Steps", { exact: true }).fill("2");
  await page.getByRole("button", { name: "Generate" }).click();
  assert.match(await waitForStatus(page, /^Done|rror/), /^Done/);
  await page.close();
});

test("the model cache: a damaged entry is caught by its hash and downloaded again; a full quota leaves the model running and nothing half-stored", { timeout: SLOW * 3 }, async () => {
  const folder = join(EXTRA, "cached");
  await cp(join(WWW, "models/default"), folder, { recursive: true });
  const url = `${base}extra/cached/`;
  const gets = (file) => requests.filter((r) => r === `GET /extra/cached/${file} 200`).length;
  const unet = "unet/diffusion_pytorch_model.safetensors";
  const text = "text_encoder/model.safetensors";

  const page = await openPage("lina.js");
  const first = await page.evaluate(async (url) => {
    const { loadModel } = await import("./lina.js");
    window.model = await loadModel({ url });
    window.options = { prompt: "a red ball on a small mirror", steps: 2 };
    window.image = await window.model.generate(window.options);
    return window.model.notes;
  }, url);
  // Nothing about the cache (a note may say which backend runs the model).
  assert.deepEqual(first.filter((note) => !note.startsWith("Running on the CPU")), []);
  const [unetGets, textGets] = [gets(unet), gets(text)];

  // One byte of the cached UNet's last tensor changes: the file still parses, its hash differs.
  const damaged = await page.evaluate(async (file) => {
    const cache = await caches.open("lina-models-v1");
    const cached = await cache.match(file);
    const bytes = new Uint8Array(await cached.arrayBuffer());
    bytes[bytes.length - 3] ^= 0x40;
    await cache.put(file, new Response(bytes, { headers: cached.headers }));
    // Where each file's bytes came from, as onProgress tells it.
    const sources = {};
    const onProgress = ({ path, from }) => (sources[path] = from);
    const { notes } = await window.model.load({ url: file.slice(0, file.indexOf("unet/")), onProgress });
    const again = await window.model.generate(window.options);
    return { notes, sources, same: again.rgba.every((v, i) => v === window.image.rgba[i]) };
  }, url + unet);
  assert.equal(damaged.sources[text], "cache");
  assert.equal(damaged.sources[unet], "network", "the damaged file's last bytes came from the server");
  assert.match(damaged.notes.join(" "), /unet\/diffusion_pytorch_model\.safetensors: the cached copy is damaged \(its SHA-256 differs/);
  assert.equal(damaged.same, true, "the image is the undamaged model's");
  assert.equal(gets(unet), unetGets + 1, "the damaged file was downloaded again");
  assert.equal(gets(text), textGets, "the others came from the cache");
  await page.close();

  // A new profile whose origin may store 1 MB: the UNet's 6.8 MB do not fit.
  const small = await openPage("lina.js");
  const cdp = await small.context().newCDPSession(small);
  await cdp.send("Storage.overrideQuotaForOrigin", { origin: base.slice(0, -1), quotaSize: 1 << 20 });
  const full = await small.evaluate(async (url) => {
    const { loadModel } = await import("./lina.js");
    const model = await loadModel({ url });
    const notes = model.notes;
    const image = await model.generate({ prompt: "a red ball on a small mirror", steps: 2 });
    const again = await model.load({ url });
    const files = await caches.open("lina-models-v1");
    const digests = await caches.open("lina-digests-v1");
    const stored = async (cache) => (await cache.keys()).map((r) => r.url.slice(url.length)).sort();
    model.dispose();
    return { notes, again: again.notes, pixels: image.rgba.length, files: await stored(files), digests: await stored(digests) };
  }, url);
  assert.match(full.notes.join(" "), /not cached for the next visit/);
  assert.equal(full.pixels, 64 * 64 * 4, "the model ran from the download");
  assert.match(full.again.join(" "), /not cached for the next visit/);
  assert.equal(gets(unet), unetGets + 3, "the UNet, never stored whole, was downloaded each time");
  // Whatever did fit is stored with its digest; nothing else is.
  assert.deepEqual(full.files, full.digests);
  assert.ok(!full.files.includes(unet), full.files.join(", "));
  await small.close();
});

test("a model folder picked from disk loads, and a corrupt weight file in it is a clear error", { timeout: SLOW * 3 }, async () => {
  // Two copies of the default model's folder: one whole, one with its UNet weights cut short.
  const good = await mkdtemp(join(tmpdir(), "lina-model-"));
  await cp(join(WWW, "models/default"), join(good, "default"), { recursive: true });
  const bad = await mkdtemp(join(tmpdir(), "lina-model-"));
  await cp(join(WWW, "models/default"), join(bad, "default"), { recursive: true });
  const unet = join(bad, "default/unet/diffusion_pytorch_model.safetensors");
  await truncate(unet, Math.floor((await stat(unet)).size / 2));

  const page = await openPage("");
  await waitForStatus(page, /^Ready|rror/);
  await openTab(page, "Model");
  const picker = page.getByLabel("Load a diffusers-layout folder from this computer");
  await picker.setInputFiles(join(bad, "default"));
  // The File's size bounds what the header may claim: the weight file is refused as soon as
  // its header has arrived ("cannot read safetensors: the header describes a file of …").
  const refused = await waitForStatus(page, /cannot read|rror|truncated|^Ready/);
  assert.match(refused, /unet\/diffusion_pytorch_model\.safetensors/);
  // With no model, nothing that needs one can be pressed.
  // (Buttons in other tabs are hidden, which role queries skip: found by id.)
  for (const id of ["generate", "compare", "sweep", "reinpaint"]) {
    assert.equal(await page.locator(`#${id}`).isEnabled(), false, `${id} with no model`);
  }

  await picker.setInputFiles(join(good, "default"));
  assert.match(await waitForStatus(page, /^Ready|rror/), /^Ready/);
  await page.getByLabel("Steps", { exact: true }).fill("2");
  await page.getByRole("button", { name: "Generate" }).click();
  assert.match(await waitForStatus(page, /^Done|rror/), /^Done/);
  await page.close();
});

// Splits a safetensors file in two shards plus the index diffusers writes for large weights.
async function shard(file, folder, name) {
  const bytes = await readFile(file);
  const headerLength = Number(bytes.readBigUInt64LE(0));
  const header = JSON.parse(bytes.subarray(8, 8 + headerLength).toString());
  const data = bytes.subarray(8 + headerLength);
  const names = Object.keys(header).filter((k) => k !== "__metadata__").sort();
  const halves = [names.slice(0, names.length >> 1), names.slice(names.length >> 1)];
  const weightMap = {};
  for (const [i, part] of halves.entries()) {
    const shardName = `${name}-0000${i + 1}-of-00002.safetensors`;
    const chunks = [];
    const out = {};
    let at = 0;
    for (const key of part) {
      const { dtype, shape, data_offsets: [start, end] } = header[key];
      out[key] = { dtype, shape, data_offsets: [at, at + end - start] };
      chunks.push(data.subarray(start, end));
      at += end - start;
      weightMap[key] = shardName;
    }
    let json = JSON.stringify(out);
    json += " ".repeat((8 - (json.length % 8)) % 8);
    const length = Buffer.alloc(8);
    length.writeBigUInt64LE(BigInt(json.length));
    await writeFile(join(folder, shardName), Buffer.concat([length, Buffer.from(json), ...chunks]));
  }
  const index = { metadata: { total_size: data.length }, weight_map: weightMap };
  await writeFile(join(folder, `${name}.safetensors.index.json`), JSON.stringify(index));
}

test("a model with sharded weights loads from a URL", { timeout: SLOW * 2 }, async () => {
  const folder = join(EXTRA, "sharded");
  await cp(join(WWW, "models/default"), folder, { recursive: true });
  const unet = join(folder, "unet/diffusion_pytorch_model.safetensors");
  await shard(unet, join(folder, "unet"), "diffusion_pytorch_model");
  await rm(unet);

  const page = await openPage("");
  await waitForStatus(page, /^Ready|rror/);
  await openTab(page, "Model");
  await page.getByLabel("Or from a URL (a folder)").fill(`${base}extra/sharded/`);
  await page.getByRole("button", { name: "Load", exact: true }).click();
  // The status says Ready already; wait for the second shard to be served, then for Ready.
  const secondShard = /^GET \/extra\/sharded\/unet\/diffusion_pytorch_model-00002-of-00002\.safetensors 200$/;
  for (let waited = 0; !requests.some((r) => secondShard.test(r)); waited += 250) {
    assert.ok(waited < SLOW, "the second shard was never asked for");
    assert.doesNotMatch(await statusText(page), /rror|not found/);
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
  assert.match(await waitForStatus(page, /^Ready|rror|not found/), /^Ready/);
  await page.getByLabel("Steps", { exact: true }).fill("2");
  await page.getByRole("button", { name: "Generate" }).click();
  assert.match(await waitForStatus(page, /^Done|rror/), /^Done/);
  await page.close();
});

test("an SD 3 model shows the skip-layer field: a block it lacks is refused beside the field, valid blocks draw and go into the link; a UNet model hides it and shows guidance rescale, which goes into the link and comes back from one", { timeout: SLOW * 2 }, async () => {
  const page = await openPage("");
  await waitForStatus(page, /^Ready|rror/);
  const field = page.getByLabel("Skip layers");
  assert.equal(await field.isVisible(), false, "the default model (a UNet) has no blocks to skip");
  // A UNet takes guidance rescale; the value goes into the link and a link fills it in.
  const rescale = page.getByLabel("Guidance rescale");
  assert.ok(await rescale.isVisible(), "the default model (a UNet) takes guidance rescale");
  await rescale.fill("0.7");
  await page.getByLabel("Steps", { exact: true }).fill("2");
  await page.getByRole("button", { name: "Generate" }).click();
  assert.match(await waitForStatus(page, /^Done|rror/), /^Done/);
  assert.match(new URL(page.url()).hash, /guidanceRescale=0\.7/);
  await openTab(page, "Model");
  await page.getByLabel("Or from a URL (a folder)").fill(`${base}fixtures/sd3_tiny/`);
  await page.getByRole("button", { name: "Load", exact: true }).click();
  assert.match(await waitForStatus(page, /^Ready|rror|not found/), /^Ready/);
  assert.ok(await field.isVisible(), "the SD 3 model's blocks can be skipped");
  assert.equal(await rescale.isVisible(), false, "SD 3's pipeline has no guidance rescale");
  // The tiny transformer has blocks 0 to 2.
  await field.fill("1,5");
  assert.match(await page.locator("#skip-layers-error").textContent(), /from 0 to 2/);
  assert.equal(await field.getAttribute("aria-invalid"), "true");
  await page.getByRole("button", { name: "Generate" }).click();
  assert.equal(await page.evaluate(() => document.activeElement.id), "skip-layers", "Generate sent the user to the field");
  await field.fill("1,2");
  assert.equal(await page.locator("#skip-layers-error").textContent(), "");
  await page.getByLabel("Steps", { exact: true }).fill("3");
  await page.getByRole("button", { name: "Generate" }).click();
  assert.match(await waitForStatus(page, /^Done|rror/), /^Done/);
  assert.match(new URL(page.url()).hash, /skipLayers=1%2C2/);

  // A page with the default model (a UNet) again: no field.
  await page.close();
  const again = await openPage("#guidanceRescale=0.5");
  await waitForStatus(again, /^Ready|rror/);
  assert.equal(await again.getByLabel("Skip layers").isVisible(), false);
  assert.equal(await again.getByLabel("Guidance rescale").inputValue(), "0.5", "the link filled the rescale in");
  await again.close();
});

// A PNG made in the page: columns left of `split` (a fraction of the width) in `left`, the rest in `right`.
const twoHalvesPng = (page, left, right, split = 0.5) =>
  page.evaluate(async ({ left, right, split }) => {
    const canvas = new OffscreenCanvas(64, 64);
    const context = canvas.getContext("2d");
    context.fillStyle = left;
    context.fillRect(0, 0, 64 * split, 64);
    context.fillStyle = right;
    context.fillRect(64 * split, 0, 64 * (1 - split), 64);
    const blob = await canvas.convertToBlob({ type: "image/png" });
    return Array.from(new Uint8Array(await blob.arrayBuffer()));
  }, { left, right, split });

const pick = (page, label, name, bytes) =>
  page.getByLabel(label, { exact: true }).setInputFiles({ name, mimeType: "image/png", buffer: Buffer.from(bytes) });

test("Start from an image: a start image and a mask redraw the masked half and keep the other; an inpainting model opens the section, needs both and compares with them; a FLUX model takes a reference image", { timeout: SLOW * 3 }, async () => {
  const page = await openPage("");
  await waitForStatus(page, /^Ready|rror/);
  assert.equal(await page.locator("#image-inputs").getAttribute("open"), null, "closed for a model that needs no image");
  assert.equal(await page.getByLabel("Control image").isVisible(), false, "the default model follows no control image");
  await page.getByText("Start from an image").click();
  const start = await twoHalvesPng(page, "rgb(220, 40, 40)", "rgb(40, 60, 210)");
  await pick(page, "Start image", "start.png", start);
  await pick(page, "Mask", "mask.png", await twoHalvesPng(page, "black", "white"));
  await page.getByLabel("Strength", { exact: true }).fill("1");
  await page.getByLabel("Steps", { exact: true }).fill("4");
  await page.getByRole("button", { name: "Generate" }).click();
  assert.match(await waitForStatus(page, /^Done|rror/), /^Done/);
  // The kept (left) side is the start image through the VAE, the redrawn side the model's;
  // compared in the outer quarters, since the decoder blends the halves near their border.
  const [kept, redrawn] = await page.evaluate(async (bytes) => {
    const canvas = document.getElementById("image");
    const { width, height } = canvas;
    const drawn = canvas.getContext("2d").getImageData(0, 0, width, height).data;
    const startCanvas = new OffscreenCanvas(width, height);
    const context = startCanvas.getContext("2d");
    context.drawImage(await createImageBitmap(new Blob([new Uint8Array(bytes)])), 0, 0, width, height);
    const wanted = context.getImageData(0, 0, width, height).data;
    const sums = [0, 0];
    for (let p = 0; p < width * height; p++) {
      const x = p % width;
      if (x >= width / 4 && x < (3 * width) / 4) continue;
      for (let c = 0; c < 3; c++) sums[x < width / 2 ? 0 : 1] += Math.abs(drawn[p * 4 + c] - wanted[p * 4 + c]);
    }
    return sums.map((sum) => sum / ((width * height * 3) / 4));
  }, start);
  console.log(`mean difference from the start image: kept quarter ${kept.toFixed(1)}, redrawn quarter ${redrawn.toFixed(1)}`);
  assert.ok(redrawn > kept + 20, `mean difference from the start image: kept quarter ${kept.toFixed(1)}, redrawn quarter ${redrawn.toFixed(1)}`);
  await page.close();

  // An SD 1.x inpainting model: sd1_tiny with the 9-channel UNet.
  const folder = join(EXTRA, "sd1_inpaint");
  await cp(join(FIXTURES, "sd1_tiny"), folder, { recursive: true });
  await rm(join(folder, "unet"), { recursive: true });
  await cp(join(FIXTURES, "sd1_inpaint_tiny", "unet"), join(folder, "unet"), { recursive: true });
  const inpainting = await openPage("");
  await waitForStatus(inpainting, /^Ready|rror/);
  await openTab(inpainting, "Model");
  await inpainting.getByLabel("Or from a URL (a folder)").fill(`${base}extra/sd1_inpaint/`);
  await inpainting.getByRole("button", { name: "Load", exact: true }).click();
  assert.match(await waitForStatus(inpainting, /^Ready|rror|not found/), /^Ready/);
  assert.notEqual(await inpainting.locator("#image-inputs").getAttribute("open"), null, "opened for a model that needs an image");
  await inpainting.getByLabel("Steps", { exact: true }).fill("3");
  await inpainting.getByRole("button", { name: "Generate" }).click();
  assert.match(await waitForStatus(inpainting, /^Done|rror|inpainting/), /inpainting model: it needs an init image and a mask/);
  await pick(inpainting, "Start image", "start.png", start);
  await pick(inpainting, "Mask", "mask.png", await twoHalvesPng(inpainting, "black", "white", 0.75));
  await inpainting.getByRole("button", { name: "Generate" }).click();
  assert.match(await waitForStatus(inpainting, /^Done|rror/), /^Done/);
  // Compare's two runs take the picked images too, as the model needs them.
  await openTab(inpainting, "Compare");
  await inpainting.getByRole("button", { name: "Compare baseline and LINA" }).click();
  assert.match(await waitForStatus(inpainting, /^Compared|rror/), /^Compared/);
  assert.equal(await inpainting.getByLabel("Reference image").isVisible(), false, "a UNet takes no reference image");

  // A FLUX model takes a reference image (Kontext's input), drawn with its own aspect.
  await openTab(inpainting, "Model");
  await inpainting.getByLabel("Or from a URL (a folder)").fill(`${base}fixtures/flux_tiny/`);
  await inpainting.getByRole("button", { name: "Load", exact: true }).click();
  assert.match(await waitForStatus(inpainting, /^Ready|rror|not found/), /^Ready/);
  assert.ok(await inpainting.getByLabel("Reference image").isVisible(), "FLUX takes a reference image");
  // A small FLUX takes its reference at about its own size; Kontext's trained sizes are a megapixel.
  assert.equal(await inpainting.getByLabel("Reference size").inputValue(), "kept");
  assert.equal(await inpainting.getByLabel("Control image").isVisible(), false);
  await inpainting.locator("#init-image").setInputFiles([]);
  await inpainting.locator("#mask-image").setInputFiles([]);
  await pick(inpainting, "Reference image", "reference.png", start);
  await inpainting.getByLabel("Steps", { exact: true }).fill("1");
  await inpainting.getByRole("button", { name: "Generate" }).click();
  assert.match(await waitForStatus(inpainting, /^Done|rror/), /^Done/);
  await inpainting.close();
});

test("the embed example draws an image with the API alone", { timeout: SLOW * 2 }, async () => {
  const page = await openPage("example.html");
  assert.match(await waitForStatus(page, /^Done|^Error/), /^Done/);
  assert.ok((await canvasColours(page, "#image")) > 50, "the canvas shows an image");
  await page.screenshot({ path: join(ARTIFACTS, "example.png") });
  await page.close();
});

test("the benchmark page times the first image phase by phase and the warm figures", { timeout: SLOW * 2 }, async () => {
  // One repeat of one step: the figures' shape, not their values (docs/bench.md has those).
  const page = await openPage("bench.html?repeat=1&steps=1");
  assert.match(await waitForStatus(page, /^Done|^Error/), /^Done/);
  const r = await page.evaluate(() => window.benchResults);
  const f = r.timeToFirstImage;
  for (const phase of ["wasmMs", "loadMs", "firstStepMs", "imageMs"]) assert.ok(f[phase] > 0, phase);
  assert.ok(f.totalMs >= f.wasmMs + f.loadMs + f.imageMs, "the phases add up to at most the total");
  for (const figure of ["unetMs", "stepMs", "imageMs", "linaImageMs"]) {
    const s = r[figure];
    assert.ok(s.runs >= 1 && s.min > 0 && s.min <= s.median && s.median <= s.max, `${figure}: ${JSON.stringify(s)}`);
  }
  assert.equal(r.onnxRuntimeWeb, undefined, "no peer without ?ort=");
  await page.close();
});

test("through the API: a truncated weight file and a CSG with an unknown node are errors, and a lost device recovers", { timeout: SLOW * 3 }, async () => {
  // Any page of the origin will do to import the module from; this one loads nothing.
  const page = await openPage("lina.js");
  const outcome = await page.evaluate(async (paths) => {
    const { loadModel, DEFAULT_MODEL_URL } = await import("./lina.js");
    const files = {};
    for (const path of paths) {
      const blob = await (await fetch(DEFAULT_MODEL_URL + path)).blob();
      // A download cut short: half of the UNet's weights.
      files[path] = path.startsWith("unet/diffusion") ? blob.slice(0, blob.size / 2) : blob;
    }
    // What a rejection says, and its code: programs branch on the code.
    const failure = (e) => ({ code: e.code, message: e.message });
    const out = {};
    out.truncated = await loadModel({ files }).then(() => "loaded", failure);

    // WebGPU even on SwiftShader, where "auto" would pick the CPU backend: its device is lost.
    const model = await loadModel({ backend: "webgpu" });
    const options = { prompt: "a red ball on a small mirror", steps: 2 };
    const csg = {
      version: 1,
      nodes: [{ id: "ball", class: "ball", colour: "red" }],
      relations: [{ subject: "ball", predicate: "on", object: "mirror" }],
    };
    out.unknownNode = await model
      .generate({ ...options, plan: { nodeWeight: 1 }, csg })
      .then(() => "generated", failure);
    // A plan key LINA no longer has (the repairs moved to the probe) is refused, named.
    out.oldPlanKey = await model
      .generate({ ...options, plan: { repairStrength: 0.5 } })
      .then(() => "generated", failure);

    const first = await model.generate(options);
    await model.__loseDeviceForTesting();
    out.lost = await model.generate(options).then(() => "generated", failure);
    await model.load({ backend: "webgpu" });
    const again = await model.generate(options);
    out.recovered = first.rgba.every((v, i) => v === again.rgba[i]);
    model.dispose();
    return out;
  }, DEFAULT_MODEL_FILES);
  assert.equal(outcome.truncated.code, "weight_file", outcome.truncated.message);
  assert.match(outcome.truncated.message, /unet\/diffusion_pytorch_model\.safetensors/);
  assert.equal(outcome.unknownNode.code, "invalid_input", outcome.unknownNode.message);
  assert.match(outcome.unknownNode.message, /unknown node "mirror"/);
  assert.equal(outcome.oldPlanKey.code, "invalid_input", outcome.oldPlanKey.message);
  assert.match(outcome.oldPlanKey.message, /repairStrength/);
  // "device_lost" where the readback itself finds the device gone; "device" where a failure
  // recorded before it (wgpu's lost-device or error callback) is what reports the loss.
  assert.ok(["device_lost", "device"].includes(outcome.lost.code), `${outcome.lost.code}: ${outcome.lost.message}`);
  assert.match(outcome.lost.message, /lost.*load the model again/);
  assert.equal(outcome.recovered, true);
  await page.close();
});

// axe-core's rules in the page, in a given state: the serious and critical violations, each
// as "rule: the elements it found".
const AXE = fileURLToPath(new URL("./node_modules/axe-core/axe.min.js", import.meta.url));
async function axeViolations(page, state) {
  if (!(await page.evaluate(() => "axe" in window))) await page.addScriptTag({ path: AXE });
  const violations = await page.evaluate(async () => {
    const { violations } = await window.axe.run(document, { resultTypes: ["violations"] });
    return violations
      .filter((v) => v.impact === "serious" || v.impact === "critical")
      .map((v) => `${v.id} (${v.impact}): ${v.nodes.map((n) => n.target.join(" ")).join(", ")}`);
  });
  return violations.map((v) => `${state}: ${v}`);
}

// Presses Tab (Shift+Tab with `back`) until the focused element matches `selector`: the
// keyboard's way to a control.
async function tabTo(page, selector, { back = false, most = 60 } = {}) {
  for (let i = 0; i < most; i++) {
    if (await page.evaluate((s) => document.activeElement?.matches(s) ?? false, selector)) return;
    await page.keyboard.press(back ? "Shift+Tab" : "Tab");
  }
  throw new Error(`${most} presses of Tab never reached ${selector}`);
}

test("the page paints at once, fits every width, passes axe-core in its main states, and works from the keyboard alone", { timeout: SLOW * 3 }, async () => {
  const page = await browser.newPage();
  page.on("pageerror", (e) => console.error(`[page] ${e.message}`));
  await page.goto(base);
  // Before the model arrives: painted, and the prompt can be edited.
  const paint = await page.evaluate(
    () =>
      new Promise((resolve) => {
        const seen = performance.getEntriesByName("first-contentful-paint")[0];
        if (seen) return resolve(seen.startTime);
        new PerformanceObserver((list, observer) => {
          observer.disconnect();
          resolve(list.getEntriesByName("first-contentful-paint")[0].startTime);
        }).observe({ type: "paint", buffered: true });
      }),
  );
  console.log(`first contentful paint: ${paint.toFixed(0)} ms`);
  assert.ok(paint < 1000, `first paint after ${paint} ms`);
  assert.equal(await page.locator("#prompt").isEditable(), true);
  const violations = await axeViolations(page, "loading");
  assert.match(await waitForStatus(page, /^Ready|rror/), /^Ready/);
  // The adapter, with advice where it is a software one (as SwiftShader or the CPU here).
  assert.match(await page.locator("#adapter-badge").textContent(), / · (software|GPU)$/);
  violations.push(...(await axeViolations(page, "loaded")));

  // Keyboard only: to the prompt, a prompt typed, Generate with Enter.
  await page.keyboard.press("Tab");
  await tabTo(page, "#prompt");
  await page.keyboard.press("Control+A");
  await page.keyboard.type("a blue cube on a table");
  await tabTo(page, "#steps");
  await page.keyboard.press("Control+A");
  await page.keyboard.type("2");
  await tabTo(page, "#generate", { back: true });
  await page.keyboard.press("Enter");
  assert.match(await waitForStatus(page, /^Done|rror/), /^Done/);
  violations.push(...(await axeViolations(page, "generated")));

  // The tabs from the keyboard: the selected tab is the list's one stop; the arrows move.
  await tabTo(page, '[role="tab"][aria-selected="true"]');
  for (const name of ["Scene graph", "Compare", "Diagnostics", "History", "Model"]) {
    await page.keyboard.press("ArrowRight");
    assert.equal(await page.getByRole("tab", { name, exact: true }).getAttribute("aria-selected"), "true");
    violations.push(...(await axeViolations(page, `${name} tab`)));
  }
  await page.keyboard.press("Home");
  violations.push(...(await axeViolations(page, "LINA tab")));
  // A plan preset chosen with the arrows of its radio group.
  await tabTo(page, 'input[name="preset"]');
  await page.keyboard.press("ArrowRight");
  assert.equal(await page.getByRole("radio", { name: "Suggested" }).isChecked(), true);

  // An error shown: an empty prompt is refused beside the prompt, and nothing runs.
  await page.getByLabel("Prompt", { exact: true }).fill("   ");
  await page.getByRole("button", { name: "Generate" }).click();
  assert.match(await page.locator("#prompt-error").textContent(), /Write a prompt first/);
  assert.equal(await page.getByLabel("Prompt", { exact: true }).getAttribute("aria-invalid"), "true");
  violations.push(...(await axeViolations(page, "error shown")));
  await page.getByLabel("Prompt", { exact: true }).fill("x".repeat(2001));
  await page.getByRole("button", { name: "Generate" }).click();
  assert.match(await page.locator("#prompt-error").textContent(), /2001 characters long; at most 2000/);
  await page.getByLabel("Prompt", { exact: true }).fill("a blue cube on a table");
  assert.deepEqual(violations, []);

  // Every width: nothing wider than the window; a screenshot of each for the docs.
  for (const width of [390, 768, 960, 1280, 1920]) {
    await page.setViewportSize({ width, height: 900 });
    await page.evaluate(() => window.scrollTo(0, 0));
    const { scroll, inner } = await page.evaluate(() => ({ scroll: document.documentElement.scrollWidth, inner: innerWidth }));
    assert.ok(scroll <= inner, `at ${width} px the page is ${scroll} px wide`);
    await page.screenshot({ path: join(ARTIFACTS, `page-${width}.png`) });
  }
  await page.close();
});

test("the history keeps 200 results across a reload, restores one, says why a stale one cannot be, and survives a full quota", { timeout: SLOW * 3 }, async () => {
  // A context of its own: its pages share one storage, as a browser's tabs do.
  const context = await browser.newContext();
  const page = await context.newPage();
  page.on("pageerror", (e) => console.error(`[page] ${e.message}`));
  await page.goto(base);
  assert.match(await waitForStatus(page, /^Ready|rror/), /^Ready/);
  await openTab(page, "History");
  await page.getByRole("button", { name: "Clear history" }).click();
  await page.waitForFunction(() => document.querySelectorAll("#history-list li").length === 0);
  // 200 results stored through the page's own module (generating 200 images on SwiftShader
  // would take the whole run), each with its own seed.
  await page.evaluate(async () => {
    const { History, thumbnailOf } = await import("./history.js");
    const history = await History.open();
    const canvas = document.createElement("canvas");
    canvas.width = canvas.height = 64;
    const context = canvas.getContext("2d");
    for (let seed = 0; seed < 200; seed++) {
      context.fillStyle = `hsl(${seed * 7}, 70%, 50%)`;
      context.fillRect(0, 0, 64, 64);
      const png = await new Promise((resolve) => canvas.toBlob(resolve, "image/png"));
      const settings = { prompt: `stored ${seed}`, negativePrompt: "", seed, steps: 2, guidanceScale: 3 };
      await history.add({ time: Date.now(), png, thumbnail: await thumbnailOf(canvas), settings, verdicts: null });
    }
    // One written by an older page, with a setting this one does not know.
    const png = await new Promise((resolve) => canvas.toBlob(resolve, "image/png"));
    await history.add({ time: Date.now(), png, thumbnail: png, settings: { prompt: "old", seed: 1, steps: 2, guidanceScale: 3, sampler: "k_lms" } });
  });
  await page.reload();
  assert.match(await waitForStatus(page, /^Ready|rror/), /^Ready/);
  await openTab(page, "History");
  await page.waitForFunction(() => document.querySelectorAll("#history-list li").length === 201, null, { timeout: SLOW });
  for (const seed of [0, 199]) {
    assert.equal(await page.getByRole("button", { name: new RegExp(`^restore "stored ${seed}" \\(seed ${seed},`) }).count(), 1);
  }

  // The stale one says why, next to it; nothing changes and it stays.
  await page.getByRole("button", { name: /^restore "old"/ }).click();
  await page.waitForFunction(() => /Cannot restore: it has a setting this page no longer knows \("sampler"\)/.test(document.getElementById("history-list").textContent));
  assert.notEqual(await page.getByLabel("Prompt", { exact: true }).inputValue(), "old");
  // A good one brings its settings and image back.
  await page.getByRole("button", { name: /^restore "stored 17"/ }).click();
  assert.match(await waitForStatus(page, /^Restored|rror/), /^Restored/);
  assert.equal(await page.getByLabel("Prompt", { exact: true }).inputValue(), "stored 17");
  assert.equal(await page.getByLabel("Seed", { exact: true }).inputValue(), "17");

  // A generation lands in the history with its settings.
  await page.getByLabel("Prompt", { exact: true }).fill("a green cone");
  await page.getByRole("button", { name: "Generate" }).click();
  assert.match(await waitForStatus(page, /^Done|rror/), /^Done/);
  await page.waitForFunction(() => document.querySelectorAll("#history-list li").length === 202, null, { timeout: SLOW });
  assert.equal(await page.getByRole("button", { name: /^restore "a green cone"/ }).count(), 1);

  // A full quota: the result is not kept, the page says so, and every stored one stays. (A
  // second page of the same browser context: the same storage.)
  const full = await context.newPage();
  full.on("pageerror", (e) => console.error(`[page] ${e.message}`));
  await full.addInitScript(() => {
    IDBObjectStore.prototype.add = function () {
      throw new DOMException("The quota has been exceeded.", "QuotaExceededError");
    };
  });
  await page.close();
  await full.goto(base);
  assert.match(await waitForStatus(full, /^Ready|rror/), /^Ready/);
  await full.getByLabel("Steps", { exact: true }).fill("2");
  await full.getByRole("button", { name: "Generate" }).click();
  assert.match(await waitForStatus(full, /^Done|rror/), /^Done/);
  await full.waitForFunction(() => /storage for this page is full/.test(document.getElementById("history-status").textContent), null, { timeout: SLOW });
  await openTab(full, "History");
  assert.equal(await full.locator("#history-list li").count(), 202);
  await full.getByRole("button", { name: "Clear history" }).click();
  await full.waitForFunction(() => document.querySelectorAll("#history-list li").length === 0);
  await context.close();
});

// A LoRA file for the default UNet's first cross-attention query (kohya names, rank 1), or
// for a module no model has.
async function loraFile(module) {
  const unet = await readFile(join(WWW, "models/default/unet/diffusion_pytorch_model.safetensors"));
  const header = JSON.parse(unet.subarray(8, 8 + Number(unet.readBigUInt64LE(0))).toString());
  const name = Object.keys(header).find((k) => k.includes("attn2.to_q.weight"));
  const [rows, cols] = header[name].shape;
  const target = module ?? `lora_unet_${name.replace(/\.weight$/, "").replaceAll(".", "_")}`;
  const ramp = (n) => Float32Array.from({ length: n }, (_, i) => 0.05 * (i % 7));
  const tensors = [[`${target}.lora_down.weight`, [1, cols], ramp(cols)], [`${target}.lora_up.weight`, [rows, 1], ramp(rows)]];
  let offset = 0;
  const meta = {};
  for (const [key, shape, values] of tensors) {
    meta[key] = { dtype: "F32", shape, data_offsets: [offset, offset + values.byteLength] };
    offset += values.byteLength;
  }
  const json = Buffer.from(JSON.stringify(meta));
  const length = Buffer.alloc(8);
  length.writeBigUInt64LE(BigInt(json.length));
  return Buffer.concat([length, json, ...tensors.map(([, , values]) => Buffer.from(values.buffer))]);
}

test("the Model tab loads the model again with a LoRA at a scale; an embedding needs its trigger; a LoRA for another model is a clear error", { timeout: SLOW * 2 }, async () => {
  const page = await openPage("");
  assert.match(await waitForStatus(page, /^Ready|rror/), /^Ready/);
  await openTab(page, "Model");
  await page.getByLabel("LoRA files (.safetensors, kohya or diffusers names)").setInputFiles({ name: "ramp.safetensors", mimeType: "application/octet-stream", buffer: await loraFile() });
  await page.getByLabel("LoRA scale").fill("0.5");
  await page.getByRole("button", { name: "Load the model with these" }).click();
  assert.match(await waitForStatus(page, /^Ready|rror/), /^Ready/);
  assert.match(await page.locator("#model-facts").textContent(), /ramp\.safetensors at scale 0\.5/);
  await page.getByLabel("Steps", { exact: true }).fill("2");
  await page.getByRole("button", { name: "Generate" }).click();
  assert.match(await waitForStatus(page, /^Done|rror/), /^Done/);
  // Moving the scale with the LoRA loaded sets it on the loaded model: no load.
  const seen = requests.length;
  await page.getByLabel("LoRA scale").fill("1.5");
  await page.getByLabel("LoRA scale").dispatchEvent("change");
  assert.match(await waitForStatus(page, /^LoRA scale|rror/), /^LoRA scale 1\.5: set on the loaded model/);
  assert.match(await page.locator("#model-facts").textContent(), /ramp\.safetensors at scale 1\.5/);
  assert.equal(requests.slice(seen).filter((r) => r.includes(".safetensors")).length, 0, "nothing downloaded");
  await page.getByRole("button", { name: "Generate" }).click();
  assert.match(await waitForStatus(page, /^Done|rror/), /^Done/);

  // An embedding without its trigger: said beside the control, nothing loads.
  await page.getByLabel("Textual-inversion embedding (.safetensors)").setInputFiles({ name: "e.safetensors", mimeType: "application/octet-stream", buffer: await loraFile() });
  await page.getByRole("button", { name: "Load the model with these" }).click();
  assert.match(await page.locator("#adapters-error").textContent(), /trigger word/);
  assert.match(await statusText(page), /^Done/);
  await page.getByLabel("Textual-inversion embedding (.safetensors)").setInputFiles([]);

  // A LoRA whose module no layer has: the load fails naming it, and nothing needing a model
  // can be pressed.
  await page.getByLabel("LoRA files (.safetensors, kohya or diffusers names)").setInputFiles({ name: "other.safetensors", mimeType: "application/octet-stream", buffer: await loraFile("lora_unet_no_such_block") });
  await page.getByRole("button", { name: "Load the model with these" }).click();
  assert.match(await waitForStatus(page, /^Ready|no_such_block|rror/), /no_such_block/);
  assert.equal(await page.locator("#generate").isEnabled(), false);
  await page.close();
});

test("the Model tab loads a ControlNet beside the model: one for another model is a clear error, the control image, scale and guess-mode fields appear, a run needs the image and follows it (in guess mode too), and Remove runs the model alone", { timeout: SLOW * 2 }, async () => {
  const page = await openPage("");
  assert.match(await waitForStatus(page, /^Ready|rror/), /^Ready/);
  await openTab(page, "Model");
  await page.getByLabel("Or from a URL (a folder)").fill(`${base}fixtures/sd1_tiny/`);
  await page.getByRole("button", { name: "Load", exact: true }).click();
  assert.match(await waitForStatus(page, /^Ready|rror|not found/), /^Ready/);
  const load = page.getByRole("button", { name: "Load the ControlNet" });
  await load.click();
  assert.match(await page.locator("#controlnet-error").textContent(), /Choose a ControlNet folder/);
  await page.getByLabel("Or a ControlNet folder's URL (or an original ControlNet's .safetensors file's)").fill(`${base}fixtures/controlnet_sdxl_tiny/`);
  await load.click();
  assert.match(await waitForStatus(page, /loaded:|rror|differs/), /differs from the model's/);
  assert.equal(await page.getByLabel("Control image").isVisible(), false, "no ControlNet was loaded");
  await page.getByLabel("Or a ControlNet folder's URL (or an original ControlNet's .safetensors file's)").fill(`${base}fixtures/controlnet_tiny/`);
  await load.click();
  assert.match(await waitForStatus(page, /loaded:|rror|differs/), /loaded:/);
  assert.equal(await page.locator("#controlnet-error").textContent(), "");
  assert.ok(await page.getByLabel("Control image").isVisible(), "a ControlNet follows a control image");
  assert.ok(await page.getByLabel("ControlNet scale").isVisible());
  await page.getByLabel("Steps", { exact: true }).fill("2");
  await page.getByRole("button", { name: "Generate" }).click();
  assert.match(await waitForStatus(page, /^Done|rror|ControlNet/), /give each loaded ControlNet its control image/);
  await pick(page, "Control image", "edges.png", await twoHalvesPng(page, "black", "white"));
  await page.getByLabel("ControlNet scale").fill("0.8");
  await page.getByRole("button", { name: "Generate" }).click();
  assert.match(await waitForStatus(page, /^Done|rror/), /^Done/);
  await page.getByLabel("ControlNet guess mode").check();
  await page.getByRole("button", { name: "Generate" }).click();
  assert.match(await waitForStatus(page, /^Done|rror/), /^Done/);
  await page.getByRole("button", { name: "Remove the ControlNet" }).click();
  assert.match(await waitForStatus(page, /removed|rror/), /removed/);
  assert.equal(await page.getByLabel("Control image").isVisible(), false, "the model alone takes no control image");
  await page.close();
});

test("the Model tab loads a single-file checkpoint beside its family's folder, and says what is missing first", { timeout: SLOW }, async () => {
  const page = await openPage("");
  assert.match(await waitForStatus(page, /^Ready|rror/), /^Ready/);
  await openTab(page, "Model");
  const load = page.getByRole("button", { name: "Load the checkpoint" });
  await load.click();
  assert.match(await page.locator("#checkpoint-error").textContent(), /Choose the checkpoint file/);
  await page.getByLabel("The checkpoint (.safetensors)").setInputFiles({ name: "sd1-tiny.safetensors", mimeType: "application/octet-stream", buffer: await singleFileCheckpoint("sd1_tiny") });
  await load.click();
  assert.match(await page.locator("#checkpoint-error").textContent(), /holds no tokenizer/);
  assert.match(await statusText(page), /^Ready/, "nothing was loaded");
  await page.getByLabel("Or its family's folder from a URL").fill(`${base}fixtures/sd1_tiny/`);
  await load.click();
  assert.match(await waitForStatus(page, /^Ready|rror/), /^Ready/);
  assert.equal(await page.locator("#checkpoint-error").textContent(), "");
  await page.getByLabel("Steps", { exact: true }).fill("2");
  await page.getByRole("button", { name: "Generate" }).click();
  assert.match(await waitForStatus(page, /^Done|rror/), /^Done/);
  await page.close();
});
