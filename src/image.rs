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

    /// RGBA bytes for a canvas `ImageData`.
    pub fn to_rgba(&self) -> Vec<u8> {
        self.rgb
            .chunks_exact(3)
            .flat_map(|p| [p[0], p[1], p[2], 255])
            .collect()
    }

    #[cfg(not(target_arch = "wasm32"))]
    pub fn to_png(&self) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        {
            let mut encoder = png::Encoder::new(&mut out, self.width as u32, self.height as u32);
            encoder.set_color(png::ColorType::Rgb);
            encoder.set_depth(png::BitDepth::Eight);
            let mut writer = encoder
                .write_header()
                .map_err(|e| Error::Io(format!("png: {e}")))?;
            writer
                .write_image_data(&self.rgb)
                .map_err(|e| Error::Io(format!("png: {e}")))?;
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
