#![cfg(not(target_arch = "wasm32"))]
//! Leak check: a run of images on one loaded model leaves the GPU allocator where the first
//! round of prompts left it (`lina_probe::soak::Report` says why not the first image). The full soak (1000 images natively, 200 in the browser) is scripts/soak.sh.

mod common;

use lina_runtime::pipeline::StableDiffusion;
use lina_runtime::source::DirSource;

#[test]
fn after_a_round_of_prompts_more_images_leave_gpu_memory_where_it_was() {
    // The CPU backend has no allocator to watch.
    let Some(device) = common::gpu_device() else {
        return;
    };
    let pipe = StableDiffusion::load(&DirSource::new(common::DEFAULT_MODEL), &device).unwrap();
    let report = pollster::block_on(lina_probe::soak::run(&pipe, 12, 2, 6, &mut |_| {})).unwrap();
    let images: Vec<usize> = report.samples.iter().map(|s| s.image).collect();
    // The first image, the end of the first round of six prompts (the baseline), the end of
    // the second round (every prompt once more).
    assert_eq!(images, [1, 6, 12]);
    assert_eq!(report.baseline_image, lina_probe::soak::PROMPTS.len());
    let growth = report.growth();
    let in_use = growth
        .iter()
        .find(|g| g.what == "GPU bytes in use")
        .expect("wgpu reports its allocator");
    // The weights stay; everything else an image allocated is released.
    assert!(in_use.first > 0);
    for g in &growth {
        eprintln!(
            "{}: {} -> {} ({:+.2}%)",
            g.what,
            g.first,
            g.last,
            g.percent()
        );
    }
    assert!(
        growth
            .iter()
            .filter(|g| g.what.starts_with("GPU"))
            .all(|g| g.percent() <= 5.0),
        "{growth:?}"
    );
}
