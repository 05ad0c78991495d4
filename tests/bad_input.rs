#![cfg(not(target_arch = "wasm32"))]
//! Bad input gives a clear error that names what is wrong, and nothing is lost: the same
//! pipeline keeps working after a refused request.

mod common;

use std::collections::HashMap;

use common::fixture;
use lina_runtime::pipeline::{GenerateOptions, NoHook, StableDiffusion};
use lina_runtime::schedulers::Timesteps;
use lina_runtime::source::{FileSource, MemorySource};
use safetensors::SafeTensors;
use safetensors::tensor::TensorView;

const UNET_WEIGHTS: &str = "unet/diffusion_pytorch_model.safetensors";

/// The tiny SD 1.x model held in memory, so tests can corrupt single files.
fn tiny_files() -> HashMap<String, Vec<u8>> {
    common::model_files("sd1_tiny").into_iter().collect()
}

fn load(files: &HashMap<String, Vec<u8>>) -> lina_runtime::Result<StableDiffusion> {
    let mut source = MemorySource::new();
    for (k, v) in files {
        source.insert(k.clone(), v.clone());
    }
    StableDiffusion::load(&source, &lina_runtime::device::cpu())
}

fn load_err(files: &HashMap<String, Vec<u8>>) -> String {
    match load(files) {
        Ok(_) => panic!("loading should have failed"),
        Err(e) => e.to_string(),
    }
}

/// Rewrites a safetensors file through `edit`, which may add, drop or replace tensors.
fn rewrite(bytes: &[u8], edit: impl FnOnce(&mut Vec<(String, Vec<usize>, Vec<u8>)>)) -> Vec<u8> {
    let st = SafeTensors::deserialize(bytes).unwrap();
    let mut tensors: Vec<(String, Vec<usize>, Vec<u8>)> = st
        .tensors()
        .into_iter()
        .map(|(name, view)| (name, view.shape().to_vec(), view.data().to_vec()))
        .collect();
    edit(&mut tensors);
    let views: Vec<(String, TensorView)> = tensors
        .iter()
        .map(|(n, s, d)| {
            (
                n.clone(),
                TensorView::new(safetensors::Dtype::F32, s.clone(), d).unwrap(),
            )
        })
        .collect();
    safetensors::serialize(views, None).unwrap()
}

#[test]
fn truncated_weights_name_the_file() {
    let mut files = tiny_files();
    let w = files.get_mut(UNET_WEIGHTS).unwrap();
    w.truncate(w.len() / 2);
    let err = load_err(&files);
    assert!(err.contains(UNET_WEIGHTS), "{err}");

    files.get_mut(UNET_WEIGHTS).unwrap().truncate(3);
    assert!(load_err(&files).contains(UNET_WEIGHTS));
}

#[test]
fn a_wrong_shape_names_the_tensor_and_both_shapes() {
    let mut files = tiny_files();
    let w = rewrite(&files[UNET_WEIGHTS], |t| {
        let conv = t
            .iter_mut()
            .find(|(n, _, _)| n == "conv_in.weight")
            .unwrap();
        conv.1 = vec![conv.1[0] / 2, conv.1[1] * 2, conv.1[2], conv.1[3]];
    });
    files.insert(UNET_WEIGHTS.into(), w);
    let err = load_err(&files);
    assert!(
        err.contains("conv_in.weight") && err.contains(UNET_WEIGHTS),
        "{err}"
    );
    assert!(err.contains("expected [32, 4, 3, 3]"), "{err}");
}

#[test]
fn a_missing_tensor_is_named() {
    let mut files = tiny_files();
    let w = rewrite(&files[UNET_WEIGHTS], |t| {
        t.retain(|(n, _, _)| n != "mid_block.attentions.0.proj_out.bias")
    });
    files.insert(UNET_WEIGHTS.into(), w);
    let err = load_err(&files);
    assert!(
        err.contains("missing tensor `mid_block.attentions.0.proj_out.bias`"),
        "{err}"
    );
}

#[test]
fn an_extra_tensor_is_named() {
    let mut files = tiny_files();
    let w = rewrite(&files[UNET_WEIGHTS], |t| {
        t.push(("mystery.weight".into(), vec![2], vec![0; 8]))
    });
    files.insert(UNET_WEIGHTS.into(), w);
    let err = load_err(&files);
    assert!(
        err.contains("mystery.weight") && err.contains(UNET_WEIGHTS),
        "{err}"
    );
}

#[test]
fn config_errors_name_the_file_and_field() {
    let edit = |file: &str, f: &dyn Fn(&mut serde_json::Value)| {
        let mut files = tiny_files();
        let mut config: serde_json::Value = serde_json::from_slice(&files[file]).unwrap();
        f(&mut config);
        files.insert(file.into(), serde_json::to_vec(&config).unwrap());
        load_err(&files)
    };
    let err = edit("unet/config.json", &|c| {
        c["down_block_types"][0] = "FancyDownBlock3D".into()
    });
    assert!(
        err.contains("unet/config.json")
            && err.contains("down_block_types")
            && err.contains("FancyDownBlock3D"),
        "{err}"
    );
    let err = edit("unet/config.json", &|c| {
        c["block_out_channels"][0] = 1_000_000_000.into()
    });
    assert!(err.contains("block_out_channels"), "{err}");
    // Zero groups once divided by zero while checking the channels.
    for file in ["unet/config.json", "vae/config.json"] {
        let err = edit(file, &|c| c["norm_num_groups"] = 0.into());
        assert!(
            err.contains(file) && err.contains("norm_num_groups"),
            "{err}"
        );
    }
    let err = edit("text_encoder/config.json", &|c| {
        c["hidden_act"] = "swish".into()
    });
    assert!(
        err.contains("text_encoder/config.json") && err.contains("hidden_act"),
        "{err}"
    );
    let err = edit("vae/config.json", &|c| {
        c["up_block_types"][0] = "Nope".into()
    });
    assert!(
        err.contains("vae/config.json") && err.contains("Nope"),
        "{err}"
    );

    let mut files = tiny_files();
    files.insert(
        "unet/config.json".into(),
        b"{\"block_out_channels\": [32,".to_vec(),
    );
    let err = load_err(&files);
    assert!(err.contains("unet/config.json"), "{err}");

    let mut files = tiny_files();
    files.remove("vae/config.json");
    assert!(load_err(&files).contains("vae/config.json"));
}

#[test]
fn bad_requests_are_refused_and_the_pipeline_still_works() {
    let pipe = load(&tiny_files()).unwrap();
    let good = GenerateOptions {
        prompt: "a red ball on a small mirror".into(),
        timesteps: Timesteps::Count(2),
        ..GenerateOptions::default()
    };
    let refuse = |opts: GenerateOptions, word: &str| {
        let err = pipe
            .start(&opts)
            .err()
            .map(|e| e.to_string())
            .expect("refused");
        assert!(err.contains(word), "expected {word:?} in {err}");
    };
    refuse(
        GenerateOptions {
            prompt: "   ".into(),
            ..good.clone()
        },
        "prompt is empty",
    );
    refuse(
        GenerateOptions {
            prompt: "a red ball on a small mirror ".repeat(100),
            ..good.clone()
        },
        "prompt is 2900 characters long; at most 2000",
    );
    refuse(
        GenerateOptions {
            negative_prompt: "blurry ".repeat(300),
            ..good.clone()
        },
        "negative prompt is 2100 characters long",
    );
    refuse(
        GenerateOptions {
            guidance_scale: f64::NAN,
            ..good.clone()
        },
        "guidance",
    );
    refuse(
        GenerateOptions {
            timesteps: Timesteps::Count(0),
            ..good.clone()
        },
        "steps",
    );
    refuse(
        GenerateOptions {
            timesteps: Timesteps::Count(1001),
            ..good.clone()
        },
        "steps",
    );
    refuse(
        GenerateOptions {
            width: Some(60),
            ..good.clone()
        },
        "width",
    );
    refuse(
        GenerateOptions {
            height: Some(1 << 20),
            ..good.clone()
        },
        "height",
    );
    refuse(
        GenerateOptions {
            initial_latents: Some(vec![0.0; 3]),
            ..good.clone()
        },
        "initial latents",
    );
    refuse(
        GenerateOptions {
            clip_skip: 5,
            ..good.clone()
        },
        "clip_skip",
    );

    // Over-long prompts are cut with a warning that quotes the lost words.
    let long = GenerateOptions {
        prompt: "a red ball on a small mirror, ".repeat(20) + "and a purple elephant",
        ..good.clone()
    };
    let sampling = pipe.start(&long).unwrap();
    assert!(
        sampling.warnings.iter().any(|w| matches!(
            w,
            lina_runtime::pipeline::Warning::PromptTruncated { negative: false, ignored }
                if ignored.contains("purple elephant")
        )),
        "{:?}",
        sampling.warnings
    );

    let mut sampling = pipe.start(&good).unwrap();
    while !sampling.is_done() {
        sampling.step(&mut NoHook).unwrap();
    }
    assert!(
        sampling.step(&mut NoHook).is_err(),
        "stepping past the end is an error"
    );
    let image = pollster::block_on(sampling.decode()).unwrap();
    assert_eq!(
        (image.width, image.height, image.rgb.len()),
        (64, 64, 64 * 64 * 3)
    );
}

#[test]
fn a_missing_folder_is_reported() {
    let source = lina_runtime::source::DirSource::new(fixture("no_such_model"));
    assert!(source.read("unet/config.json").unwrap().is_none());
    let err = StableDiffusion::load(&source, &lina_runtime::device::cpu())
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("missing file"), "{err}");
}
