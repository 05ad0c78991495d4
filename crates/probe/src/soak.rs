//! Soak runs: many images from one loaded model, watching whether memory creeps up. A leak
//! of one small buffer per image is invisible in any single run and fatal in a page left
//! open for hours; here it shows as growth between the first image and the last.

use lina::{Plan, generate};
use lina_csg::parse::parse;
use lina_runtime::device::{GpuMemory, gpu_memory};
use lina_runtime::error::Result;
use lina_runtime::pipeline::{CancelToken, GenerateOptions, NoHook, StableDiffusion};
use lina_runtime::schedulers::Timesteps;

/// Prompts the run cycles through: each category's relations, so that LINA's region masks,
/// effect nodes and token sets vary from image to image.
pub const PROMPTS: &[&str] = &[
    "a red ball on a small mirror",
    "a blue cube on a table, lit from the left",
    "a green cone to the left of a yellow ball",
    "a jar of sand on a table",
    "a person close to the water and in the sand",
    "a red cube in front of a blue cone",
];

/// Memory after one image.
#[derive(Debug, Clone, Copy, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Sample {
    /// 1-based.
    pub image: usize,
    /// The GPU allocator, where the device reports it.
    pub gpu: Option<GpuMemory>,
    /// The process's resident memory, where the platform reports it.
    pub resident_bytes: Option<u64>,
}

/// How one figure moved from the first image to the last.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Growth {
    pub what: &'static str,
    pub first: u64,
    pub last: u64,
}

impl Growth {
    /// Relative change, in percent of the first value.
    pub fn percent(&self) -> f64 {
        (self.last as f64 - self.first as f64) / self.first.max(1) as f64 * 100.0
    }
}

/// The samples of a run: after the first image, after the first round of prompts (the
/// baseline), every `every`-th image, and after the last.
///
/// The baseline is the end of the first round, not the first image: the GPU allocator
/// reserves pages per tensor shape, and each prompt has its own (its scene graph's regions,
/// its relation tokens), so the first image of each prompt grows the pool once. A leak is
/// what grows after every prompt has been seen.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Report {
    pub samples: Vec<Sample>,
    pub baseline_image: usize,
}

impl Report {
    /// Each figure both the baseline and the last sample have.
    pub fn growth(&self) -> Vec<Growth> {
        let first = self.samples.iter().find(|s| s.image == self.baseline_image);
        let (Some(first), Some(last)) = (first, self.samples.last()) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        if let (Some(a), Some(b)) = (first.gpu, last.gpu) {
            out.push(Growth {
                what: "GPU bytes in use",
                first: a.bytes_in_use,
                last: b.bytes_in_use,
            });
            out.push(Growth {
                what: "GPU bytes reserved",
                first: a.bytes_reserved,
                last: b.bytes_reserved,
            });
        }
        if let (Some(a), Some(b)) = (first.resident_bytes, last.resident_bytes) {
            out.push(Growth {
                what: "resident host memory",
                first: a,
                last: b,
            });
        }
        out
    }

    /// Whether no figure grew by more than `percent`.
    pub fn within(&self, percent: f64) -> bool {
        self.growth().iter().all(|g| g.percent() <= percent)
    }
}

/// Generates `images` images with LINA's default plan, `steps` steps each, cycling through
/// the prompts with seed = image number; samples memory as [`Report`] says, passing each
/// sample to `on_sample` as it is taken.
pub async fn run(
    pipe: &StableDiffusion,
    images: usize,
    steps: usize,
    every: usize,
    on_sample: &mut dyn FnMut(&Sample),
) -> Result<Report> {
    let plan = Plan::lina();
    let mut report = Report {
        samples: Vec::new(),
        baseline_image: PROMPTS.len().min(images),
    };
    for image in 1..=images {
        let prompt = PROMPTS[(image - 1) % PROMPTS.len()];
        let opts = GenerateOptions {
            prompt: prompt.to_string(),
            seed: image as u64,
            timesteps: Timesteps::Count(steps),
            ..GenerateOptions::default()
        };
        generate(
            pipe,
            &opts,
            &parse(prompt)?,
            &plan,
            &mut NoHook,
            &CancelToken::new(),
        )
        .await?;
        let wanted = [1, report.baseline_image, images].contains(&image);
        if wanted || image % every.max(1) == 0 {
            let sample = Sample {
                image,
                gpu: gpu_memory(pipe.device()),
                resident_bytes: resident_bytes(),
            };
            on_sample(&sample);
            report.samples.push(sample);
        }
    }
    Ok(report)
}

/// Resident set size from /proc (Linux, 4 KiB pages); `None` elsewhere.
fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}
