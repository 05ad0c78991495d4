//! `lina soak`: many images from one loaded model; fails if memory grew.

use std::time::Instant;

use lina::source::DirSource;
use lina::{Error, Result, StableDiffusion};

use super::{flags, parse, unknown_option};

/// Growth allowed between the first image and the last, in percent.
const ALLOWED_GROWTH: f64 = 5.0;

pub fn run(args: &[String]) -> Result<()> {
    let (mut model, mut images, mut steps, mut every, mut device) =
        (None, 1000usize, 4usize, 100usize, "cpu".to_string());
    for (flag, value) in flags(args)? {
        match flag {
            "--model" => model = Some(value.to_string()),
            "--images" => images = parse(flag, value)?,
            "--steps" => steps = parse(flag, value)?,
            "--every" => every = parse(flag, value)?,
            "--device" => device = value.to_string(),
            other => return Err(unknown_option(other)),
        }
    }
    let model = model.ok_or_else(|| Error::InvalidInput("--model is required".into()))?;
    if images == 0 {
        return Err(Error::InvalidInput("--images must be at least 1".into()));
    }
    pollster::block_on(async {
        let device = lina::device::by_name(&device).await?;
        let pipe = StableDiffusion::load(&DirSource::new(&model), &device)?;
        let started = Instant::now();
        println!("image  seconds  GPU allocs  GPU in use (B)  GPU reserved (B)  resident (B)");
        let show = |v: Option<u64>| v.map_or("-".into(), |v| v.to_string());
        let report = lina::soak::run(&pipe, images, steps, every, &mut |s| {
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
