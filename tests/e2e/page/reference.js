// Helpers the end-to-end tests run inside the page (served at /helpers/): diffusers'
// reference tensors of a tiny fixture, and one generation compared with a reference image.

/** The f32 tensors of `${folder}reference.safetensors`, by name. */
export async function referenceTensors(folder) {
  const file = new Uint8Array(await (await fetch(folder + "reference.safetensors")).arrayBuffer());
  const headerLength = Number(new DataView(file.buffer).getBigUint64(0, true));
  const header = JSON.parse(new TextDecoder().decode(file.subarray(8, 8 + headerLength)));
  return (name) => {
    const [start, end] = header[name].data_offsets;
    return new Float32Array(file.slice(8 + headerLength + start, 8 + headerLength + end).buffer);
  };
}

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
