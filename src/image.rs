//! Decoded images as 8-bit RGB, the way diffusers post-processes them.

use burn::tensor::Tensor;

use crate::error::{Error, Result};

#[derive(Debug, Clone, PartialEq)]
pub struct Image {
    pub width: usize,
    pub height: usize,
    /// Row-major RGB, 3 bytes per pixel.
    pub rgb: Vec<u8>,
}

impl Image {
    /// From a decoder output [1, 3, H, W] in [-1, 1]: x/2 + 1/2, clamped, times 255, rounded.
    pub async fn from_decoded(x: Tensor<4>) -> Result<Self> {
        let [b, c, height, width] = x.dims();
        if b != 1 || c != 3 {
            return Err(Error::InvalidInput(format!(
                "expected one RGB image, got shape [{b}, {c}, {height}, {width}]"
            )));
        }
        let unit = x.div_scalar(2.0).add_scalar(0.5).clamp(0.0, 1.0);
        // [1, 3, H, W] -> [H, W, 3] so the readback is already interleaved.
        let hwc: Tensor<3> = unit.reshape([3, height, width]).permute([1, 2, 0]);
        let values = crate::device::read_f32(hwc, "the image").await?;
        let rgb = values
            .iter()
            .map(|&v| (v * 255.0).round_ties_even() as u8)
            .collect();
        Ok(Self { width, height, rgb })
    }

    /// The image as a [1, 3, H, W] tensor in [-1, 1], as the VAE encoder takes it.
    pub fn to_tensor(&self, device: &burn::tensor::Device) -> Tensor<4> {
        self.tensor_of(|v| v as f32 / 127.5 - 1.0, device)
    }

    /// The image as a [1, 3, H, W] tensor in [0, 1], as a ControlNet takes it.
    pub fn to_unit_tensor(&self, device: &burn::tensor::Device) -> Tensor<4> {
        self.tensor_of(|v| v as f32 / 255.0, device)
    }

    fn tensor_of(&self, value: impl Fn(u8) -> f32, device: &burn::tensor::Device) -> Tensor<4> {
        let values: Vec<f32> = self.rgb.iter().map(|&v| value(v)).collect();
        let hwc = Tensor::<3>::from_data(
            burn::tensor::TensorData::new(values, [self.height, self.width, 3]),
            device,
        );
        hwc.permute([2, 0, 1])
            .reshape([1, 3, self.height, self.width])
    }

    /// The image as an inpainting mask ([`GenerateOptions::mask`](crate::pipeline::GenerateOptions::mask)):
    /// its red channel per pixel in [0, 1], so white (half or more) regenerates and black keeps.
    pub fn to_mask(&self) -> Vec<f32> {
        self.rgb
            .chunks_exact(3)
            .map(|p| p[0] as f32 / 255.0)
            .collect()
    }

    /// RGBA bytes for a canvas `ImageData`.
    pub fn to_rgba(&self) -> Vec<u8> {
        self.rgb
            .chunks_exact(3)
            .flat_map(|p| [p[0], p[1], p[2], 255])
            .collect()
    }

    /// Decodes an 8-bit RGB, RGBA, grey or grey-alpha PNG (alpha is dropped).
    pub fn from_png(bytes: &[u8]) -> Result<Self> {
        let bad = |e: String| Error::InvalidInput(format!("PNG: {e}"));
        let mut reader = png::Decoder::new(std::io::Cursor::new(bytes))
            .read_info()
            .map_err(|e| bad(e.to_string()))?;
        let size = reader
            .output_buffer_size()
            .ok_or_else(|| bad("too large".into()))?;
        let mut buf = vec![0; size];
        let info = reader
            .next_frame(&mut buf)
            .map_err(|e| bad(e.to_string()))?;
        if info.bit_depth != png::BitDepth::Eight {
            return Err(bad(format!(
                "{:?} bits per channel; 8 are supported",
                info.bit_depth
            )));
        }
        let channels = match info.color_type {
            png::ColorType::Rgb => 3,
            png::ColorType::Rgba => 4,
            png::ColorType::Grayscale => 1,
            png::ColorType::GrayscaleAlpha => 2,
            png::ColorType::Indexed => return Err(bad("indexed colour is not supported".into())),
        };
        let rgb = buf[..info.buffer_size()]
            .chunks_exact(channels)
            .flat_map(|p| match channels {
                1 | 2 => [p[0]; 3],
                _ => [p[0], p[1], p[2]],
            })
            .collect();
        Ok(Self {
            width: info.width as usize,
            height: info.height as usize,
            rgb,
        })
    }

    pub fn to_png(&self) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        {
            let mut encoder = png::Encoder::new(&mut out, self.width as u32, self.height as u32);
            encoder.set_color(png::ColorType::Rgb);
            encoder.set_depth(png::BitDepth::Eight);
            let mut writer = encoder
                .write_header()
                .map_err(|e| Error::io("png", std::io::Error::other(e)))?;
            writer
                .write_image_data(&self.rgb)
                .map_err(|e| Error::io("png", std::io::Error::other(e)))?;
        }
        Ok(out)
    }
}

impl Image {
    /// Tiles images of one size into a grid `columns` wide, with a `gap`-pixel white border.
    pub fn grid(images: &[Image], columns: usize, gap: usize) -> Result<Image> {
        let Some(first) = images.first() else {
            return Err(Error::InvalidInput(
                "a grid needs at least one image".into(),
            ));
        };
        let (w, h) = (first.width, first.height);
        if images.iter().any(|i| i.width != w || i.height != h) {
            return Err(Error::InvalidInput("grid images differ in size".into()));
        }
        let columns = columns.clamp(1, images.len());
        let rows = images.len().div_ceil(columns);
        let (gw, gh) = (columns * (w + gap) + gap, rows * (h + gap) + gap);
        let mut rgb = vec![255u8; gw * gh * 3];
        for (i, image) in images.iter().enumerate() {
            let (x0, y0) = (
                gap + (i % columns) * (w + gap),
                gap + (i / columns) * (h + gap),
            );
            for y in 0..h {
                let dst = ((y0 + y) * gw + x0) * 3;
                rgb[dst..dst + w * 3].copy_from_slice(&image.rgb[y * w * 3..(y + 1) * w * 3]);
            }
        }
        Ok(Image {
            width: gw,
            height: gh,
            rgb,
        })
    }
}

impl Image {
    /// The image resized as Pillow's `Image.resize((width, height), Image.LANCZOS)` resizes
    /// an RGB image, to the byte: diffusers' pipelines resize a PIL image so (FLUX.1
    /// Kontext's reference image, for one), and a resampler of our own choosing would move
    /// the encoded latents and so the image. Pillow resamples in two separable passes,
    /// columns then rows, each with a Lanczos-3 kernel widened by the downscale factor,
    /// weights normalised per output pixel and rounded to 22-bit fixed point, and each
    /// pass rounded and clamped to 8 bits.
    pub fn resized(&self, width: usize, height: usize) -> Result<Image> {
        if width == 0 || height == 0 || self.width == 0 || self.height == 0 {
            return Err(Error::InvalidInput(format!(
                "cannot resize a {}x{} image to {width}x{height}",
                self.width, self.height
            )));
        }
        if self.rgb.len() != self.width * self.height * 3 {
            return Err(Error::InvalidInput(format!(
                "a {}x{} image holds {} bytes, not {}",
                self.width,
                self.height,
                self.rgb.len(),
                self.width * self.height * 3
            )));
        }
        // Columns first, then rows, each pass only where its side changes.
        let columns = (width != self.width).then(|| {
            let taps = Taps::lanczos(self.width, width);
            let mut rgb = Vec::with_capacity(width * self.height * 3);
            for row in self.rgb.chunks_exact(self.width * 3) {
                for x in 0..width {
                    rgb.extend(taps.apply(x, |i, c| row[i * 3 + c]));
                }
            }
            Image {
                width,
                height: self.height,
                rgb,
            }
        });
        if height == self.height {
            return Ok(columns.unwrap_or_else(|| self.clone()));
        }
        let source = columns.as_ref().unwrap_or(self);
        let taps = Taps::lanczos(self.height, height);
        let stride = width * 3;
        let mut rgb = Vec::with_capacity(width * height * 3);
        for y in 0..height {
            for x in 0..width {
                rgb.extend(taps.apply(y, |i, c| source.rgb[i * stride + x * 3 + c]));
            }
        }
        Ok(Image { width, height, rgb })
    }
}

/// One pass's fixed-point weights: for each output position, the first input it reads and
/// one weight per input read.
struct Taps {
    first: Vec<usize>,
    weights: Vec<Vec<i32>>,
}

/// Pillow's fixed point for 8-bit images: 32 bits less 8 for the value and 2 for sums of
/// weights beyond [0, 1] (Lanczos has negative lobes).
const PRECISION_BITS: u32 = 22;

impl Taps {
    /// Lanczos-3 from `from` positions to `to`. Output position `o` is centred on input
    /// coordinate (o + 1/2)·scale; when shrinking, the kernel stretches by the scale so
    /// that every input contributes (antialiasing), as Pillow does.
    fn lanczos(from: usize, to: usize) -> Taps {
        fn sinc(x: f64) -> f64 {
            if x == 0.0 {
                1.0
            } else {
                (x * std::f64::consts::PI).sin() / (x * std::f64::consts::PI)
            }
        }
        let lanczos = |x: f64| match (-3.0..3.0).contains(&x) {
            true => sinc(x) * sinc(x / 3.0),
            false => 0.0,
        };
        // Pillow computes the scale from single-precision box edges.
        let scale = from as f32 as f64 / to as f64;
        let stretch = scale.max(1.0);
        let support = 3.0 * stretch;
        // Multiplied by the reciprocal, not divided, as Pillow does: the last bit can differ.
        let shrink = 1.0 / stretch;
        let mut taps = Taps {
            first: Vec::with_capacity(to),
            weights: Vec::with_capacity(to),
        };
        for o in 0..to {
            let centre = (o as f64 + 0.5) * scale;
            // C's truncating casts, as Pillow rounds these bounds.
            let start = ((centre - support + 0.5) as i64).max(0) as usize;
            let end = ((centre + support + 0.5) as i64).min(from as i64) as usize;
            let raw: Vec<f64> = (start..end)
                .map(|i| lanczos((i as f64 - centre + 0.5) * shrink))
                .collect();
            let total: f64 = raw.iter().sum();
            let unit = (1u32 << PRECISION_BITS) as f64;
            let weights = raw
                .iter()
                .map(|&w| {
                    let w = if total != 0.0 { w / total } else { w };
                    // Rounded half away from zero, then truncated, as Pillow's casts do.
                    match w < 0.0 {
                        true => (-0.5 + w * unit) as i32,
                        false => (0.5 + w * unit) as i32,
                    }
                })
                .collect();
            taps.first.push(start);
            taps.weights.push(weights);
        }
        taps
    }

    /// Output position `o`'s three channels, reading input position `i`'s channel `c`
    /// through `value(i, c)`. Summed in i64 where Pillow sums in 32 bits: the same values
    /// (its sums stay within 32 bits), with no overflow to guard against.
    fn apply(&self, o: usize, value: impl Fn(usize, usize) -> u8) -> [u8; 3] {
        let first = self.first[o];
        std::array::from_fn(|c| {
            let sum = self.weights[o]
                .iter()
                .enumerate()
                .fold(1i64 << (PRECISION_BITS - 1), |sum, (k, &w)| {
                    sum + value(first + k, c) as i64 * w as i64
                });
            (sum >> PRECISION_BITS).clamp(0, 255) as u8
        })
    }
}
