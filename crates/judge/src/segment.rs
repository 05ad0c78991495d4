//! The segmenter: a per-pixel network over each pixel's 5x5 neighbourhood.
//!
//! Input per pixel: the 5x5 patch's RGB in [-0.5, 0.5] (edges repeat the border) and the
//! pixel's height in the image in [-0.5, 0.5], 76 numbers. Two hidden layers of 48 and 32
//! ReLU units, then one score per [`Label`]. Trained offline by `tools/train_judge.py` on the
//! probe's rendered training split with its exact masks, under blur, noise and colour
//! jitter so that it holds on a model's soft, noisy images; the weights (about 24 KB) ship
//! in the crate.

use safetensors::SafeTensors;

use crate::label::Label;

const PATCH: usize = 5;
const INPUTS: usize = PATCH * PATCH * 3 + 1;

/// The embedded weights, written by `tools/train_judge.py`.
const WEIGHTS: &[u8] = include_bytes!("../judge.safetensors");

/// One dense layer, `out = in · w + b`, `w` row-major `[inputs, outputs]`.
struct Dense {
    w: Vec<f32>,
    b: Vec<f32>,
    inputs: usize,
    outputs: usize,
}

impl Dense {
    fn load(file: &SafeTensors, name: &str) -> Result<Self, String> {
        let read = |key: &str| -> Result<(Vec<f32>, Vec<usize>), String> {
            let t = file
                .tensor(key)
                .map_err(|e| format!("judge weights: {key}: {e}"))?;
            if t.dtype() != safetensors::Dtype::F32 {
                return Err(format!("judge weights: {key} is {:?}, not F32", t.dtype()));
            }
            let values = t
                .data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            Ok((values, t.shape().to_vec()))
        };
        let (w, shape) = read(&format!("{name}.weight"))?;
        let (b, bias_shape) = read(&format!("{name}.bias"))?;
        match (shape.as_slice(), bias_shape.as_slice()) {
            (&[inputs, outputs], &[n]) if n == outputs => Ok(Self {
                w,
                b,
                inputs,
                outputs,
            }),
            _ => Err(format!(
                "judge weights: {name} has shapes {shape:?} and {bias_shape:?}"
            )),
        }
    }

    fn forward(&self, x: &[f32], out: &mut Vec<f32>, relu: bool) {
        out.clear();
        out.extend_from_slice(&self.b);
        for (i, &xi) in x.iter().enumerate() {
            if xi == 0.0 {
                continue;
            }
            let row = &self.w[i * self.outputs..(i + 1) * self.outputs];
            for (o, w) in out.iter_mut().zip(row) {
                *o += xi * w;
            }
        }
        if relu {
            for o in out.iter_mut() {
                *o = o.max(0.0);
            }
        }
    }
}

/// The trained network.
pub struct Segmenter {
    layers: [Dense; 3],
}

/// Every pixel's most likely label and that label's probability.
#[derive(Debug, Clone)]
pub struct Segmentation {
    pub width: usize,
    pub height: usize,
    pub labels: Vec<Label>,
    pub confidence: Vec<f32>,
}

impl Segmentation {
    pub fn at(&self, x: usize, y: usize) -> Label {
        self.labels[y * self.width + x]
    }
}

impl Segmenter {
    /// The network that ships with the crate.
    pub fn embedded() -> Self {
        Self::from_safetensors(WEIGHTS).expect("the embedded judge weights load")
    }

    pub fn from_safetensors(bytes: &[u8]) -> Result<Self, String> {
        let file = SafeTensors::deserialize(bytes).map_err(|e| format!("judge weights: {e}"))?;
        let layers = [
            Dense::load(&file, "l1")?,
            Dense::load(&file, "l2")?,
            Dense::load(&file, "l3")?,
        ];
        let chained = layers[0].inputs == INPUTS
            && layers[1].inputs == layers[0].outputs
            && layers[2].inputs == layers[1].outputs
            && layers[2].outputs == Label::ALL.len();
        if !chained {
            return Err("judge weights: the layers' shapes do not chain".into());
        }
        Ok(Self { layers })
    }

    /// Labels every pixel of an RGB image (`width * height * 3` bytes, row-major).
    pub fn segment(&self, rgb: &[u8], width: usize, height: usize) -> Segmentation {
        assert_eq!(rgb.len(), width * height * 3, "an RGB image");
        let mut labels = Vec::with_capacity(width * height);
        let mut confidence = Vec::with_capacity(width * height);
        let (mut x_in, mut h1, mut h2, mut scores) =
            (vec![0.0; INPUTS], Vec::new(), Vec::new(), Vec::new());
        let r = (PATCH / 2) as isize;
        for y in 0..height {
            for x in 0..width {
                let mut k = 0;
                for dy in -r..=r {
                    let sy = (y as isize + dy).clamp(0, height as isize - 1) as usize;
                    for dx in -r..=r {
                        let sx = (x as isize + dx).clamp(0, width as isize - 1) as usize;
                        for c in 0..3 {
                            x_in[k] = rgb[(sy * width + sx) * 3 + c] as f32 / 255.0 - 0.5;
                            k += 1;
                        }
                    }
                }
                x_in[k] = (y as f32 + 0.5) / height as f32 - 0.5;
                self.layers[0].forward(&x_in, &mut h1, true);
                self.layers[1].forward(&h1, &mut h2, true);
                self.layers[2].forward(&h2, &mut scores, false);
                let (best, top) = scores
                    .iter()
                    .enumerate()
                    .fold(
                        (0, f32::MIN),
                        |acc, (i, &s)| if s > acc.1 { (i, s) } else { acc },
                    );
                let total: f32 = scores.iter().map(|s| (s - top).exp()).sum();
                labels.push(Label::from_index(best).expect("one score per label"));
                confidence.push(1.0 / total);
            }
        }
        Segmentation {
            width,
            height,
            labels,
            confidence,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_that_do_not_fit_are_refused_with_the_reason() {
        assert!(
            Segmenter::from_safetensors(b"not a safetensors file")
                .err()
                .is_some_and(|e| e.starts_with("judge weights:"))
        );
        // A file with one layer missing names it.
        let w = vec![0u8; INPUTS * 48 * 4];
        let b = vec![0u8; 48 * 4];
        let file = safetensors::serialize(
            [
                (
                    "l1.weight",
                    safetensors::tensor::TensorView::new(
                        safetensors::Dtype::F32,
                        vec![INPUTS, 48],
                        &w,
                    )
                    .unwrap(),
                ),
                (
                    "l1.bias",
                    safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![48], &b)
                        .unwrap(),
                ),
            ],
            None,
        )
        .unwrap();
        let e = Segmenter::from_safetensors(&file).err().unwrap();
        assert!(e.contains("l2.weight"), "{e}");
    }

    #[test]
    fn a_flat_wall_reads_as_wall_and_a_flat_floor_as_floor() {
        let segmenter = Segmenter::embedded();
        let (w, h) = (16, 16);
        let mut rgb = Vec::new();
        for y in 0..h {
            for _ in 0..w {
                // The world's wall above its ground line (row 46 of 64), its floor below.
                rgb.extend_from_slice(if y < 11 {
                    &[236, 232, 220]
                } else {
                    &[120, 120, 128]
                });
            }
        }
        let s = segmenter.segment(&rgb, w, h);
        assert_eq!(s.at(3, 2), Label::Wall);
        assert_eq!(s.at(3, 14), Label::Floor);
        assert!(s.confidence.iter().all(|&c| c > 0.0 && c <= 1.0));
    }
}
