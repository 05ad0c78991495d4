#![cfg(not(target_arch = "wasm32"))]
//! Checkpoints as today's and yesterday's libraries save them load into the same model: a
//! text encoder saved by transformers 5 (tensor names without `text_model.`), and a VAE with
//! diffusers' legacy attention names (`query`, `key`, `value`, `proj_attn`) and
//! convolution-shaped [C, C, 1, 1] weights. Each is the tiny fixture's own weights renamed,
//! so it must give exactly the fixture's outputs.

mod common;

use burn::tensor::{Distribution, Tensor};
use common::{model_files, values};
use lina_runtime::pipeline::StableDiffusion;
use lina_runtime::source::MemorySource;
use safetensors::SafeTensors;
use safetensors::tensor::TensorView;

/// The fixture's files with `file` rewritten: each tensor renamed (or dropped, for `None`)
/// by `rename`, its shape changed by `reshape`.
fn with_renamed(
    file: &str,
    rename: impl Fn(&str) -> Option<String>,
    reshape: impl Fn(&str, &[usize]) -> Vec<usize>,
) -> MemorySource {
    let mut source = MemorySource::new();
    for (path, bytes) in model_files("sd1_tiny") {
        if path != file {
            source.insert(path, bytes);
            continue;
        }
        let st = SafeTensors::deserialize(&bytes).unwrap();
        let mut renamed = Vec::new();
        for (name, view) in st.tensors() {
            let Some(new) = rename(&name) else { continue };
            let shape = reshape(&name, view.shape());
            renamed.push((new, (view.dtype(), shape, view.data().to_vec())));
        }
        let views: Vec<(String, TensorView)> = renamed
            .iter()
            .map(|(n, (dtype, shape, data))| {
                (
                    n.clone(),
                    TensorView::new(*dtype, shape.clone(), data).unwrap(),
                )
            })
            .collect();
        source.insert(path, safetensors::serialize(views, None).unwrap());
    }
    source
}

fn original() -> MemorySource {
    with_renamed("", |n| Some(n.to_string()), |_, s| s.to_vec())
}

fn load(source: &MemorySource) -> StableDiffusion {
    StableDiffusion::load(source, &lina_runtime::device::cpu()).unwrap()
}

#[test]
fn a_text_encoder_saved_without_the_text_model_prefix_loads() {
    let renamed = with_renamed(
        "text_encoder/model.safetensors",
        |n| Some(n.strip_prefix("text_model.").unwrap_or(n).to_string()),
        |_, s| s.to_vec(),
    );
    let prompt = "a red ball on a small mirror";
    let (ours, _) = load(&renamed).encode_text(prompt, 0).unwrap();
    let (theirs, _) = load(&original()).encode_text(prompt, 0).unwrap();
    assert_eq!(values(ours), values(theirs));
}

#[test]
fn a_vae_with_legacy_attention_names_and_conv_shaped_weights_loads() {
    let legacy = |name: &str| {
        let mut out = name.to_string();
        for (new, old) in [
            (".to_q.", ".query."),
            (".to_k.", ".key."),
            (".to_v.", ".value."),
            (".to_out.0.", ".proj_attn."),
        ] {
            out = out.replace(new, old);
        }
        out
    };
    let mut renamed_any = false;
    let renamed = with_renamed(
        "vae/diffusion_pytorch_model.safetensors",
        |n| Some(legacy(n)),
        |n, s| {
            if legacy(n) != n && n.ends_with(".weight") {
                assert_eq!(s.len(), 2, "{n}");
                vec![s[0], s[1], 1, 1]
            } else {
                s.to_vec()
            }
        },
    );
    for (path, bytes) in model_files("sd1_tiny") {
        if path == "vae/diffusion_pytorch_model.safetensors" {
            let st = SafeTensors::deserialize(&bytes).unwrap();
            renamed_any = st.names().iter().any(|n| n.contains(".to_q."));
        }
    }
    assert!(
        renamed_any,
        "the fixture's VAE has attention projections to rename"
    );
    let device = lina_runtime::device::cpu();
    let latents = Tensor::<4>::random([1, 4, 8, 8], Distribution::Normal(0.0, 1.0), &device);
    let ours = load(&renamed).vae().decode(latents.clone());
    let theirs = load(&original()).vae().decode(latents);
    assert_eq!(values(ours), values(theirs));
}

/// A folder whose UNet weights are only a pickle (`diffusion_pytorch_model.bin`) is refused
/// with an error that says why and how to convert it; nothing unpickles it.
#[test]
fn pickled_weights_are_refused_with_a_way_out() {
    let mut source = MemorySource::new();
    for (path, bytes) in model_files("sd1_tiny") {
        let path = path.replace(
            "unet/diffusion_pytorch_model.safetensors",
            "unet/diffusion_pytorch_model.bin",
        );
        source.insert(path, bytes);
    }
    let Err(err) = StableDiffusion::load(&source, &lina_runtime::device::cpu()) else {
        panic!("a pickled UNet loaded");
    };
    assert_eq!(err.code(), "pickled_weights", "{err}");
    let text = err.to_string();
    assert!(
        text.contains("unet/diffusion_pytorch_model.bin") && text.contains("safetensors"),
        "{text}"
    );
}
