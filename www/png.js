// Settings travel inside the PNG files the page saves: an iTXt chunk (UTF-8 text, so any
// prompt fits) with the keyword "lina", holding JSON. Other tools show it as a text field.

const CRC_TABLE = Array.from({ length: 256 }, (_, n) => {
  let c = n;
  for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
  return c >>> 0;
});

function crc32(bytes) {
  let c = 0xffffffff;
  for (const b of bytes) c = CRC_TABLE[(c ^ b) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

const KEYWORD = "lina";

/** `png` (bytes) with `value`, as JSON, in an iTXt chunk placed before IEND. */
export function withMetadata(png, value) {
  const encoder = new TextEncoder();
  // keyword, NUL, not compressed (0), method 0, empty language tag, NUL, no translation, NUL.
  const data = new Uint8Array([
    ...encoder.encode(KEYWORD), 0, 0, 0, 0, 0,
    ...encoder.encode(JSON.stringify(value)),
  ]);
  const chunk = new Uint8Array(12 + data.length);
  const view = new DataView(chunk.buffer);
  view.setUint32(0, data.length);
  chunk.set(encoder.encode("iTXt"), 4);
  chunk.set(data, 8);
  view.setUint32(8 + data.length, crc32(chunk.subarray(4, 8 + data.length)));
  // IEND is the last 12 bytes of a PNG.
  const end = png.length - 12;
  const out = new Uint8Array(png.length + chunk.length);
  out.set(png.subarray(0, end));
  out.set(chunk, end);
  out.set(png.subarray(end), end + chunk.length);
  return out;
}

/** The value `withMetadata` stored in `png`, or null. */
export function readMetadata(png) {
  const view = new DataView(png.buffer, png.byteOffset, png.byteLength);
  const decoder = new TextDecoder();
  for (let at = 8; at + 12 <= png.length; ) {
    const length = view.getUint32(at);
    const type = decoder.decode(png.subarray(at + 4, at + 8));
    const data = png.subarray(at + 8, at + 8 + length);
    if (type === "iTXt" && decoder.decode(data.subarray(0, KEYWORD.length + 1)) === `${KEYWORD}\0`) {
      return JSON.parse(decoder.decode(data.subarray(KEYWORD.length + 5)));
    }
    at += 12 + length;
  }
  return null;
}
