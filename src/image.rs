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
        let values: Vec<f32> = self.rgb.iter().map(|&v| v as f32 / 127.5 - 1.0).collect();
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
