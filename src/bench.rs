//! What the benchmarks measure, shared by `lina-cli bench` and the browser's benchmark page
//! (through `Pipeline.benchUnet`): one fixed classifier-free-guidance UNet call, and the
//! summary statistics every figure is reported with. The timing itself stays with the
//! callers (`Instant` natively, `performance.now()` in a worker): wasm has no clock of its own.

use burn::tensor::{Distribution, Tensor};

use crate::pipeline::StableDiffusion;
use crate::{Error, Result};

/// One UNet call as a guided sampling step makes it: batch 2 (unconditional and prompt
/// conditioning), latents at the model's native size, a mid-schedule timestep. The peers'
/// benchmarks (tools/bench_torch.py, the ONNX Runtime Web page) use the same shapes.
pub struct UnetCall {
    latents: Tensor<4>,
    context: Tensor<3>,
    /// The pooled text an SD 3 transformer takes beside its timestep.
    pooled: Option<Tensor<2>>,
}

impl UnetCall {
    pub const TIMESTEP: f64 = 500.0;

    pub fn new(pipe: &StableDiffusion) -> Result<Self> {
        let uncond = pipe.encode_prompt("", 0)?;
        let cond = pipe.encode_prompt("a red ball on a mirror", 0)?;
        let denoiser = pipe.denoiser();
        let (latent, channels) = (denoiser.sample_size(), denoiser.in_channels());
        let pooled = match (denoiser.mmdit(), uncond.pooled, cond.pooled) {
            (Some(_), Some(u), Some(c)) => Some(Tensor::cat(vec![u, c], 0)),
            _ => None,
        };
        let latents = Tensor::<4>::random(
            [2, channels, latent, latent],
            Distribution::Normal(0.0, 1.0),
            pipe.device(),
        );
        Ok(Self {
            latents,
            context: Tensor::cat(vec![uncond.context, cond.context], 0),
            pooled,
        })
    }

    /// The latents' shape, [2, C, h, w].
    pub fn shape(&self) -> [usize; 4] {
        self.latents.dims()
    }

    /// Runs the call and waits for its result (one scalar read back), so a timer around it
    /// sees the device's work and not only its queueing.
    pub async fn run(&self, pipe: &StableDiffusion) -> Result<()> {
        let none = crate::models::attention_control::CrossAttentionControl::default();
        let (out, _) = pipe.denoiser().forward_controlled(
            self.latents.clone(),
            Self::TIMESTEP,
            &self.context,
            self.pooled.as_ref(),
            None,
            &none,
            0,
            None,
        );
        let peak = crate::device::read_f32(out.abs().max(), "the UNet output").await?;
        if peak.iter().all(|v| v.is_finite()) {
            Ok(())
        } else {
            Err(Error::Device("the UNet output is not finite".into()))
        }
    }
}

/// Median, minimum and maximum of repeated measurements.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Summary {
    pub runs: usize,
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

impl Summary {
    /// `None` for no samples. The median of an even count is the mean of the middle two.
    pub fn of(samples: &[f64]) -> Option<Self> {
        let mut sorted: Vec<f64> = samples.to_vec();
        sorted.sort_by(f64::total_cmp);
        let n = sorted.len();
        let median = match n {
            0 => return None,
            _ if n % 2 == 1 => sorted[n / 2],
            _ => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
        };
        Some(Self {
            runs: n,
            median,
            min: sorted[0],
            max: sorted[n - 1],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_of_odd_and_even_counts() {
        let s = Summary::of(&[3.0, 1.0, 2.0]).unwrap();
        assert_eq!((s.runs, s.median, s.min, s.max), (3, 2.0, 1.0, 3.0));
        let s = Summary::of(&[4.0, 1.0, 3.0, 2.0]).unwrap();
        assert_eq!((s.median, s.min, s.max), (2.5, 1.0, 4.0));
        assert_eq!(Summary::of(&[]), None);
    }
}
