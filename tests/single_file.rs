#![cfg(not(target_arch = "wasm32"))]
//! Single-file checkpoints in the original LDM layout (`src/single_file/`).
//!
//! The tiny SD 1.x and SD 2.x fixtures are written as single files by the names in
//! tests/fixtures/single_file/*.json, which tools/make_single_file.py checked against
//! diffusers' own converters; loaded so, they must draw exactly the image their diffusers
//! folders draw (SD 1.x, 2.x, SDXL and SD 3). The config inference is checked on the names
//! and shapes of full-size SD 1.5, SD 2.1, SDXL and SD 3.5 medium files against those
//! models' published configs.

mod common;

use std::collections::BTreeMap;

use common::{fixture, model_files, read_fixture};
use lina_runtime::models::controlnet::ControlNetConfig;
use lina_runtime::models::denoiser::ImageCondition;
use lina_runtime::pipeline::{CancelToken, GenerateOptions, NoHook, StableDiffusion, Warning};
use lina_runtime::schedulers::Timesteps;
use lina_runtime::single_file::{self, CHECKPOINT_FILE, Family};
use lina_runtime::source::{DirSource, MemorySource};
use lina_runtime::{Error, Result};
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};
use serde_json::Value;

/// `model`'s tensors as a single file, named by the committed list, with the extra tensors
/// such files carry (zeros).
fn single_file(model: &str) -> Vec<u8> {
    let map: Value =
        serde_json::from_slice(&read_fixture(&format!("single_file/{model}.json"))).unwrap();
    assemble(model, map["tensors"].as_array().unwrap(), &map["extras"])
}

/// `model`'s tensors under the names `entries` give them (`[original name, component,
/// [diffusers names], how?]`, as tests/fixtures/single_file/*.json lists them), with the
/// `extras` (name: shape) as zeros.
fn assemble(model: &str, entries: &[Value], extras: &Value) -> Vec<u8> {
    let files: BTreeMap<String, Vec<u8>> = model_files(model).into_iter().collect();
    let component = |name: &str| {
        let path = files
            .keys()
            .find(|p| p.starts_with(&format!("{name}/")) && p.ends_with(".safetensors"))
            .unwrap();
        SafeTensors::deserialize(&files[path]).unwrap()
    };
    let parts: BTreeMap<&str, SafeTensors> = [
        "unet",
        "transformer",
        "vae",
        "text_encoder",
        "text_encoder_2",
        "text_encoder_3",
    ]
    .into_iter()
    .filter(|c| files.keys().any(|p| p.starts_with(&format!("{c}/"))))
    .map(|c| (c, component(c)))
    .collect();
    let mut tensors: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = Vec::new();
    for entry in entries {
        let (ldm, comp, names) = (
            entry[0].as_str().unwrap(),
            entry[1].as_str().unwrap(),
            entry[2].as_array().unwrap(),
        );
        let st = &parts[comp];
        let mut bytes = Vec::new();
        let mut shape: Vec<usize> = Vec::new();
        let mut dtype = Dtype::F32;
        for name in names {
            let name = name.as_str().unwrap();
            // The fixtures' text encoders keep transformers 4's `text_model.` prefix.
            let view = st.tensor(name).unwrap();
            dtype = view.dtype();
            bytes.extend_from_slice(view.data());
            if shape.is_empty() {
                shape = view.shape().to_vec();
            } else {
                shape[0] += view.shape()[0];
            }
        }
        // The original VAE's attention projections are 1x1 convolutions.
        if ldm.contains("mid.attn_1.") && ldm.ends_with("weight") && shape.len() == 2 {
            shape.extend([1, 1]);
        }
        match entry.get(3).and_then(Value::as_str) {
            // OpenCLIP stores its projection the other way round.
            Some("transposed") => {
                bytes = transposed(&bytes, &shape, dtype.bitsize() / 8);
                shape.reverse();
            }
            // SD 3's final adaLN projections yield shift before scale.
            Some("swapped") => {
                let half = bytes.len() / 2;
                bytes.rotate_left(half);
            }
            _ => {}
        }
        tensors.push((ldm.to_string(), dtype, shape, bytes));
    }
    for (name, shape) in extras.as_object().unwrap() {
        let shape: Vec<usize> = shape
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d.as_u64().unwrap() as usize)
            .collect();
        let n: usize = shape.iter().product();
        tensors.push((name.clone(), Dtype::F32, shape, vec![0; n * 4]));
    }
    let views: Vec<(String, TensorView)> = tensors
        .iter()
        .map(|(n, d, s, b)| (n.clone(), TensorView::new(*d, s.clone(), b).unwrap()))
        .collect();
    safetensors::serialize(views, None).unwrap()
}

/// A row-major [rows, cols] matrix of `size`-byte elements as [cols, rows].
fn transposed(bytes: &[u8], shape: &[usize], size: usize) -> Vec<u8> {
    let [rows, cols] = shape[..] else {
        panic!("a matrix")
    };
    let mut out = vec![0; bytes.len()];
    for r in 0..rows {
        for c in 0..cols {
            let (from, to) = ((r * cols + c) * size, (c * rows + r) * size);
            out[to..to + size].copy_from_slice(&bytes[from..from + size]);
        }
    }
    out
}

/// The fixture's tokenizer and configs (no weights), with `checkpoint` as the model.
fn paired(model: &str, checkpoint: Vec<u8>, configs: bool) -> MemorySource {
    let mut source = MemorySource::new();
    for (path, bytes) in model_files(model) {
        let keep = path.starts_with("tokenizer") || (configs && path.ends_with(".json"));
        if keep {
            source.insert(path, bytes);
        }
    }
    source.insert(CHECKPOINT_FILE, checkpoint);
    source
}

fn folder(model: &str) -> MemorySource {
    let mut source = MemorySource::new();
    for (path, bytes) in model_files(model) {
        source.insert(path, bytes);
    }
    source
}

fn image(pipe: &StableDiffusion) -> Vec<u8> {
    image_of_side(pipe, 64)
}

fn image_of_side(pipe: &StableDiffusion, side: usize) -> Vec<u8> {
    let opts = GenerateOptions {
        prompt: "a red ball on a small mirror".into(),
        negative_prompt: "blurry".into(),
        seed: 5,
        timesteps: Timesteps::Count(3),
        width: Some(side),
        height: Some(side),
        ..GenerateOptions::default()
    };
    pollster::block_on(pipe.generate(&opts, &mut NoHook, &CancelToken::new()))
        .unwrap()
        .image
        .rgb
}

/// Fails with how many channel values differ and by how much, not with two dumps.
fn same_image(ours: &[u8], theirs: &[u8], model: &str) {
    assert_eq!(ours.len(), theirs.len(), "{model}: image sizes differ");
    let differ = ours.iter().zip(theirs).filter(|(a, b)| a != b).count();
    let worst = ours
        .iter()
        .zip(theirs)
        .map(|(a, b)| a.abs_diff(*b))
        .max()
        .unwrap_or(0);
    assert!(
        differ == 0,
        "{model}: the single file must draw the folder's image exactly; {differ} values differ, by up to {worst}"
    );
}

fn load(source: &MemorySource) -> Result<StableDiffusion> {
    StableDiffusion::load(source, &lina_runtime::device::cpu())
}

#[test]
fn tiny_sd1_sd2_sdxl_and_refiner_single_files_draw_their_diffusers_folders_images() {
    for model in ["sd1_tiny", "sd2_tiny", "sdxl_tiny", "sdxl_refiner_tiny"] {
        let from_file = load(&paired(model, single_file(model), true)).unwrap();
        let from_folder = load(&folder(model)).unwrap();
        assert!(
            from_file.vae_encoder().is_some(),
            "{model}: the file's VAE encoder loads too"
        );
        same_image(&image(&from_file), &image(&from_folder), model);
    }
}

/// The schedule markers v-prediction SDXL fine-tunes carry as empty tensors (NoobAI-XL's,
/// read by ComfyUI): `v_pred` makes the inferred schedule v-prediction, `ztsnr` rescales it
/// to zero terminal SNR with trailing spacing; neither is uploaded, and a file without them
/// keeps SDXL's epsilon schedule. The marked file draws what the folder draws with that
/// scheduler config, and a scheduler config beside the file wins over the markers.
#[test]
fn v_pred_and_ztsnr_markers_set_the_inferred_schedule() {
    let map: Value = serde_json::from_slice(&read_fixture("single_file/sdxl_tiny.json")).unwrap();
    let mut extras = map["extras"].clone();
    extras["v_pred"] = serde_json::json!([0]);
    extras["ztsnr"] = serde_json::json!([0]);
    let marked = assemble("sdxl_tiny", map["tensors"].as_array().unwrap(), &extras);
    // The tiny model's own configs (its shapes are not SDXL's defaults), but no scheduler's.
    let without_scheduler = |checkpoint: Vec<u8>| {
        let mut source = MemorySource::new();
        for (path, bytes) in model_files("sdxl_tiny") {
            let config = path.ends_with(".json") && !path.starts_with("scheduler/");
            if path.starts_with("tokenizer") || config {
                source.insert(path, bytes);
            }
        }
        source.insert(CHECKPOINT_FILE, checkpoint);
        source
    };
    let pipe = load(&without_scheduler(marked.clone())).unwrap();
    // The empty markers stream through a GPU upload too (with LINA_TEST_GPU=1).
    if let Some(gpu) = common::gpu_device() {
        let on_gpu = StableDiffusion::load(&without_scheduler(marked.clone()), &gpu).unwrap();
        assert!(on_gpu.scheduler_config().rescale_betas_zero_snr);
    }
    let config = pipe.scheduler_config();
    assert_eq!(config.prediction_type, "v_prediction");
    assert!(config.rescale_betas_zero_snr);
    assert_eq!(config.timestep_spacing, "trailing");
    let plain = load(&without_scheduler(single_file("sdxl_tiny"))).unwrap();
    assert_eq!(plain.scheduler_config().prediction_type, "epsilon");
    assert!(!plain.scheduler_config().rescale_betas_zero_snr);

    let mut source = folder("sdxl_tiny");
    let scheduler: Value = serde_json::from_slice(
        &model_files("sdxl_tiny")
            .into_iter()
            .find(|(p, _)| p == "scheduler/scheduler_config.json")
            .unwrap()
            .1,
    )
    .unwrap();
    let mut rescaled = scheduler.clone();
    rescaled["prediction_type"] = "v_prediction".into();
    rescaled["rescale_betas_zero_snr"] = true.into();
    rescaled["timestep_spacing"] = "trailing".into();
    source.insert(
        "scheduler/scheduler_config.json",
        rescaled.to_string().into_bytes(),
    );
    same_image(
        &image(&pipe),
        &image(&load(&source).unwrap()),
        "sdxl_tiny, marked",
    );

    let beside = load(&paired("sdxl_tiny", marked, true)).unwrap();
    assert_eq!(
        beside.scheduler_config().prediction_type,
        scheduler["prediction_type"].as_str().unwrap()
    );
}

#[test]
fn tiny_sd3_single_file_draws_its_diffusers_folders_image_with_and_without_t5() {
    // The tiny transformer's position table holds 48x48 px at most.
    let from_folder = image_of_side(&load(&folder("sd3_tiny")).unwrap(), 32);
    let from_file = load(&paired("sd3_tiny", single_file("sd3_tiny"), true)).unwrap();
    same_image(&image_of_side(&from_file, 32), &from_folder, "sd3_tiny");

    // A file without T5 (as StabilityAI's `sd3_medium_incl_clips` is) runs with zeros in its
    // place and says so; the folder without T5's weights does the same.
    let mut tensors = single_file_tensors("sd3_tiny");
    tensors.retain(|(n, _)| !n.starts_with("text_encoders.t5xxl."));
    let file = {
        let full = single_file("sd3_tiny");
        let st = SafeTensors::deserialize(&full).unwrap();
        let kept: Vec<(String, TensorView)> = tensors
            .iter()
            .map(|(n, _)| (n.clone(), st.tensor(n).unwrap()))
            .collect();
        safetensors::serialize(kept, None).unwrap()
    };
    let without = load(&paired("sd3_tiny", file, true)).unwrap();
    let mut no_t5 = MemorySource::new();
    for (path, bytes) in model_files("sd3_tiny") {
        if path != "text_encoder_3/model.safetensors" {
            no_t5.insert(path, bytes);
        }
    }
    let folder_without = load(&no_t5).unwrap();
    let opts = GenerateOptions {
        prompt: "a red ball on a small mirror".into(),
        seed: 5,
        timesteps: Timesteps::Count(3),
        width: Some(32),
        height: Some(32),
        ..GenerateOptions::default()
    };
    let run = |pipe: &StableDiffusion| {
        pollster::block_on(pipe.generate(&opts, &mut NoHook, &CancelToken::new())).unwrap()
    };
    let (a, b) = (run(&without), run(&folder_without));
    for done in [&a, &b] {
        assert!(
            matches!(&done.warnings[..], [Warning::TextEncoderSkipped { folder }] if folder == "text_encoder_3"),
            "{:?}",
            done.warnings
        );
    }
    same_image(&a.image.rgb, &b.image.rgb, "sd3_tiny without T5");
}

/// What the runtime infers from a committed shapes fixture: every name and shape of a
/// full-size single file.
/// flux_tiny's folder without its transformer's weights (and, unless `config`, its config),
/// with `checkpoint` as the transformer file beside it.
fn flux_beside(checkpoint: Vec<u8>, config: bool) -> MemorySource {
    let mut source = MemorySource::new();
    for (path, bytes) in model_files("flux_tiny") {
        let transformer = path.starts_with("transformer/");
        if !transformer || (config && path.ends_with(".json")) {
            source.insert(path, bytes);
        }
    }
    source.insert(CHECKPOINT_FILE, checkpoint);
    source
}

/// FLUX's transformer files hold nothing else: the folder gives the VAE, the text encoders,
/// their tokenizers and (where it has them) the configs. The tiny transformer as Black
/// Forest Labs' file names it, and as ComfyUI's (`model.diffusion_model.` before each name),
/// draws the folder's image exactly; without the folder's transformer config, the config
/// inferred from the shapes does too. A FLUX file's stray tensor is named.
#[test]
fn tiny_flux_single_files_draw_their_diffusers_folders_image() {
    let bfl = single_file("flux_tiny");
    let comfy = {
        let file = SafeTensors::deserialize(&bfl).unwrap();
        let views: Vec<(String, TensorView)> = file
            .tensors()
            .into_iter()
            .map(|(n, v)| (format!("model.diffusion_model.{n}"), v))
            .collect();
        safetensors::serialize(views, None).unwrap()
    };
    let from_folder = image_of_side(&load(&folder("flux_tiny")).unwrap(), 32);
    for (label, file, config) in [
        ("BFL's", bfl.clone(), true),
        ("ComfyUI's", comfy, true),
        ("BFL's, config inferred", bfl, false),
    ] {
        let pipe = load(&flux_beside(file, config)).unwrap();
        assert!(pipe.denoiser().flux().is_some(), "{label}");
        same_image(
            &image_of_side(&pipe, 32),
            &from_folder,
            &format!("flux_tiny, {label} file"),
        );
    }

    // A fused projection of no axes (a hostile header's) has no rows to cut: an error, not
    // a panic.
    let mut tensors = single_file_tensors("flux_tiny");
    for (name, shape) in &mut tensors {
        if name == "double_blocks.0.img_attn.qkv.weight" {
            shape.clear();
        }
    }
    let e = expect_err(load(&flux_beside(zeros(&tensors), true)));
    assert_eq!(e.code(), "weight_file", "{e}");
    assert!(e.to_string().contains("img_attn.qkv.weight"), "{e}");

    let mut tensors = single_file_tensors("flux_tiny");
    tensors.push(("double_blocks.0.img_attn.qkv_extra.weight".into(), vec![4]));
    let e = expect_err(load(&flux_beside(zeros(&tensors), true)));
    assert_eq!(e.code(), "weight_file", "{e}");
    let text = e.to_string();
    assert!(
        text.contains("a FLUX transformer") && text.contains("qkv_extra"),
        "{text}"
    );
}

/// FLUX.1 Fill's transformer file (BFL's `flux1-fill-dev.safetensors` layout: the same
/// names, wider `img_in`) beside a FLUX folder: the config inferred from its shapes takes
/// Fill's inputs, and it inpaints exactly as the Fill folder does.
#[test]
fn a_flux_fill_single_file_inpaints_as_its_folder() {
    let map: Value = serde_json::from_slice(&read_fixture("single_file/flux_tiny.json")).unwrap();
    let file = assemble(
        "flux_fill_tiny",
        map["tensors"].as_array().unwrap(),
        &map["extras"],
    );
    let from_file = load(&flux_beside(file, false)).unwrap();
    assert_eq!(from_file.image_condition(), ImageCondition::Fill);
    let cpu = lina_runtime::device::cpu();
    let source = common::Overlay::new("flux_tiny", "flux_fill_tiny", "transformer/");
    let from_folder = StableDiffusion::load(&source, &cpu).unwrap();
    let reference = common::Reference::open("flux_fill_tiny");
    let opts = GenerateOptions {
        prompt: "a red ball on a small mirror".into(),
        seed: 5,
        timesteps: Timesteps::Count(3),
        guidance_scale: 30.0,
        width: Some(48),
        height: Some(32),
        init_image: Some(lina_runtime::image::Image {
            width: 48,
            height: 32,
            rgb: reference.u8("card"),
        }),
        mask: Some(
            reference
                .u8("mask")
                .iter()
                .map(|&v| v as f32 / 255.0)
                .collect(),
        ),
        strength: 1.0,
        ..GenerateOptions::default()
    };
    let image = |pipe: &StableDiffusion| {
        pollster::block_on(pipe.generate(&opts, &mut NoHook, &CancelToken::new()))
            .unwrap()
            .image
            .rgb
    };
    same_image(&image(&from_file), &image(&from_folder), "flux_fill_tiny");
}

/// Every byte of PyTorch's two fp8 types (`tests/fixtures/fp8.json`, from
/// `tools/make_fixtures.py --only fp8`) as a weight file's tensor decodes to PyTorch's value.
#[test]
fn fp8_weights_decode_as_pytorch_reads_them() {
    let table: Value = serde_json::from_slice(&read_fixture("fp8.json")).unwrap();
    let bytes: Vec<u8> = (0..=255).collect();
    for (key, dtype) in [("e4m3fn", Dtype::F8_E4M3), ("e5m2", Dtype::F8_E5M2)] {
        let view = TensorView::new(dtype, vec![256], &bytes).unwrap();
        let file = safetensors::serialize(vec![("x".to_string(), view)], None).unwrap();
        let cpu = lina_runtime::device::cpu();
        let weights =
            lina_runtime::weights::Weights::from_bytes("fp8.safetensors", &file, &cpu).unwrap();
        let got = common::values(weights.root().tensor::<1>("x", [256]).unwrap());
        for (byte, (ours, theirs)) in got.iter().zip(table[key].as_array().unwrap()).enumerate() {
            let same = match theirs {
                Value::Null => ours.is_nan(),
                Value::String(inf) => {
                    *ours
                        == if inf == "inf" {
                            f32::INFINITY
                        } else {
                            f32::NEG_INFINITY
                        }
                }
                v => *ours == v.as_f64().unwrap() as f32,
            };
            assert!(
                same,
                "{key} byte {byte:#04x}: ours {ours}, PyTorch's {theirs}"
            );
        }
    }
}

/// Each finite e4m3fn value and its byte (`tests/fixtures/fp8.json`, PyTorch's values).
fn e4m3_codes() -> Vec<(f32, u8)> {
    let table: Value = serde_json::from_slice(&read_fixture("fp8.json")).unwrap();
    table["e4m3fn"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
        .filter_map(|(b, v)| Some((v.as_f64()? as f32, b as u8)))
        .collect()
}

/// The e4m3fn value nearest `x`, and its byte.
fn nearest_e4m3(codes: &[(f32, u8)], x: f32) -> (f32, u8) {
    *codes
        .iter()
        .min_by(|a, b| (a.0 - x).abs().total_cmp(&(b.0 - x).abs()))
        .unwrap()
}

/// A safetensors file of these tensors, each of its own dtype.
fn serialize_raw(tensors: &[(String, Dtype, Vec<usize>, Vec<u8>)]) -> Vec<u8> {
    let views: Vec<(String, TensorView)> = tensors
        .iter()
        .map(|(n, d, s, b)| (n.clone(), TensorView::new(*d, s.clone(), b).unwrap()))
        .collect();
    safetensors::serialize(views, None).unwrap()
}

/// flux_tiny's transformer file as f32 values, by name.
fn flux_tiny_values() -> Vec<(String, Vec<usize>, Vec<f32>)> {
    let file = single_file("flux_tiny");
    let values = common::f32_tensors(&file);
    values.into_iter().map(|(n, (s, v))| (n, s, v)).collect()
}

fn f32_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// FLUX files are often stored in fp8 (e4m3fn) to halve bf16's size: the tiny transformer's
/// weights rounded to e4m3fn as such a file draws exactly what the same rounded values draw
/// as f32, and differ from the full-precision image (the rounding is real).
#[test]
fn an_fp8_flux_transformer_file_draws_what_its_values_draw_in_f32() {
    let codes = e4m3_codes();
    let (mut fp8, mut rounded) = (Vec::new(), Vec::new());
    for (name, shape, values) in flux_tiny_values() {
        let (decoded, bytes): (Vec<f32>, Vec<u8>) =
            values.iter().map(|&v| nearest_e4m3(&codes, v)).unzip();
        fp8.push((name.clone(), Dtype::F8_E4M3, shape.clone(), bytes));
        rounded.push((name, Dtype::F32, shape, f32_bytes(&decoded)));
    }
    let from_fp8 = image_of_side(&load(&flux_beside(serialize_raw(&fp8), true)).unwrap(), 32);
    let from_f32 = image_of_side(
        &load(&flux_beside(serialize_raw(&rounded), true)).unwrap(),
        32,
    );
    same_image(&from_fp8, &from_f32, "flux_tiny in fp8");
    let full = image_of_side(&load(&folder("flux_tiny")).unwrap(), 32);
    assert_ne!(from_fp8, full, "rounding to e4m3fn changed nothing");
}

/// ComfyUI's "scaled" fp8 files store each matrix divided by a scale of its own, in e4m3fn,
/// with the scale beside it (`X.scale_weight`), a `scaled_fp8` marker and input scales the
/// runtime has no use for: such a file of the tiny transformer draws exactly what its
/// stored values times their scales draw in f32. A scale without its weight is a bad file.
#[test]
fn a_scaled_fp8_flux_file_draws_what_its_scaled_values_draw_in_f32() {
    let codes = e4m3_codes();
    let (mut scaled, mut reference) = (Vec::new(), Vec::new());
    for (name, shape, values) in flux_tiny_values() {
        let module = name
            .strip_suffix(".weight")
            .filter(|_| shape.len() == 2)
            .map(String::from);
        let scale = match module {
            Some(_) => values.iter().fold(0f32, |m, v| m.max(v.abs())) / 448.0,
            None => 1.0,
        };
        let (stored, bytes): (Vec<f32>, Vec<u8>) = values
            .iter()
            .map(|&v| nearest_e4m3(&codes, v / scale))
            .unzip();
        let decoded: Vec<f32> = stored.iter().map(|v| v * scale).collect();
        scaled.push((name.clone(), Dtype::F8_E4M3, shape.clone(), bytes));
        reference.push((name, Dtype::F32, shape, f32_bytes(&decoded)));
        if let Some(module) = &module {
            for suffix in ["scale_weight", "scale_input"] {
                let value = if suffix == "scale_weight" { scale } else { 1.0 };
                scaled.push((
                    format!("{module}.{suffix}"),
                    Dtype::F32,
                    vec![],
                    f32_bytes(&[value]),
                ));
            }
        }
    }
    scaled.push(("scaled_fp8".into(), Dtype::F8_E4M3, vec![0], vec![]));
    let from_scaled = image_of_side(
        &load(&flux_beside(serialize_raw(&scaled), true)).unwrap(),
        32,
    );
    let from_f32 = image_of_side(
        &load(&flux_beside(serialize_raw(&reference), true)).unwrap(),
        32,
    );
    same_image(&from_scaled, &from_f32, "flux_tiny in scaled fp8");

    // A scale whose weight the file lacks.
    scaled.push((
        "img_in_extra.scale_weight".into(),
        Dtype::F32,
        vec![],
        f32_bytes(&[2.0]),
    ));
    let e = expect_err(load(&flux_beside(serialize_raw(&scaled), true)));
    assert_eq!(e.code(), "weight_file", "{e}");
    assert!(e.to_string().contains("img_in_extra.weight"), "{e}");
}

/// ComfyUI's all-in-one FLUX files hold the transformer under `model.diffusion_model.`, the
/// VAE under `vae.` (read as `first_stage_model.`, as diffusers' loader does) and CLIP-L and
/// T5 under `text_encoders.*` as SD 3's files name them. flux_tiny so assembled (SD 3's
/// fixture list gives the VAE's and text encoders' names) loads beside tokenizers and
/// configs alone and draws the folder's image exactly.
#[test]
fn an_all_in_one_flux_file_draws_its_diffusers_folders_image() {
    let list = |model: &str| -> Vec<Value> {
        let map: Value =
            serde_json::from_slice(&read_fixture(&format!("single_file/{model}.json"))).unwrap();
        map["tensors"].as_array().unwrap().clone()
    };
    let clip = SafeTensors::deserialize(
        &model_files("flux_tiny")
            .into_iter()
            .find(|(p, _)| p == "text_encoder/model.safetensors")
            .unwrap()
            .1,
    )
    .unwrap()
    .names()
    .into_iter()
    .map(String::from)
    .collect::<Vec<_>>();
    let mut entries: Vec<Value> = list("flux_tiny")
        .into_iter()
        .map(|mut e| {
            e[0] = format!("model.diffusion_model.{}", e[0].as_str().unwrap()).into();
            e
        })
        .collect();
    for mut e in list("sd3_tiny") {
        let (name, component) = (e[0].as_str().unwrap().to_string(), e[1].as_str().unwrap());
        match component {
            "vae" => {
                e[0] = name.replacen("first_stage_model.", "vae.", 1).into();
                entries.push(e);
            }
            // CLIP-L without SD 3's projection, which FLUX's has not; flux_tiny's file has
            // transformers 5's names (no `text_model.`).
            "text_encoder" => {
                let hf = e[2][0].as_str().unwrap();
                let bare = hf.strip_prefix("text_model.").unwrap_or(hf).to_string();
                if clip.contains(&bare) {
                    e[2] = serde_json::json!([bare]);
                    entries.push(e);
                }
            }
            "text_encoder_3" => {
                e[1] = "text_encoder_2".into();
                entries.push(e);
            }
            _ => {}
        }
    }
    let file = assemble("flux_tiny", &entries, &serde_json::json!({}));
    let pipe = load(&paired("flux_tiny", file, true)).unwrap();
    let from_folder = image_of_side(&load(&folder("flux_tiny")).unwrap(), 32);
    same_image(
        &image_of_side(&pipe, 32),
        &from_folder,
        "flux_tiny, all in one file",
    );
}

/// FLUX.1-dev's transformer as BFL's file names it (every name and shape, which diffusers'
/// converter rebuilds into its model: tests/fixtures/single_file/flux1_dev_shapes.json):
/// the config inferred is its published one, rotary axes and guidance embedding included.
#[test]
fn the_config_inferred_from_full_size_flux1_dev_shapes_is_its_own() {
    let (family, configs) = inspect_full_size("flux1_dev");
    assert_eq!(family, Family::Flux);
    let published = published_config("flux1_dev_transformer");
    agrees_with_published(
        "flux1_dev",
        "transformer",
        Some(configs.denoiser),
        &published,
    );
    assert!(configs.vae.is_none() && configs.text_encoder.is_none());
}

fn inspect_full_size(tag: &str) -> (Family, single_file::Configs) {
    let shapes = full_size_shapes(tag);
    let borrowed: Vec<(&str, &[usize])> = shapes
        .iter()
        .map(|(n, s)| (n.as_str(), s.as_slice()))
        .collect();
    single_file::inspect(tag, &borrowed).unwrap()
}

/// Every tensor name and shape of tests/fixtures/single_file/{tag}_shapes.json.
fn full_size_shapes(tag: &str) -> Vec<(String, Vec<usize>)> {
    let doc: Value =
        serde_json::from_slice(&read_fixture(&format!("single_file/{tag}_shapes.json"))).unwrap();
    doc["shapes"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(n, s)| {
            let s = s
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d.as_u64().unwrap() as usize);
            (n.clone(), s.collect())
        })
        .collect()
}

/// Full-size original ControlNet files (SD 1.5's, as lllyasviel's `control_v11p_sd15_*` are,
/// and SD 2.1's; names and shapes from `tools/make_single_file.py --only controlnet`, checked
/// with diffusers' converter) infer the published ControlNets' configs
/// (`ControlNetModel.from_unet` of the published UNets', as theirs are): widths, depth,
/// heads (8 for SD 1.5, 64-channel ones for SD 2.1), text width, projections and the
/// conditioning embedding's widths; and the runtime reads what it inferred.
#[test]
fn original_controlnet_configs_inferred_at_full_size_are_the_published_ones() {
    for tag in ["sd15", "sd21"] {
        let shapes = full_size_shapes(&format!("{tag}_controlnet"));
        let borrowed: Vec<(&str, &[usize])> = shapes
            .iter()
            .map(|(n, s)| (n.as_str(), s.as_slice()))
            .collect();
        let inferred = single_file::controlnet::inspect(tag, &borrowed).unwrap();
        let config = ControlNetConfig::from_json("config.json", &inferred.to_string()).unwrap();
        assert_eq!(
            config.conditioning.embedding_out_channels,
            [16, 32, 96, 256]
        );
        let published = published_config(&format!("{tag}_controlnet"));
        agrees_with_published(tag, "controlnet", Some(inferred), &published);
    }
}

fn published_config(name: &str) -> Value {
    serde_json::from_slice(&read_fixture(&format!("configs/{name}.json"))).unwrap()
}

/// Every key of an inferred config equals the published config's value.
fn agrees_with_published(tag: &str, component: &str, ours: Option<Value>, theirs: &Value) {
    let ours = ours.unwrap_or_else(|| panic!("{tag}: no {component} config inferred"));
    for (key, value) in ours.as_object().unwrap() {
        let want = &theirs[key];
        let same = match (value.as_f64(), want.as_f64()) {
            (Some(a), Some(b)) => (a - b).abs() <= 1e-9 * b.abs().max(1.0),
            _ => value == want,
        };
        assert!(
            same,
            "{tag} {component}.{key}: inferred {value}, published {want}"
        );
    }
}

#[test]
fn configs_inferred_from_full_size_sd35_medium_shapes_are_its_own() {
    let (found, inferred) = inspect_full_size("sd35m");
    assert_eq!(found, Family::Sd3);
    // SD 3's CLIP-L is SD 1.5's CLIP ViT-L with its projection.
    let mut clip_l = published_config("sd15_text_encoder");
    clip_l["architectures"] = serde_json::json!(["CLIPTextModelWithProjection"]);
    for (component, ours, theirs) in [
        (
            "transformer",
            Some(inferred.denoiser),
            published_config("sd35m_transformer"),
        ),
        ("vae", inferred.vae, published_config("sd35m_vae")),
        ("text_encoder", inferred.text_encoder, clip_l),
        (
            "text_encoder_2",
            inferred.text_encoder_2,
            published_config("sdxl_text_encoder_2"),
        ),
        (
            "text_encoder_3",
            inferred.text_encoder_3,
            published_config("t5_xxl_text_encoder"),
        ),
    ] {
        agrees_with_published("sd35m", component, ours, &theirs);
    }
    assert_eq!(
        inferred.scheduler["_class_name"],
        "FlowMatchEulerDiscreteScheduler"
    );
    assert_eq!(inferred.scheduler["shift"], 3.0);
}

#[test]
fn configs_inferred_from_full_size_shapes_are_sd15_sd21_and_sdxls_own() {
    let configs = published_config;
    for (tag, family) in [
        ("sd15", Family::Sd1),
        ("sd21", Family::Sd2),
        ("sdxl", Family::Sdxl),
        ("sdxl_refiner", Family::SdxlRefiner),
    ] {
        let (found, inferred) = inspect_full_size(tag);
        assert_eq!(found, family, "{tag}");
        let refiner = family == Family::SdxlRefiner;
        let xl = family == Family::Sdxl || refiner;
        let mut published = vec![
            (
                "unet",
                Some(inferred.denoiser),
                configs(&format!("{tag}_unet")),
            ),
            (
                "vae",
                inferred.vae,
                configs(if xl { "sdxl_vae" } else { "sd15_vae" }),
            ),
        ];
        // The refiner has SDXL's second encoder alone.
        assert_eq!(refiner, inferred.text_encoder.is_none(), "{tag}");
        if !refiner {
            published.push((
                "text_encoder",
                inferred.text_encoder,
                // SDXL's first encoder is SD 1.5's CLIP ViT-L.
                configs(&match xl {
                    true => "sd15_text_encoder".to_string(),
                    false => format!("{tag}_text_encoder"),
                }),
            ));
        }
        if xl {
            published.push((
                "text_encoder_2",
                inferred.text_encoder_2,
                configs("sdxl_text_encoder_2"),
            ));
        }
        for (component, ours, theirs) in published {
            agrees_with_published(tag, component, ours, &theirs);
        }
        let scheduler = inferred.scheduler;
        let prediction = match family {
            Family::Sd2 => "v_prediction",
            _ => "epsilon",
        };
        assert_eq!(scheduler["prediction_type"], prediction, "{tag}");
    }
}

#[test]
fn inferred_configs_draw_the_folders_image_where_the_family_rules_fit_the_model() {
    // The tiny SD 1 model's UNet and scheduler happen to follow SD 1's rules (8 heads, 32
    // groups, the SD noise schedule), so with only its text encoder's and VAE's configs given
    // (its 8-channel heads and 8 groups are not SD's) the inferred rest draws the folder's
    // image exactly.
    let configs: BTreeMap<String, Vec<u8>> = model_files("sd1_tiny").into_iter().collect();
    let mut source = paired("sd1_tiny", single_file("sd1_tiny"), false);
    for path in ["text_encoder/config.json", "vae/config.json"] {
        source.insert(path, configs[path].clone());
    }
    let pipe = match load(&source) {
        Ok(pipe) => pipe,
        Err(e) => panic!("inferred UNet and scheduler configs must load: {e}"),
    };
    assert_eq!(pipe.native_size(), 512, "SD 1's sample size, inferred");
    same_image(
        &image(&pipe),
        &image(&load(&folder("sd1_tiny")).unwrap()),
        "sd1_tiny",
    );

    // Where the rules do not fit, the model is refused, never built wrongly in silence.
    let mut source = paired("sd1_tiny", single_file("sd1_tiny"), false);
    source.insert(
        "text_encoder/config.json",
        configs["text_encoder/config.json"].clone(),
    );
    let e = expect_err(load(&source));
    assert_eq!(e.code(), "config", "{e}");
    assert!(e.to_string().contains("norm_num_groups 32"), "{e}");
}

fn expect_err(result: Result<StableDiffusion>) -> Error {
    match result {
        Ok(_) => panic!("expected an error"),
        Err(e) => e,
    }
}

#[test]
fn files_of_other_layouts_are_refused_naming_the_nearest() {
    // A diffusers UNet file given as a single-file checkpoint.
    let unet = model_files("sd1_tiny")
        .into_iter()
        .find(|(p, _)| p == "unet/diffusion_pytorch_model.safetensors")
        .unwrap()
        .1;
    let e = expect_err(load(&paired("sd1_tiny", unet, true)));
    assert_eq!(e.code(), "unknown_layout", "{e}");
    let text = e.to_string();
    assert!(text.contains("nearest: diffusers UNet (100%"), "{text}");

    // Names no layout knows: the message lists the first of them.
    let data = vec![0u8; 16];
    let views = vec![
        (
            "mystery.block.weight".to_string(),
            TensorView::new(Dtype::F32, vec![4], &data).unwrap(),
        ),
        (
            "other.thing".to_string(),
            TensorView::new(Dtype::F32, vec![4], &data).unwrap(),
        ),
    ];
    let e = expect_err(load(&paired(
        "sd1_tiny",
        safetensors::serialize(views, None).unwrap(),
        true,
    )));
    assert_eq!(e.code(), "unknown_layout");
    assert!(e.to_string().contains("`mystery.block.weight`"), "{e}");

    // A refiner's embedder among SD 1's tensors makes an SDXL refiner file in which SD 1's
    // text encoder fits nothing.
    let mut tensors = single_file_tensors("sd1_tiny");
    tensors.push((
        "conditioner.embedders.0.model.ln_final.weight".into(),
        vec![4],
    ));
    let e = expect_err(load(&paired("sd1_tiny", zeros(&tensors), true)));
    assert_eq!(e.code(), "weight_file", "{e}");
    assert!(e.to_string().contains("an SDXL refiner checkpoint"), "{e}");

    // An SD 3 block among a UNet's tensors makes an SD 3 file whose UNet names fit nothing.
    let mut tensors = single_file_tensors("sd1_tiny");
    tensors.push((
        "model.diffusion_model.joint_blocks.0.x_block.attn.qkv.weight".into(),
        vec![4],
    ));
    let e = expect_err(load(&paired("sd1_tiny", zeros(&tensors), true)));
    assert_eq!(e.code(), "weight_file", "{e}");
    assert!(e.to_string().contains("an SD 3 checkpoint"), "{e}");
}

#[test]
fn a_stray_tensor_in_a_known_layout_is_named_and_training_state_is_passed_over() {
    // An EMA copy (as unpruned checkpoints hold, named without the dots) is read past.
    let mut tensors = single_file_tensors("sd1_tiny");
    tensors.push((
        "model_ema.diffusion_modelinput_blocks00weight".into(),
        vec![32, 4, 3, 3],
    ));
    tensors.push(("model_ema.num_updates".into(), vec![]));
    load(&paired("sd1_tiny", zeros(&tensors), true)).unwrap();

    let mut tensors = single_file_tensors("sd1_tiny");
    tensors.push((
        "model.diffusion_model.input_blocks.1.7.weird.weight".into(),
        vec![2],
    ));
    let e = expect_err(load(&paired("sd1_tiny", zeros(&tensors), true)));
    assert_eq!(e.code(), "weight_file", "{e}");
    assert!(
        e.to_string()
            .contains("model.diffusion_model.input_blocks.1.7.weird.weight"),
        "{e}"
    );
}

#[test]
fn a_truncated_single_file_fails_and_a_missing_tokenizer_is_explained() {
    let mut bytes = single_file("sd1_tiny");
    bytes.truncate(bytes.len() - 1000);
    let e = expect_err(load(&paired("sd1_tiny", bytes, true)));
    assert_eq!(e.code(), "weight_file", "{e}");

    let mut bare = MemorySource::new();
    bare.insert(CHECKPOINT_FILE, single_file("sd1_tiny"));
    let e = expect_err(load(&bare));
    assert_eq!(e.code(), "missing_file", "{e}");
    assert!(e.to_string().contains("holds no tokenizer"), "{e}");
}

#[test]
fn a_checkpoint_on_disk_opens_beside_a_config_folder_and_a_pickle_is_refused_unread() {
    // What `lina-cli generate --model FILE --config DIR` loads.
    let dir = std::env::temp_dir().join(format!("lina-single-file-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("sd2-tiny.safetensors");
    std::fs::write(&file, single_file("sd2_tiny")).unwrap();
    let source = DirSource::open(&file, Some(&fixture("sd2_tiny"))).unwrap();
    let pipe = StableDiffusion::load(&source, &lina_runtime::device::cpu()).unwrap();
    same_image(
        &image(&pipe),
        &image(&load(&folder("sd2_tiny")).unwrap()),
        "sd2_tiny",
    );

    let ckpt = dir.join("v1-5-pruned.ckpt");
    std::fs::write(&ckpt, b"not really a pickle").unwrap();
    let e = DirSource::open(&ckpt, Some(&fixture("sd1_tiny")))
        .err()
        .unwrap();
    assert_eq!(e.code(), "pickled_weights", "{e}");
    let e = DirSource::open(&fixture("sd1_tiny"), Some(&fixture("sd2_tiny")))
        .err()
        .unwrap();
    assert_eq!(e.code(), "invalid_input", "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The single file's names and shapes (no values), to edit.
fn single_file_tensors(model: &str) -> Vec<(String, Vec<usize>)> {
    let bytes = single_file(model);
    let st = SafeTensors::deserialize(&bytes).unwrap();
    st.tensors()
        .into_iter()
        .map(|(n, v)| (n, v.shape().to_vec()))
        .collect()
}

/// A safetensors file of zeros with these names and shapes.
fn zeros(tensors: &[(String, Vec<usize>)]) -> Vec<u8> {
    let zeros = tensors
        .iter()
        .map(|(n, s)| (n.clone(), (s.clone(), vec![0.0; s.iter().product()])))
        .collect();
    common::f32_safetensors(&zeros)
}

/// What a checkpoint lacks, which the browser's loader then reads from the folder beside it:
/// nothing for an SD 1.x file; FLUX's VAE and both text encoders for BFL's transformer file;
/// T5 for an SD 3 file without it; and a file of another layout is refused by name.
#[test]
fn what_a_checkpoint_lacks_is_named_by_its_folders() {
    let lacking = |tensors: &[(String, Vec<usize>)]| {
        let shapes: Vec<(&str, &[usize])> = tensors
            .iter()
            .map(|(n, s)| (n.as_str(), s.as_slice()))
            .collect();
        single_file::lacking(CHECKPOINT_FILE, &shapes)
    };
    assert!(
        lacking(&single_file_tensors("sd1_tiny"))
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        lacking(&single_file_tensors("flux_tiny")).unwrap(),
        ["vae", "text_encoder", "text_encoder_2"]
    );
    let mut sd3 = single_file_tensors("sd3_tiny");
    assert!(lacking(&sd3).unwrap().is_empty());
    sd3.retain(|(n, _)| !n.starts_with("text_encoders.t5xxl."));
    assert_eq!(lacking(&sd3).unwrap(), ["text_encoder_3"]);
    let e = lacking(&[(
        "down_blocks.0.resnets.0.conv1.weight".into(),
        vec![4, 4, 3, 3],
    )])
    .expect_err("a diffusers UNet is no checkpoint");
    assert_eq!(e.code(), "unknown_layout", "{e}");
}
