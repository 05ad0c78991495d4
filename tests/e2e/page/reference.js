// Helpers the end-to-end tests run inside the page (served at /helpers/): diffusers'
// reference tensors of a tiny fixture, and one generation compared with a reference image.

/** The f32 (or u8) tensors of `${folder}reference.safetensors`, by name. */
export async function referenceTensors(folder) {
  const file = new Uint8Array(await (await fetch(folder + "reference.safetensors")).arrayBuffer());
  const headerLength = Number(new DataView(file.buffer).getBigUint64(0, true));
  const header = JSON.parse(new TextDecoder().decode(file.subarray(8, 8 + headerLength)));
  return (name) => {
    const [start, end] = header[name].data_offsets;
    const bytes = file.slice(8 + headerLength + start, 8 + headerLength + end);
    return header[name].dtype === "U8" ? bytes : new Float32Array(bytes.buffer);
  };
}

/** An [h, w, 3] (or [h, w]: grey) u8 array as the `{ width, height, rgba }` images take. */
export function imageInput(values, width, height) {
  const rgba = new Uint8ClampedArray(width * height * 4);
  const channels = values.length / (width * height);
  for (let p = 0; p < width * height; p++) {
    for (let c = 0; c < 3; c++) rgba[p * 4 + c] = values[p * channels + (channels === 3 ? c : 0)];
    rgba[p * 4 + 3] = 255;
  }
  return { width, height, rgba };
}

/**
 * Loads `source` into a fresh model on the CPU backend and gives the RGBA values of a 2-step
 * image of `side` x `side` pixels (seed 1), for comparing two ways of loading one model.
 */
export async function drawnPixels(LinaModel, source, side) {
  const model = new LinaModel();
  try {
    await model.load({ backend: "cpu", ...source });
    const image = await model.generate({ prompt: "a red ball on a small mirror", steps: 2, seed: 1, width: side, height: side });
    return Array.from(image.rgba);
  } finally {
    model.dispose();
  }
}

/** Whether two images' values are all equal. */
export const samePixels = (a, b) => a.length === b.length && a.every((v, i) => v === b[i]);

/**
 * Loads `source` into a fresh model on the CPU backend, generates `options`, and gives the
 * largest channel difference, in 1/255, from `expected` (diffusers' image: [h, w, 3] in
 * [0, 1]), the image's warnings, the model's native size, and what `then(model)` returns.
 */
export async function drawAgainst(LinaModel, source, options, expected, then = async () => null) {
  const model = new LinaModel();
  try {
    await model.load({ backend: "cpu", ...source });
    const image = await model.generate(options);
    let worst = 0;
    for (let p = 0; p < image.width * image.height; p++) {
      for (let c = 0; c < 3; c++) worst = Math.max(worst, Math.abs(image.rgba[p * 4 + c] - expected[p * 3 + c] * 255));
    }
    return { worst, warnings: image.warnings, nativeSize: model.nativeSize, then: await then(model) };
  } finally {
    model.dispose();
  }
}
