//! `lina soak`: many images from one loaded model; fails if memory grew.

use std::path::PathBuf;
use std::time::Instant;

use lina_runtime::source::DirSource;
use lina_runtime::{Error, Result, StableDiffusion};

use crate::common::{self, DeviceArg};

#[derive(clap::Args)]
pub struct Args {
    /// A diffusers-layout model folder.
    #[arg(long)]
    model: PathBuf,
    /// Images to generate, with LINA's default plan.
    #[arg(long, default_value_t = 1000, value_parser = common::positive)]
    images: usize,
    #[arg(long, default_value_t = 4)]
    steps: usize,
    /// Sample memory every this many images.
    #[arg(long, default_value_t = 100)]
    every: usize,
    #[command(flatten)]
    device: DeviceArg,
}

/// Growth allowed between the first image and the last, in percent.
const ALLOWED_GROWTH: f64 = 5.0;

pub fn run(args: Args) -> Result<()> {
    let Args {
        model,
        images,
        steps,
        every,
        device,
    } = args;
    pollster::block_on(async {
        let device = device.open().await?;
        let pipe = StableDiffusion::load(&DirSource::new(&model), &device)?;
        let started = Instant::now();
        println!("image  seconds  GPU allocs  GPU in use (B)  GPU reserved (B)  resident (B)");
        let show = |v: Option<u64>| v.map_or("-".into(), |v| v.to_string());
        let report = lina_probe::soak::run(&pipe, images, steps, every, &mut |s| {
            println!(
                "{:>5}  {:>7.1}  {:>10}  {:>14}  {:>16}  {:>12}",
                s.image,
                started.elapsed().as_secs_f64(),
                show(s.gpu.map(|g| g.allocations)),
                show(s.gpu.map(|g| g.bytes_in_use)),
                show(s.gpu.map(|g| g.bytes_reserved)),
                show(s.resident_bytes),
            );
        })
        .await?;
        let per_image = started.elapsed().as_secs_f64() / images as f64;
        println!(
            "{images} images, {steps} steps each, LINA's default plan, {per_image:.3} s per image"
        );
        let baseline = report.baseline_image;
        for g in report.growth() {
            println!(
                "{}: {} after image {baseline} (the first round of prompts), {} after the last ({:+.2}%)",
                g.what,
                g.first,
                g.last,
                g.percent()
            );
        }
        if report.within(ALLOWED_GROWTH) {
            println!(
                "memory at the end is within {ALLOWED_GROWTH}% of its value after image {baseline}"
            );
            Ok(())
        } else {
            Err(Error::Device(format!(
                "memory grew by more than {ALLOWED_GROWTH}% over the run: a leak"
            )))
        }
    })
}
