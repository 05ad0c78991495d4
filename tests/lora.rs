#![cfg(not(target_arch = "wasm32"))]
//! LoRA adapters merged at load (`weights::lora`): in kohya's and in diffusers/PEFT's names,
//! on linear and convolution layers of the UNet, SD 3's transformer and the text encoder, the image equals the
//! one from weights merged by hand (on the CPU backend, and on wgpu with LINA_TEST_GPU=1) (`W + scale * alpha / r * up * down`, computed here on the
//! host); both namings give the same image; scale 0 gives the plain model's image. And every
//! kind of bad LoRA is refused with a reason naming it.

mod common;

use std::collections::BTreeMap;

use common::{f32_safetensors, f32_tensors, model_files};
use lina_runtime::kernels::Kernels;
use lina_runtime::pipeline::{CancelToken, GenerateOptions, NoHook, StableDiffusion};
use lina_runtime::schedulers::Timesteps;
use lina_runtime::source::MemorySource;
use lina_runtime::weights::{Lora, ScaledLora};
use safetensors::{Dtype, SafeTensors};

const UNET: &str = "unet/diffusion_pytorch_model.safetensors";
const TEXT: &str = "text_encoder/model.safetensors";

/// One adapted layer: its component, its weight's name, its low-rank halves.
struct Adapted {
    text_encoder: bool,
    weight: String,
    shape: Vec<usize>,
    down: Vec<f32>,
    up: Vec<f32>,
    rank: usize,
}

/// A linear and a 3x3 convolution layer of the UNet and a projection of the text encoder,
/// each with seeded rank-2 halves.
fn adapted(files: &BTreeMap<String, Vec<u8>>) -> Vec<Adapted> {
    let unet = f32_tensors(&files[UNET]);
    let text = f32_tensors(&files[TEXT]);
    let pick = |map: &BTreeMap<String, (Vec<usize>, Vec<f32>)>, part: &str| {
        let (name, (shape, _)) = map
            .iter()
            .find(|(n, _)| n.contains(part))
            .unwrap_or_else(|| panic!("no {part}"));
        (name.clone(), shape.clone())
    };
    let mut rng = lina_runtime::rng::Rng::new(11);
    [
        (false, pick(&unet, "attn2.to_q.weight")),
        (false, pick(&unet, "resnets.0.conv1.weight")),
        (true, pick(&text, "layers.0.self_attn.q_proj.weight")),
    ]
    .into_iter()
    .map(|(text_encoder, (weight, shape))| {
        let rank = 2;
        let rest: usize = shape[1..].iter().product();
        Adapted {
            text_encoder,
            weight,
            down: rng.normals(rank * rest).iter().map(|v| v * 0.5).collect(),
            up: rng
                .normals(shape[0] * rank)
                .iter()
                .map(|v| v * 0.5)
                .collect(),
            shape,
            rank,
        }
    })
    .collect()
}

/// The halves in one naming family, with alpha 1.
fn lora_file(layers: &[Adapted], kohya: bool) -> Vec<u8> {
    let mut out = BTreeMap::new();
    for a in layers {
        let module = a.weight.strip_suffix(".weight").unwrap();
        let mut down_shape = vec![a.rank];
        down_shape.extend(&a.shape[1..]);
        let mut up_shape = vec![a.shape[0], a.rank];
        up_shape.extend(std::iter::repeat_n(1, a.shape.len() - 2));
        let (down, up, alpha) = if kohya {
            let prefix = if a.text_encoder {
                "lora_te_"
            } else {
                "lora_unet_"
            };
            let base = format!("{prefix}{}", module.replace('.', "_"));
            (
                format!("{base}.lora_down.weight"),
                format!("{base}.lora_up.weight"),
                format!("{base}.alpha"),
            )
        } else {
            let prefix = if a.text_encoder {
                "text_encoder."
            } else {
                "unet."
            };
            (
                format!("{prefix}{module}.lora_A.weight"),
                format!("{prefix}{module}.lora_B.weight"),
                format!("{prefix}{module}.alpha"),
            )
        };
        out.insert(down, (down_shape, a.down.clone()));
        out.insert(up, (up_shape, a.up.clone()));
        out.insert(alpha, (vec![], vec![1.0]));
    }
    f32_safetensors(&out)
}

/// The model of `files` on `device`, with `loras` merged as it loads.
fn load(
    files: &BTreeMap<String, Vec<u8>>,
    device: &burn::tensor::Device,
    loras: &[ScaledLora],
) -> lina_runtime::Result<StableDiffusion> {
    StableDiffusion::load_adapted(&model(files), device, Kernels::default(), loras)
}

fn model(files: &BTreeMap<String, Vec<u8>>) -> MemorySource {
    let mut source = MemorySource::new();
    for (path, bytes) in files {
        source.insert(path.clone(), bytes.clone());
    }
    source
}

fn image(files: &BTreeMap<String, Vec<u8>>, loras: &[ScaledLora]) -> Vec<u8> {
    image_on(&lina_runtime::device::cpu(), files, loras)
}

fn image_on(
    device: &burn::tensor::Device,
    files: &BTreeMap<String, Vec<u8>>,
    loras: &[ScaledLora],
) -> Vec<u8> {
    render(
        &load(files, device, loras).unwrap(),
        "a red ball on a small mirror",
    )
}

/// `prompt`'s image, seed 3, 4 steps.
fn render(pipe: &StableDiffusion, prompt: &str) -> Vec<u8> {
    let opts = GenerateOptions {
        prompt: prompt.into(),
        seed: 3,
        timesteps: Timesteps::Count(4),
        ..GenerateOptions::default()
    };
    pollster::block_on(pipe.generate(&opts, &mut NoHook, &CancelToken::new()))
        .unwrap()
        .image
        .rgb
}

fn scaled(bytes: &[u8], scale: f32) -> ScaledLora {
    ScaledLora {
        lora: Lora::from_safetensors("test.safetensors", bytes).unwrap(),
        scale,
    }
}

#[test]
fn a_lora_in_either_naming_gives_the_image_of_weights_merged_by_hand() {
    let files: BTreeMap<String, Vec<u8>> = model_files("sd1_tiny").into_iter().collect();
    let layers = adapted(&files);
    let scale = 0.8f32;

    // Merged by hand: W + scale * alpha / r * up * down, alpha 1, in f64.
    let mut merged = files.clone();
    for path in [UNET, TEXT] {
        let mut t = f32_tensors(&files[path]);
        for a in layers.iter().filter(|a| a.text_encoder == (path == TEXT)) {
            let (_, w) = t.get_mut(&a.weight).unwrap();
            let rest = w.len() / a.shape[0];
            for o in 0..a.shape[0] {
                for i in 0..rest {
                    let d: f64 = (0..a.rank)
                        .map(|k| a.up[o * a.rank + k] as f64 * a.down[k * rest + i] as f64)
                        .sum();
                    w[o * rest + i] += (scale as f64 / a.rank as f64 * d) as f32;
                }
            }
        }
        merged.insert(path.to_string(), f32_safetensors(&t));
    }

    let (kohya, peft) = (lora_file(&layers, true), lora_file(&layers, false));
    let plain = image(&files, &[]);
    let by_hand = image(&merged, &[]);
    let with_kohya = image(&files, &[scaled(&kohya, scale)]);
    let with_peft = image(&files, &[scaled(&peft, scale)]);
    eprintln!(
        "LoRA vs plain: {}/255; vs merged by hand: {}/255",
        common::byte_diff(&with_kohya, &plain),
        common::byte_diff(&with_kohya, &by_hand)
    );
    assert!(
        common::byte_diff(&with_kohya, &plain) > 8,
        "the LoRA changes the image"
    );
    assert!(
        common::byte_diff(&with_kohya, &by_hand) <= 1,
        "merged at load = merged by hand"
    );
    assert_eq!(with_kohya, with_peft, "both namings merge the same update");
    // Two LoRAs at half the scale each make the same update as one at the whole scale.
    let halves = image(
        &files,
        &[scaled(&kohya, scale / 2.0), scaled(&peft, scale / 2.0)],
    );
    assert!(common::byte_diff(&halves, &with_kohya) <= 1);
    // At scale 0 the update vanishes exactly.
    assert_eq!(image(&files, &[scaled(&kohya, 0.0)]), plain);
    // On the GPU, convolution weights are stored channels-last: the merge must see them in
    // PyTorch's order all the same.
    if let Some(gpu) = common::gpu_device() {
        let (lora, hand) = (
            image_on(&gpu, &files, &[scaled(&kohya, scale)]),
            image_on(&gpu, &merged, &[]),
        );
        assert!(
            common::byte_diff(&lora, &hand) <= 1,
            "on the GPU: {}/255",
            common::byte_diff(&lora, &hand)
        );
    }
}

#[test]
fn a_bad_lora_is_refused_naming_what_is_wrong() {
    let files: BTreeMap<String, Vec<u8>> = model_files("sd1_tiny").into_iter().collect();
    let layers = adapted(&files);
    let device = lina_runtime::device::cpu();
    let load = |lora: ScaledLora| {
        load(&files, &device, &[lora])
            .err()
            .map(|e| (e.code(), e.to_string()))
            .expect("refused")
    };
    let parse = |bytes: &[u8]| {
        Lora::from_safetensors("bad.safetensors", bytes)
            .err()
            .map(|e| (e.code(), e.to_string()))
            .expect("refused")
    };
    let good = f32_tensors(&lora_file(&layers, true));

    // A module no layer of this model has (a LoRA for another architecture).
    let mut other = good.clone();
    let base = good
        .keys()
        .find_map(|k| {
            k.strip_suffix(".lora_down.weight")
                .filter(|b| b.starts_with("lora_unet_"))
        })
        .unwrap()
        .to_string();
    for k in good.keys().filter(|k| k.starts_with(&format!("{base}."))) {
        let v = other.remove(k).unwrap();
        other.insert(k.replace("lora_unet_", "lora_unet_mid_block_extra_"), v);
    }
    let (code, e) = load(scaled(&f32_safetensors(&other), 1.0));
    assert_eq!(code, "invalid_input");
    assert!(
        e.contains("matches no layer") && e.contains("mid_block_extra"),
        "{e}"
    );

    // Halves whose ranks disagree.
    let mut ranks = good.clone();
    let key = ranks
        .keys()
        .find(|k| k.ends_with("lora_up.weight"))
        .unwrap()
        .clone();
    let (shape, _) = ranks[&key].clone();
    let wider = vec![shape[0], 3];
    ranks.insert(key, (wider.clone(), vec![0.0; wider.iter().product()]));
    let (code, e) = parse(&f32_safetensors(&ranks));
    assert_eq!(code, "invalid_input");
    assert!(e.contains("ranks"), "{e}");

    // A rank of 0 (alpha / r would be NaN) and a NaN alpha.
    let mut zero = BTreeMap::new();
    zero.insert(
        "unet.conv_in.lora_A.weight".to_string(),
        (vec![0, 4], vec![]),
    );
    zero.insert(
        "unet.conv_in.lora_B.weight".to_string(),
        (vec![4, 0], vec![]),
    );
    assert!(parse(&f32_safetensors(&zero)).1.contains("or are 0"));
    // An update of no rows: a fused SD 3 projection would have nothing to cut in three.
    let mut empty = BTreeMap::new();
    empty.insert(
        "lora_unet_joint_blocks_0_x_block_attn_qkv.lora_down.weight".to_string(),
        (vec![2, 4], vec![0.5; 8]),
    );
    empty.insert(
        "lora_unet_joint_blocks_0_x_block_attn_qkv.lora_up.weight".to_string(),
        (vec![0, 2], vec![]),
    );
    let (code, e) = parse(&f32_safetensors(&empty));
    assert_eq!(code, "invalid_input");
    assert!(e.contains("the update is empty"), "{e}");
    let mut nan = good.clone();
    let key = nan.keys().find(|k| k.ends_with(".alpha")).unwrap().clone();
    nan.insert(key, (vec![], vec![f32::NAN]));
    assert!(
        parse(&f32_safetensors(&nan))
            .1
            .contains("alpha is not a finite number")
    );

    // A module with one half only.
    let mut half = good.clone();
    let key = half
        .keys()
        .find(|k| k.ends_with("lora_up.weight"))
        .unwrap()
        .clone();
    half.remove(&key);
    assert!(
        parse(&f32_safetensors(&half))
            .1
            .contains("lacks its down or up half")
    );

    // A tensor of neither naming family.
    let mut stray = good.clone();
    stray.insert(
        "model.diffusion_model.input_blocks.0.0.weight".into(),
        (vec![1], vec![0.0]),
    );
    assert!(
        parse(&f32_safetensors(&stray))
            .1
            .contains("not a LoRA tensor name")
    );

    // A truncated file.
    let bytes = lora_file(&layers, true);
    assert_eq!(parse(&bytes[..bytes.len() - 9]).0, "weight_file");

    // An update whose sizes do not fit the layer it names.
    let mut misfit = good.clone();
    let key = misfit
        .keys()
        .find(|k| k.starts_with("lora_te_") && k.ends_with("lora_down.weight"))
        .unwrap()
        .clone();
    let (shape, _) = misfit[&key].clone();
    let narrow = vec![shape[0], shape[1] - 1];
    misfit.insert(key, (narrow.clone(), vec![0.0; narrow.iter().product()]));
    let (_, e) = load(scaled(&f32_safetensors(&misfit), 1.0));
    assert!(e.contains("does not fit"), "{e}");

    // Bias updates (PEFT's `lora_B.bias`): one not as long as the update's rows, and one for
    // a layer without a bias (the attention's query projection has none).
    let unet =
        SafeTensors::deserialize(&files["unet/diffusion_pytorch_model.safetensors"]).unwrap();
    let to_q = unet
        .names()
        .into_iter()
        .find(|n| n.ends_with("attn1.to_q.weight"))
        .unwrap()
        .to_string();
    let [out, inputs] = unet.tensor(&to_q).unwrap().shape().try_into().unwrap();
    let module = format!("unet.{}", to_q.strip_suffix(".weight").unwrap());
    let mut biased = BTreeMap::new();
    biased.insert(
        format!("{module}.lora_A.weight"),
        (vec![2, inputs], vec![0.1; 2 * inputs]),
    );
    biased.insert(
        format!("{module}.lora_B.weight"),
        (vec![out, 2], vec![0.1; 2 * out]),
    );
    let mut short = biased.clone();
    short.insert(
        format!("{module}.lora_B.bias"),
        (vec![out - 1], vec![0.1; out - 1]),
    );
    let (code, e) = parse(&f32_safetensors(&short));
    assert_eq!(code, "invalid_input");
    assert!(e.contains("is not as long as the update's"), "{e}");
    biased.insert(format!("{module}.lora_B.bias"), (vec![out], vec![0.1; out]));
    let (code, e) = load(scaled(&f32_safetensors(&biased), 1.0));
    assert_eq!(code, "invalid_input");
    assert!(e.contains("updates a bias the layer does not have"), "{e}");
}

#[test]
fn a_kohya_lora_at_a_scale_gives_diffusers_fuse_lora_output() {
    // tests/fixtures/lora: a kohya LoRA (a cross-attention query, a 3x3 convolution with a
    // 1x1 up, a 1x1 projection; alpha 2 at rank 4) and what diffusers' load_lora_weights +
    // fuse_lora(lora_scale) made of the tiny SD 1.x model (tools/make_fixtures.py --only lora).
    let reference = common::Reference::file("lora/sd1_tiny_reference.safetensors");
    let scale = reference.f32("scale").1[0];
    let lora = scaled(
        &common::read_fixture("lora/sd1_tiny_kohya.safetensors"),
        scale,
    );
    let files: BTreeMap<String, Vec<u8>> = model_files("sd1_tiny").into_iter().collect();
    for (name, device) in common::test_devices() {
        let pipe = load(&files, &device, std::slice::from_ref(&lora)).unwrap();
        let context: burn::tensor::Tensor<3> = reference.tensor("text_out", &device);
        let out = pipe.unet().expect("a UNet model").forward(
            reference.tensor("unet_sample", &device),
            501.0,
            &context,
        );
        let theirs = reference.f32("unet_out").1;
        let scale_of = theirs.iter().fold(0f32, |m, v| m.max(v.abs()));
        let err = common::max_abs_diff(&common::values(out), &theirs) / scale_of;
        assert!(
            err < 1e-4,
            "{name}: UNet off diffusers' fused one by {err} (relative)"
        );
        let opts = GenerateOptions {
            prompt: "a red ball on a small mirror".into(),
            negative_prompt: "blurry".into(),
            timesteps: Timesteps::Count(4),
            guidance_scale: 7.5,
            initial_latents: Some(reference.f32("latents").1),
            ..GenerateOptions::default()
        };
        let done =
            pollster::block_on(pipe.generate(&opts, &mut NoHook, &CancelToken::new())).unwrap();
        let worst = common::worst_pixel(&done.image.rgb, &reference.f32("image").1);
        assert!(
            worst <= 1.0,
            "{name}: {worst}/255 from diffusers' fused image"
        );
    }
}

#[test]
fn an_sd3_transformer_lora_gives_diffusers_fuse_lora_output_and_loras_for_absent_parts_are_refused()
{
    // tests/fixtures/lora: a diffusers-named LoRA on the tiny SD 3 transformer's joint and
    // second attention and a feed-forward, and its transformer call after diffusers'
    // load_lora_weights + fuse_lora(lora_scale) (tools/make_fixtures.py --only lora).
    let reference = common::Reference::file("lora/sd3_tiny_reference.safetensors");
    let inputs = common::Reference::open("sd3_tiny");
    let lora = scaled(
        &common::read_fixture("lora/sd3_tiny_peft.safetensors"),
        reference.f32("scale").1[0],
    );
    let files: BTreeMap<String, Vec<u8>> = model_files("sd3_tiny").into_iter().collect();
    for (name, device) in common::test_devices() {
        let pipe = load(&files, &device, std::slice::from_ref(&lora)).unwrap();
        let out = pipe
            .denoiser()
            .mmdit()
            .expect("an SD 3 transformer")
            .forward(
                inputs.tensor("transformer_sample", &device),
                501.0,
                &inputs.tensor("prompt_embeds", &device),
                &inputs.tensor("pooled_embeds", &device),
            );
        let err = common::relative_diff(&common::values(out), &reference.f32("transformer_out").1);
        assert!(
            err < 1e-4,
            "{name}: transformer off diffusers' fused one by {err} (relative)"
        );
    }

    // A UNet's LoRA on SD 3, and SD 3's on a UNet model, adapt nothing there: refused.
    let cpu = lina_runtime::device::cpu();
    let unet_lora = scaled(
        &common::read_fixture("lora/sd1_tiny_kohya.safetensors"),
        1.0,
    );
    let sd1: BTreeMap<String, Vec<u8>> = model_files("sd1_tiny").into_iter().collect();
    for (files, lora, word) in [(&files, &unet_lora, "unet"), (&sd1, &lora, "transformer")] {
        let e = match load(files, &cpu, std::slice::from_ref(lora)) {
            Ok(_) => panic!("a LoRA adapting {word} loaded on a model without one"),
            Err(e) => e,
        };
        assert_eq!(e.code(), "invalid_input", "{e}");
        assert!(e.to_string().contains(&format!("adapts {word}")), "{e}");
    }
}

/// A diffusers-named LoRA on FLUX (as ai-toolkit writes them) gives diffusers' fused
/// transformer call, including on layers this runtime reads side by side with others (a
/// single-stream block's key and MLP widening, which it projects in one matmul); its scale
/// changed without a reload gives the call at the new scale, and at 0 the plain one.
#[test]
fn a_flux_lora_gives_diffusers_fuse_lora_output_and_its_scale_changes_without_a_reload() {
    // tests/fixtures/lora: tools/make_fixtures.py --only flux-lora.
    let reference = common::Reference::file("lora/flux_tiny_reference.safetensors");
    let inputs = common::Reference::open("flux_tiny");
    let scale = reference.f32("scale").1[0];
    let lora = scaled(
        &common::read_fixture("lora/flux_tiny_peft.safetensors"),
        scale,
    );
    let files: BTreeMap<String, Vec<u8>> = model_files("flux_tiny").into_iter().collect();
    let call = |pipe: &lina_runtime::pipeline::StableDiffusion, device: &burn::tensor::Device| {
        let flux = pipe.denoiser().flux().expect("a FLUX transformer");
        let added = flux.added_input(inputs.tensor("pooled_embeds", device), 3.5);
        let out = flux.forward(
            inputs.tensor("transformer_sample", device),
            501.0,
            &inputs.tensor("prompt_embeds", device),
            &added,
        );
        common::values(out)
    };
    for (name, device) in common::test_devices() {
        let mut pipe = load(&files, &device, std::slice::from_ref(&lora)).unwrap();
        let err = common::relative_diff(&call(&pipe, &device), &reference.f32("transformer_out").1);
        assert!(
            err < 1e-4,
            "{name}: transformer off diffusers' fused one by {err} (relative)"
        );
        pipe.set_lora_scales(&[0.0]).unwrap();
        let err = common::relative_diff(&call(&pipe, &device), &inputs.f32("transformer_out").1);
        assert!(
            err < 1e-4,
            "{name}: at scale 0, off the plain transformer by {err}"
        );
        pipe.set_lora_scales(&[scale]).unwrap();
        let err = common::relative_diff(&call(&pipe, &device), &reference.f32("transformer_out").1);
        assert!(
            err < 1e-4,
            "{name}: back at {scale}, off diffusers' fused one by {err}"
        );
    }
}

/// The tiny SD 3 transformer's output for the fixture's inputs (t = 501) with `loras` merged.
fn sd3_transformer_out(
    files: &BTreeMap<String, Vec<u8>>,
    device: &burn::tensor::Device,
    loras: &[ScaledLora],
) -> Vec<f32> {
    let inputs = common::Reference::open("sd3_tiny");
    let pipe = load(files, device, loras).unwrap();
    let out = pipe
        .denoiser()
        .mmdit()
        .expect("an SD 3 transformer")
        .forward(
            inputs.tensor("transformer_sample", device),
            501.0,
            &inputs.tensor("prompt_embeds", device),
            &inputs.tensor("pooled_embeds", device),
        );
    common::values(out)
}

/// kohya's SD 3 files name the original transformer's modules (`joint_blocks_0_x_block_...`),
/// whose attentions fuse q, k and v into one projection. The diffusers-named fixture LoRA
/// written that way (each of its q, k and v updates as a fused update whose other rows are
/// zero) gives diffusers' fused output too. The output layer's adaLN, whose halves the
/// original orders shift first, adapts diffusers' `norm_out.linear` with its update's halves
/// swapped. On a UNet model such a file adapts nothing: refused.
#[test]
fn an_sd3_kohya_lora_naming_the_original_transformer_merges_like_diffusers_names() {
    let reference = common::Reference::file("lora/sd3_tiny_reference.safetensors");
    let scale = reference.f32("scale").1[0];
    let peft = f32_tensors(&common::read_fixture("lora/sd3_tiny_peft.safetensors"));
    // Each of the fixture's modules: its original module, and which third of a fused
    // projection it is.
    let originals = [
        (
            "transformer_blocks.0.attn.add_k_proj",
            "joint_blocks_0_context_block_attn_qkv",
            Some(1),
        ),
        (
            "transformer_blocks.0.attn.to_q",
            "joint_blocks_0_x_block_attn_qkv",
            Some(0),
        ),
        (
            "transformer_blocks.0.attn2.to_v",
            "joint_blocks_0_x_block_attn2_qkv",
            Some(2),
        ),
        (
            "transformer_blocks.1.attn.to_out.0",
            "joint_blocks_1_x_block_attn_proj",
            None,
        ),
        (
            "transformer_blocks.2.ff.net.0.proj",
            "joint_blocks_2_x_block_mlp_fc1",
            None,
        ),
    ];
    let mut kohya = BTreeMap::new();
    for (module, original, third) in originals {
        let (down_shape, down) = peft[&format!("transformer.{module}.lora_A.weight")].clone();
        let (up_shape, up) = peft[&format!("transformer.{module}.lora_B.weight")].clone();
        let (up_shape, up) = match third {
            None => (up_shape, up),
            Some(k) => {
                let mut fused = vec![0.0; 3 * up.len()];
                fused[k * up.len()..(k + 1) * up.len()].copy_from_slice(&up);
                (vec![3 * up_shape[0], up_shape[1]], fused)
            }
        };
        kohya.insert(
            format!("lora_unet_{original}.lora_down.weight"),
            (down_shape, down),
        );
        kohya.insert(
            format!("lora_unet_{original}.lora_up.weight"),
            (up_shape, up),
        );
    }
    let kohya = scaled(&f32_safetensors(&kohya), scale);
    let files: BTreeMap<String, Vec<u8>> = model_files("sd3_tiny").into_iter().collect();
    for (name, device) in common::test_devices() {
        let out = sd3_transformer_out(&files, &device, std::slice::from_ref(&kohya));
        let err = common::relative_diff(&out, &reference.f32("transformer_out").1);
        assert!(
            err < 1e-4,
            "{name}: the kohya-named LoRA's transformer is off diffusers' fused one by {err} (relative)"
        );
    }

    // The output layer's adaLN: [2 x inner, inner], shift then scale in the original.
    let inner = peft["transformer.transformer_blocks.0.attn.to_q.lora_A.weight"].0[1];
    let (out_rows, rank) = (2 * inner, 2);
    let mut rng = lina_runtime::rng::Rng::new(11);
    let down: Vec<f32> = rng.normals(rank * inner).iter().map(|v| v * 0.3).collect();
    let up: Vec<f32> = rng
        .normals(out_rows * rank)
        .iter()
        .map(|v| v * 0.3)
        .collect();
    let half = up.len() / 2;
    let swapped = [&up[half..], &up[..half]].concat();
    // The update's two halves by their names in the file (kohya's, or PEFT's).
    let file = |[down_name, up_name]: [&str; 2], up: &[f32]| {
        let mut t = BTreeMap::new();
        t.insert(down_name.to_string(), (vec![rank, inner], down.clone()));
        t.insert(up_name.to_string(), (vec![out_rows, rank], up.to_vec()));
        scaled(&f32_safetensors(&t), 1.0)
    };
    let original = file(
        [
            "lora_unet_final_layer_adaLN_modulation_1.lora_down.weight",
            "lora_unet_final_layer_adaLN_modulation_1.lora_up.weight",
        ],
        &swapped,
    );
    let diffusers = file(
        [
            "transformer.norm_out.linear.lora_A.weight",
            "transformer.norm_out.linear.lora_B.weight",
        ],
        &up,
    );
    let cpu = lina_runtime::device::cpu();
    let out = |lora: &[ScaledLora]| sd3_transformer_out(&files, &cpu, lora);
    let (a, b) = (
        out(std::slice::from_ref(&original)),
        out(std::slice::from_ref(&diffusers)),
    );
    assert_eq!(
        a, b,
        "the original's adaLN, halves swapped, adapts norm_out.linear"
    );
    assert_ne!(a, out(&[]), "the LoRA changes the output");

    let sd1: BTreeMap<String, Vec<u8>> = model_files("sd1_tiny").into_iter().collect();
    let e = match load(&sd1, &cpu, &[kohya]) {
        Ok(_) => panic!("an SD 3 kohya LoRA loaded on a UNet model"),
        Err(e) => e,
    };
    assert!(e.to_string().contains("adapts transformer"), "{e}");
}

/// Which piece of a fused projection a module is (its index) and the pieces' row shares;
/// `None` for a module of its own.
type FusedPiece = Option<(usize, &'static [usize])>;

/// kohya's FLUX files name the original transformer's modules (`double_blocks_0_img_attn_qkv`,
/// `single_blocks_1_linear1`), whose projections are fused: a double-stream attention's q, k
/// and v in equal thirds, a single-stream block's q, k, v and MLP widening in rows of
/// 1:1:1:4. The diffusers-named FLUX fixture LoRA written that way (each update placed in its
/// rows of a fused update whose other rows are zero) gives diffusers' fused output too.
#[test]
fn a_flux_kohya_lora_naming_the_original_transformer_merges_like_diffusers_names() {
    let reference = common::Reference::file("lora/flux_tiny_reference.safetensors");
    let scale = reference.f32("scale").1[0];
    let peft = f32_tensors(&common::read_fixture("lora/flux_tiny_peft.safetensors"));
    // Each of the fixture's modules: its original module, and which piece of a fused
    // projection it is, of how many shares (the pieces' shares).
    let (thirds, linear1): (&[usize], &[usize]) = (&[1, 1, 1], &[1, 1, 1, 4]);
    let originals: [(&str, &str, FusedPiece); 6] = [
        (
            "transformer_blocks.0.attn.to_q",
            "double_blocks_0_img_attn_qkv",
            Some((0, thirds)),
        ),
        (
            "transformer_blocks.1.attn.add_v_proj",
            "double_blocks_1_txt_attn_qkv",
            Some((2, thirds)),
        ),
        (
            "single_transformer_blocks.0.attn.to_k",
            "single_blocks_0_linear1",
            Some((1, linear1)),
        ),
        (
            "single_transformer_blocks.1.proj_mlp",
            "single_blocks_1_linear1",
            Some((3, linear1)),
        ),
        (
            "single_transformer_blocks.1.proj_out",
            "single_blocks_1_linear2",
            None,
        ),
        ("proj_out", "final_layer_linear", None),
    ];
    let mut kohya = BTreeMap::new();
    for (module, original, piece) in originals {
        let (down_shape, down) = peft[&format!("transformer.{module}.lora_A.weight")].clone();
        let (up_shape, up) = peft[&format!("transformer.{module}.lora_B.weight")].clone();
        let (up_shape, up) = match piece {
            None => (up_shape, up),
            Some((k, shares)) => {
                // The piece's rows are `shares[k]` units; the fused update's rows before it,
                // the units of the pieces before it.
                let unit = up.len() / shares[k];
                let total: usize = shares.iter().sum();
                let before: usize = shares[..k].iter().sum();
                let mut fused = vec![0.0; total * unit];
                fused[before * unit..before * unit + up.len()].copy_from_slice(&up);
                let rows = up_shape[0] / shares[k] * total;
                (vec![rows, up_shape[1]], fused)
            }
        };
        kohya.insert(
            format!("lora_unet_{original}.lora_down.weight"),
            (down_shape, down),
        );
        kohya.insert(
            format!("lora_unet_{original}.lora_up.weight"),
            (up_shape, up),
        );
    }
    let kohya = scaled(&f32_safetensors(&kohya), scale);
    let inputs = common::Reference::open("flux_tiny");
    let files: BTreeMap<String, Vec<u8>> = model_files("flux_tiny").into_iter().collect();
    for (name, device) in common::test_devices() {
        let pipe = load(&files, &device, std::slice::from_ref(&kohya)).unwrap();
        let flux = pipe.denoiser().flux().expect("a FLUX transformer");
        let added = flux.added_input(inputs.tensor("pooled_embeds", &device), 3.5);
        let out = flux.forward(
            inputs.tensor("transformer_sample", &device),
            501.0,
            &inputs.tensor("prompt_embeds", &device),
            &added,
        );
        let err = common::relative_diff(&common::values(out), &reference.f32("transformer_out").1);
        assert!(
            err < 1e-4,
            "{name}: the kohya-named LoRA's transformer is off diffusers' fused one by {err} (relative)"
        );
    }
}

/// T5's LoRA updates: SD 3's T5 is its third text encoder (kohya's `lora_te3_`, diffusers'
/// `text_encoder_3.`), FLUX's its second (`lora_te2_`, `text_encoder_2.`). Both namings
/// merge what a merge by hand into the T5 file gives, a new scale without a reload gives the
/// merge at that scale, and T5's LoRA on a model loaded without T5's weights is refused.
#[test]
fn t5_loras_merge_into_sd3s_third_and_fluxs_second_text_encoder() {
    let device = lina_runtime::device::cpu();
    let module = "encoder.block.0.layer.0.SelfAttention.q";
    let weight = format!("{module}.weight");
    for (model, folder, kohya_prefix) in [
        ("sd3_tiny", "text_encoder_3", "lora_te3_"),
        ("flux_tiny", "text_encoder_2", "lora_te2_"),
    ] {
        let t5_file = format!("{folder}/model.safetensors");
        let files: BTreeMap<String, Vec<u8>> = model_files(model).into_iter().collect();
        let (shape, original) = as_f32(
            &SafeTensors::deserialize(&files[&t5_file]).unwrap(),
            &weight,
        );
        let (out, inn, rank) = (shape[0], shape[1], 2);
        let mut rng = lina_runtime::rng::Rng::new(21);
        let down: Vec<f32> = rng.normals(rank * inn).iter().map(|v| v * 0.5).collect();
        let up: Vec<f32> = rng.normals(out * rank).iter().map(|v| v * 0.5).collect();
        let lora = |down_name: String, up_name: String| {
            let mut t = BTreeMap::new();
            t.insert(down_name, (vec![rank, inn], down.clone()));
            t.insert(up_name, (vec![out, rank], up.clone()));
            f32_safetensors(&t)
        };
        let flat = module.replace('.', "_");
        let kohya = lora(
            format!("{kohya_prefix}{flat}.lora_down.weight"),
            format!("{kohya_prefix}{flat}.lora_up.weight"),
        );
        let peft = lora(
            format!("{folder}.{module}.lora_A.weight"),
            format!("{folder}.{module}.lora_B.weight"),
        );
        // By hand: W + scale * up * down (no alpha: scale 1 per rank).
        let by_hand = |scale: f32| {
            let mut merged = original.clone();
            for o in 0..out {
                for i in 0..inn {
                    let d: f32 = (0..rank)
                        .map(|k| up[o * rank + k] * down[k * inn + i])
                        .sum();
                    merged[o * inn + i] += scale * d;
                }
            }
            let file = SafeTensors::deserialize(&files[&t5_file]).unwrap();
            let mut all: BTreeMap<String, (Vec<usize>, Vec<f32>)> = file
                .names()
                .into_iter()
                .map(|n| (n.to_string(), as_f32(&file, n)))
                .collect();
            all.insert(weight.clone(), (shape.clone(), merged));
            let mut edited = files.clone();
            edited.insert(t5_file.clone(), f32_safetensors(&all));
            edited
        };
        let context = |pipe: &lina_runtime::pipeline::StableDiffusion| {
            common::values(
                pipe.encode_prompt("a red ball on a small mirror", 0)
                    .unwrap()
                    .context,
            )
        };
        let plain = context(&load(&files, &device, &[]).unwrap());
        let expected = context(&load(&by_hand(1.0), &device, &[]).unwrap());
        for (naming, file) in [("kohya", &kohya), ("diffusers", &peft)] {
            let mut pipe = load(&files, &device, &[scaled(file, 1.0)]).unwrap();
            let ours = context(&pipe);
            assert_ne!(
                ours, plain,
                "{model}, {naming}: the LoRA changes T5's states"
            );
            let err = common::max_abs_diff(&ours, &expected);
            assert!(
                err < 1e-4,
                "{model}, {naming}: merged at load vs by hand: {err}"
            );
            pipe.set_lora_scales(&[0.5]).unwrap();
            let half = context(&load(&by_hand(0.5), &device, &[]).unwrap());
            let err = common::max_abs_diff(&context(&pipe), &half);
            assert!(
                err < 1e-4,
                "{model}, {naming}: at scale 0.5 without a reload: {err}"
            );
        }

        // Without T5's weights (its config alone, as the page loads SD 3 by default) its
        // LoRA adapts nothing: refused, naming the folder.
        let mut without = files.clone();
        without.remove(&t5_file);
        let e = match load(&without, &device, &[scaled(&kohya, 1.0)]) {
            Ok(_) => panic!("{model}: T5's LoRA loaded without T5"),
            Err(e) => e,
        };
        assert!(e.to_string().contains(folder), "{model}: {e}");
    }
}

/// A tensor of a safetensors file as f32, whatever its float type.
fn as_f32(file: &SafeTensors, name: &str) -> (Vec<usize>, Vec<f32>) {
    let t = file.tensor(name).unwrap();
    let values = match t.dtype() {
        Dtype::F32 => t
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
        Dtype::F16 => t
            .data()
            .chunks_exact(2)
            .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
        other => panic!("{name}: {other:?}"),
    };
    (t.shape().to_vec(), values)
}

#[test]
fn sdxl_loras_reach_both_text_encoders_and_one_for_a_missing_encoder_is_refused() {
    const TEXT_2: &str = "text_encoder_2/model.safetensors";
    let files: BTreeMap<String, Vec<u8>> = model_files("sdxl_tiny").into_iter().collect();
    let weight = "text_model.encoder.layers.0.self_attn.q_proj.weight";
    let (shape, original) = as_f32(&SafeTensors::deserialize(&files[TEXT_2]).unwrap(), weight);
    let (out, inn, rank) = (shape[0], shape[1], 2);
    let mut rng = lina_runtime::rng::Rng::new(5);
    let down: Vec<f32> = rng.normals(rank * inn).iter().map(|v| v * 0.5).collect();
    let up: Vec<f32> = rng.normals(out * rank).iter().map(|v| v * 0.5).collect();
    let halves = |down_name: String, up_name: String, alpha: String| {
        let mut t = BTreeMap::new();
        t.insert(down_name, (vec![rank, inn], down.clone()));
        t.insert(up_name, (vec![out, rank], up.clone()));
        t.insert(alpha, (vec![], vec![rank as f32]));
        f32_safetensors(&t)
    };
    let module = "text_model.encoder.layers.0.self_attn.q_proj";
    let flat = module.replace('.', "_");
    let kohya = halves(
        format!("lora_te2_{flat}.lora_down.weight"),
        format!("lora_te2_{flat}.lora_up.weight"),
        format!("lora_te2_{flat}.alpha"),
    );
    let peft = halves(
        format!("text_encoder_2.{module}.lora_A.weight"),
        format!("text_encoder_2.{module}.lora_B.weight"),
        format!("text_encoder_2.{module}.alpha"),
    );
    let device = lina_runtime::device::cpu();
    let encode = |files: &BTreeMap<String, Vec<u8>>, loras: &[ScaledLora]| {
        let pipe = load(files, &device, loras).unwrap();
        let p = pipe
            .encode_prompt("a red ball on a small mirror", 0)
            .unwrap();
        (common::values(p.context), common::values(p.pooled.unwrap()))
    };

    // Merged by hand into the second encoder's file (as f32): W + up * down (alpha = rank).
    let mut merged_weight = original.clone();
    for o in 0..out {
        for i in 0..inn {
            let d: f32 = (0..rank)
                .map(|k| up[o * rank + k] * down[k * inn + i])
                .sum();
            merged_weight[o * inn + i] += d;
        }
    }
    let file = SafeTensors::deserialize(&files[TEXT_2]).unwrap();
    let mut all: BTreeMap<String, (Vec<usize>, Vec<f32>)> = file
        .names()
        .into_iter()
        .map(|n| (n.to_string(), as_f32(&file, n)))
        .collect();
    all.insert(weight.to_string(), (shape.clone(), merged_weight));
    let mut by_hand = files.clone();
    by_hand.insert(TEXT_2.to_string(), f32_safetensors(&all));

    let plain = encode(&files, &[]);
    let with_kohya = encode(&files, &[scaled(&kohya, 1.0)]);
    let with_peft = encode(&files, &[scaled(&peft, 1.0)]);
    let expected = encode(&by_hand, &[]);
    assert_ne!(
        with_kohya.1, plain.1,
        "the LoRA changes the pooled embedding"
    );
    assert_eq!(with_kohya, with_peft, "both namings merge the same update");
    let err = common::max_abs_diff(&with_kohya.0, &expected.0)
        .max(common::max_abs_diff(&with_kohya.1, &expected.1));
    assert!(err < 1e-4, "merged at load vs by hand: {err}");
    assert_eq!(
        encode(&files, &[scaled(&kohya, 0.0)]),
        plain,
        "scale 0 is the plain model"
    );

    // The same LoRA on a model with one text encoder adapts nothing: refused by name.
    let sd1: BTreeMap<String, Vec<u8>> = model_files("sd1_tiny").into_iter().collect();
    let e = match load(&sd1, &device, &[scaled(&kohya, 1.0)]) {
        Ok(_) => panic!("an SDXL text encoder LoRA loaded into SD 1"),
        Err(e) => e,
    };
    assert!(e.to_string().contains("text_encoder_2"), "{e}");

    // The SDXL refiner has the second encoder alone (the same weights here): the LoRA adapts
    // it, giving the base model's pooled embedding; one for the first encoder is refused.
    let refiner: BTreeMap<String, Vec<u8>> = model_files("sdxl_refiner_tiny").into_iter().collect();
    let refined = encode(&refiner, &[scaled(&kohya, 1.0)]);
    assert_eq!(
        refined.1, with_kohya.1,
        "the refiner's encoder took the LoRA"
    );
    assert_ne!(refined.1, encode(&refiner, &[]).1);
    let first = halves(
        format!("lora_te1_{flat}.lora_down.weight"),
        format!("lora_te1_{flat}.lora_up.weight"),
        format!("lora_te1_{flat}.alpha"),
    );
    let e = match load(&refiner, &device, &[scaled(&first, 1.0)]) {
        Ok(_) => panic!("a first text encoder's LoRA loaded into the refiner"),
        Err(e) => e,
    };
    assert!(e.to_string().contains("adapts text_encoder,"), "{e}");
}

#[test]
fn an_sdxl_kohya_lora_naming_original_unet_modules_merges_like_diffusers_names() {
    // kohya's SDXL files name UNet modules after the original UNet: with one layer per block,
    // `input_blocks.3.1` is the second level's first attention (`down_blocks.1.attentions.0`).
    let files: BTreeMap<String, Vec<u8>> = model_files("sdxl_tiny").into_iter().collect();
    let unet = SafeTensors::deserialize(&files[UNET]).unwrap();
    let (shape, _) = as_f32(&unet, "down_blocks.1.attentions.0.proj_in.weight");
    let (out, inn, rank) = (shape[0], shape[1], 2);
    let mut rng = lina_runtime::rng::Rng::new(9);
    let down: Vec<f32> = rng.normals(rank * inn).iter().map(|v| v * 0.5).collect();
    let up: Vec<f32> = rng.normals(out * rank).iter().map(|v| v * 0.5).collect();
    let file = |module: &str| {
        let mut t = BTreeMap::new();
        t.insert(
            format!("lora_unet_{module}.lora_down.weight"),
            (vec![rank, inn], down.clone()),
        );
        t.insert(
            format!("lora_unet_{module}.lora_up.weight"),
            (vec![out, rank], up.clone()),
        );
        f32_safetensors(&t)
    };
    let original = file("input_blocks_3_1_proj_in");
    let diffusers = file("down_blocks_1_attentions_0_proj_in");
    let draw = |lora: &[u8]| image(&files, &[scaled(lora, 1.0)]);
    let (a, b) = (draw(&original), draw(&diffusers));
    assert_eq!(a, b, "the original UNet's name adapts the same layer");
    assert!(
        common::byte_diff(&a, &image(&files, &[])) > 0,
        "the LoRA changes the image"
    );
}

/// Changing the scales of the LoRAs a model was loaded with builds the components they adapt
/// again from the weights kept on the device: the image (and an embedding's encoding) is the
/// one a fresh load at those scales gives, bit for bit, on the CPU backend and on wgpu. A
/// wrong count, a scale that is not finite, or a model without LoRAs is refused and changes
/// nothing.
#[test]
fn changing_lora_scales_rebuilds_from_the_kept_weights_as_a_fresh_load_would() {
    let files: BTreeMap<String, Vec<u8>> = model_files("sd1_tiny").into_iter().collect();
    let layers = adapted(&files);
    let (kohya, peft) = (lora_file(&layers, true), lora_file(&layers, false));
    // An embedding beside them: the rebuilt text encoder must take its rows again.
    let width = f32_tensors(&files[TEXT])["text_model.embeddings.token_embedding.weight"].0[1];
    let rows: Vec<u8> = lina_runtime::rng::Rng::new(3)
        .normals(width)
        .iter()
        .flat_map(|v| (v * 0.02).to_le_bytes())
        .collect();
    let embedding = safetensors::serialize(
        [(
            "emb_params",
            safetensors::tensor::TensorView::new(Dtype::F32, vec![1, width], &rows).unwrap(),
        )],
        None,
    )
    .unwrap();
    let render = |pipe: &StableDiffusion| render(pipe, "a <t> ball on a small mirror");
    let mut devices = vec![("cpu", lina_runtime::device::cpu())];
    devices.extend(common::gpu_device().map(|d| ("wgpu", d)));
    for (name, device) in devices {
        let fresh = |scales: [f32; 2]| {
            let mut pipe = load(
                &files,
                &device,
                &[scaled(&kohya, scales[0]), scaled(&peft, scales[1])],
            )
            .unwrap();
            pipe.add_embedding("<t>", "t.safetensors", &embedding)
                .unwrap();
            render(&pipe)
        };
        let start = std::time::Instant::now();
        let mut pipe = load(&files, &device, &[scaled(&kohya, 0.8), scaled(&peft, 0.0)]).unwrap();
        let loaded = start.elapsed();
        pipe.add_embedding("<t>", "t.safetensors", &embedding)
            .unwrap();
        let first = render(&pipe);
        assert_eq!(first, fresh([0.8, 0.0]));
        for scales in [[0.0, 0.0], [0.3, 0.5], [0.0, 0.8]] {
            let start = std::time::Instant::now();
            pipe.set_lora_scales(&scales).unwrap();
            let rebuilt = start.elapsed();
            assert_eq!(pipe.lora_scales(), scales.to_vec());
            let image = render(&pipe);
            assert_eq!(image, fresh(scales), "{name}: scales {scales:?}");
            eprintln!("{name}: scales {scales:?} set in {rebuilt:?} (the load took {loaded:?})");
        }
        // Both at zero is the plain model (with the embedding); the LoRAs moved the image.
        pipe.set_lora_scales(&[0.0, 0.0]).unwrap();
        let plain = render(&pipe);
        assert!(
            common::byte_diff(&plain, &first) > 8,
            "{name}: the LoRAs change the image"
        );

        for (bad, says) in [
            (vec![1.0], "1 given for 2 LoRAs"),
            (vec![f32::NAN, 0.0], "not a finite number"),
        ] {
            let e = pipe.set_lora_scales(&bad).unwrap_err();
            assert_eq!(e.code(), "invalid_input");
            assert!(e.to_string().contains(says), "{e}");
        }
        assert_eq!(pipe.lora_scales(), vec![0.0, 0.0]);
        assert_eq!(
            render(&pipe),
            plain,
            "{name}: a refused change changed nothing"
        );
    }
    let mut bare = load(&files, &lina_runtime::device::cpu(), &[]).unwrap();
    let e = bare.set_lora_scales(&[]).unwrap_err();
    assert!(e.to_string().contains("without LoRAs"), "{e}");
}
