//! Shared helpers for the native integration tests: fixtures, reference tensors, devices.
#![allow(dead_code)]

use std::path::PathBuf;

use burn::tensor::{Device, Tensor};
use safetensors::{Dtype, SafeTensors};

/// The embedded default model's folder.
pub const DEFAULT_MODEL: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/www/models/default");

/// The shared f32 wgpu device when LINA_TEST_GPU=1 (CI sets it, on lavapipe); otherwise
/// `None`, having said that the caller's test is skipped and why.
pub fn gpu_device() -> Option<Device> {
    if std::env::var("LINA_TEST_GPU").as_deref() != Ok("1") {
        eprintln!("skipped: needs the wgpu backend (set LINA_TEST_GPU=1 with a Vulkan driver)");
        return None;
    }
    Some(
        pollster::block_on(lina_runtime::device::gpu())
            .expect("LINA_TEST_GPU=1 but no wgpu adapter"),
    )
}

pub fn fixture(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(path)
}

pub fn read_fixture(path: &str) -> Vec<u8> {
    std::fs::read(fixture(path)).unwrap_or_else(|e| panic!("fixture {path}: {e}"))
}

/// Reference tensors written by tools/make_fixtures.py.
pub struct Reference {
    bytes: Vec<u8>,
}

impl Reference {
    pub fn open(model: &str) -> Self {
        Self::file(&format!("{model}/reference.safetensors"))
    }

    /// Any reference safetensors file under tests/fixtures.
    pub fn file(path: &str) -> Self {
        Self {
            bytes: read_fixture(path),
        }
    }

    /// A reference safetensors file anywhere.
    pub fn at(path: &std::path::Path) -> Self {
        Self {
            bytes: std::fs::read(path)
                .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display())),
        }
    }

    pub fn f32(&self, name: &str) -> (Vec<usize>, Vec<f32>) {
        let st = SafeTensors::deserialize(&self.bytes).unwrap();
        let t = st
            .tensor(name)
            .unwrap_or_else(|_| panic!("reference has no {name}"));
        assert_eq!(t.dtype(), Dtype::F32, "{name}");
        let v = t
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        (t.shape().to_vec(), v)
    }

    pub fn i64(&self, name: &str) -> (Vec<usize>, Vec<i64>) {
        let st = SafeTensors::deserialize(&self.bytes).unwrap();
        let t = st
            .tensor(name)
            .unwrap_or_else(|_| panic!("reference has no {name}"));
        assert_eq!(t.dtype(), Dtype::I64, "{name}");
        let v = t
            .data()
            .chunks_exact(8)
            .map(|b| i64::from_le_bytes(b.try_into().unwrap()))
            .collect();
        (t.shape().to_vec(), v)
    }

    pub fn u8(&self, name: &str) -> Vec<u8> {
        let st = SafeTensors::deserialize(&self.bytes).unwrap();
        let t = st
            .tensor(name)
            .unwrap_or_else(|_| panic!("reference has no {name}"));
        assert_eq!(t.dtype(), Dtype::U8, "{name}");
        t.data().to_vec()
    }

    pub fn tensor<const D: usize>(&self, name: &str, device: &Device) -> Tensor<D> {
        let (shape, values) = self.f32(name);
        let shape: [usize; D] = shape.try_into().expect("rank");
        Tensor::from_data(burn::tensor::TensorData::new(values, shape), device)
    }
}

pub fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data().try_to_vec::<f32>().unwrap()
}

pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// The largest difference relative to the reference's largest magnitude: how far a whole
/// output is from the reference, whatever its scale.
pub fn relative_diff(ours: &[f32], theirs: &[f32]) -> f32 {
    let scale = theirs.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-12);
    max_abs_diff(ours, theirs) / scale
}

/// The devices parity tests run on: the CPU backend always; the wgpu backend (lavapipe or a
/// real GPU) when LINA_TEST_GPU=1, which CI sets after installing mesa-vulkan-drivers.
pub fn test_devices() -> Vec<(&'static str, Device)> {
    let mut devices = vec![("cpu", lina_runtime::device::cpu())];
    if std::env::var("LINA_TEST_GPU").as_deref() == Ok("1") {
        let gpu = pollster::block_on(lina_runtime::device::gpu())
            .expect("LINA_TEST_GPU=1 but no wgpu adapter");
        devices.push(("wgpu", gpu));
    } else {
        eprintln!("note: wgpu parity skipped (set LINA_TEST_GPU=1 with a Vulkan driver to run it)");
    }
    devices
}

/// A model folder with the files under `prefix` (such as `"unet/"`) taken from another
/// folder: a fixture that differs from another in one component.
pub struct Overlay {
    pub base: lina_runtime::source::DirSource,
    pub over: lina_runtime::source::DirSource,
    pub prefix: &'static str,
}

impl Overlay {
    pub fn new(base: &str, over: &str, prefix: &'static str) -> Self {
        Self {
            base: lina_runtime::source::DirSource::new(fixture(base)),
            over: lina_runtime::source::DirSource::new(fixture(over)),
            prefix,
        }
    }
}

impl lina_runtime::source::FileSource for Overlay {
    fn read(&self, path: &str) -> lina_runtime::Result<Option<Vec<u8>>> {
        if path.starts_with(self.prefix) {
            self.over.read(path)
        } else {
            self.base.read(path)
        }
    }
}

/// The largest difference, in 1/255 steps, between our 8-bit pixels and a reference image
/// in [0, 1] (diffusers' `output_type="np"`).
pub fn worst_pixel(ours: &[u8], theirs: &[f32]) -> f32 {
    assert_eq!(ours.len(), theirs.len(), "image sizes differ");
    ours.iter()
        .zip(theirs)
        .map(|(&a, &b)| (a as f32 - b * 255.0).abs())
        .fold(0.0, f32::max)
}

/// The largest difference of one 8-bit value between two byte images of the same size.
pub fn byte_diff(a: &[u8], b: &[u8]) -> u8 {
    assert_eq!(a.len(), b.len(), "image sizes differ");
    a.iter().zip(b).map(|(x, y)| x.abs_diff(*y)).max().unwrap()
}

/// The largest difference of one colour value between two images of the same size.
pub fn image_diff(a: &lina_runtime::image::Image, b: &lina_runtime::image::Image) -> u8 {
    assert_eq!(
        (a.width, a.height),
        (b.width, b.height),
        "image sizes differ"
    );
    byte_diff(&a.rgb, &b.rgb)
}

/// The files of a fixture model folder, path by path, for tests that edit some of them.
pub fn model_files(model: &str) -> Vec<(String, Vec<u8>)> {
    let root = fixture(model);
    let mut files = Vec::new();
    let folders = [
        "tokenizer",
        "tokenizer_2",
        "tokenizer_3",
        "text_encoder",
        "text_encoder_2",
        "text_encoder_3",
        "unet",
        "transformer",
        "vae",
        "scheduler",
    ];
    // SDXL's and SD 3's further tokenizers and encoders (and SD 3's transformer in the
    // UNet's place) only where the model has them.
    for folder in folders.into_iter().filter(|f| root.join(f).is_dir()) {
        for entry in std::fs::read_dir(root.join(folder)).unwrap() {
            let path = entry.unwrap().path();
            let name = format!("{folder}/{}", path.file_name().unwrap().to_str().unwrap());
            files.push((name, std::fs::read(&path).unwrap()));
        }
    }
    files.sort();
    files
}

/// Tensors by name: shape and f32 values.
pub type F32Tensors = std::collections::BTreeMap<String, (Vec<usize>, Vec<f32>)>;

/// A safetensors file's f32 tensors (others, such as an i64 `position_ids`, left out).
pub fn f32_tensors(bytes: &[u8]) -> F32Tensors {
    let file = SafeTensors::deserialize(bytes).unwrap();
    file.tensors()
        .into_iter()
        .filter(|(_, t)| t.dtype() == Dtype::F32)
        .map(|(name, t)| {
            let v = t
                .data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            (name, (t.shape().to_vec(), v))
        })
        .collect()
}

/// A safetensors file of f32 tensors.
pub fn f32_safetensors(tensors: &F32Tensors) -> Vec<u8> {
    let bytes: Vec<(&str, &[usize], Vec<u8>)> = tensors
        .iter()
        .map(|(n, (s, v))| {
            (
                n.as_str(),
                &s[..],
                v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            )
        })
        .collect();
    safetensors::serialize(
        bytes.iter().map(|(n, s, b)| {
            (
                *n,
                safetensors::tensor::TensorView::new(Dtype::F32, s.to_vec(), b).unwrap(),
            )
        }),
        None,
    )
    .unwrap()
}

/// One generation under a LINA plan, run to its end: `hook` runs after the plan's hooks.
pub fn lina_run(
    pipe: &lina_runtime::pipeline::StableDiffusion,
    opts: &lina_runtime::pipeline::GenerateOptions,
    csg: &lina_csg::Csg,
    plan: &lina::Plan,
    hook: &mut dyn lina_runtime::pipeline::StepHook,
) -> lina_runtime::error::Result<lina::Intervened> {
    pollster::block_on(lina::generate(
        pipe,
        opts,
        csg,
        plan,
        hook,
        &lina_runtime::pipeline::CancelToken::new(),
    ))
}

/// What LINA's hook must do to a transformer's attention (SD 3's, FLUX's), checked on a batch
/// of two rows whose second the control acts on. `call` runs the model under a control;
/// `plain` is its output without one; the text has `tokens` places and the latents `grid`.
/// Recording changes nothing and gives per-token maps over the grid that sum to 1 over the
/// tokens; a zero bias changes nothing; a bias of +4 toward `token` in the left half of the
/// image raises its attention there and moves only the controlled row.
pub fn assert_the_attention_takes_the_control(
    call: impl Fn(
        &lina_runtime::models::attention_control::CrossAttentionControl,
    ) -> (
        Tensor<4>,
        Option<lina_runtime::models::attention_control::AttentionRecord>,
    ),
    plain: &[f32],
    tokens: usize,
    [h, w]: [usize; 2],
    token: usize,
) {
    use lina_runtime::models::attention_control::CrossAttentionControl;
    let device = lina_runtime::device::cpu();
    let (out, record) = call(&CrossAttentionControl {
        bias: None,
        record: true,
    });
    assert!(
        max_abs_diff(&values(out), plain) < 1e-5,
        "recording moved the output"
    );
    let record = record.expect("a record");
    assert_eq!(record.dims(), [tokens, h, w]);
    let sums = values(record.clone().sum_dim(0));
    assert!(sums.iter().all(|s| (s - 1.0).abs() < 1e-4), "{sums:?}");

    let (out, _) = call(&CrossAttentionControl {
        bias: Some(Tensor::<3>::zeros([tokens, h, w], &device)),
        record: false,
    });
    assert!(
        max_abs_diff(&values(out), plain) < 1e-5,
        "a zero bias moved the output"
    );

    let mut left = vec![0f32; tokens * h * w];
    for y in 0..h {
        for x in 0..w / 2 {
            left[token * h * w + y * w + x] = 4.0;
        }
    }
    let bias = Tensor::<3>::from_data(burn::tensor::TensorData::new(left, [tokens, h, w]), &device);
    let (out, biased) = call(&CrossAttentionControl {
        bias: Some(bias),
        record: true,
    });
    let share = |record: &Tensor<3>| {
        let map = values(record.clone().narrow(0, token, 1).narrow(2, 0, w / 2));
        map.iter().sum::<f32>() / map.len() as f32
    };
    let (before, after) = (share(&record), share(&biased.expect("a record")));
    assert!(
        after > 2.0 * before,
        "token {token}'s left-half share {before} -> {after}"
    );
    let out = values(out);
    let half = out.len() / 2;
    assert!(
        max_abs_diff(&out[..half], &plain[..half]) < 1e-5,
        "the other row moved"
    );
    assert!(
        max_abs_diff(&out[half..], &plain[half..]) > 1e-3,
        "the controlled row did not move"
    );
}

/// The plans that act on every model LINA runs on: region-controlled attention, prompt-space
/// guidance, the warped schedule; what a test adds is checked with them.
pub fn transformer_plans() -> Vec<lina::Plan> {
    vec![
        lina::Plan {
            attention_strength: 4.0,
            attention_window: [0.0, 1.0],
            ..lina::Plan::default()
        },
        lina::Plan {
            prompt_strength: 3.0,
            prompt_window: [0.0, 1.0],
            ..lina::Plan::default()
        },
        lina::Plan {
            warp: 2.0,
            ..lina::Plan::default()
        },
    ]
}

/// LINA on `pipe`: the baseline plan draws the plain image bit for bit, and each of `plans`
/// describes what it did (or warps the schedule) and changes the image.
pub fn assert_lina_plans_act(
    pipe: &lina_runtime::pipeline::StableDiffusion,
    opts: &lina_runtime::pipeline::GenerateOptions,
    prompt: &str,
    plans: &[lina::Plan],
) {
    use lina_runtime::pipeline::{CancelToken, NoHook};
    let csg = lina_csg::parse::parse(prompt).unwrap();
    let run = |plan: &lina::Plan| lina_run(pipe, opts, &csg, plan, &mut NoHook).unwrap();
    let plain = pollster::block_on(pipe.generate(opts, &mut NoHook, &CancelToken::new())).unwrap();
    let baseline = run(&lina::Plan::default());
    assert_eq!(baseline.generated.image.rgb, plain.image.rgb);
    for plan in plans {
        let out = run(plan);
        assert!(!out.described.is_empty() || plan.warp != 1.0, "{plan:?}");
        assert_ne!(
            out.generated.image.rgb, plain.image.rgb,
            "{plan:?} changed nothing"
        );
    }
}
