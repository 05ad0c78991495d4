#![cfg(not(target_arch = "wasm32"))]
//! Textual-inversion embeddings (`StableDiffusion::add_embedding`): a trigger bound to
//! vectors stands for them in a prompt. Bound to the vocabulary's own rows for some words,
//! the trigger must give exactly the image of those words, with one vector and with
//! several. Bad embeddings are refused and leave the model as it was.

mod common;

use common::{fixture, read_fixture};
use lina_runtime::pipeline::{CancelToken, GenerateOptions, NoHook, StableDiffusion};
use lina_runtime::schedulers::Timesteps;
use lina_runtime::source::DirSource;
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};

fn load() -> StableDiffusion {
    StableDiffusion::load(
        &DirSource::new(fixture("sd1_tiny")),
        &lina_runtime::device::cpu(),
    )
    .unwrap()
}

fn image(pipe: &StableDiffusion, prompt: &str) -> Vec<u8> {
    let opts = GenerateOptions {
        prompt: prompt.into(),
        seed: 5,
        timesteps: Timesteps::Count(3),
        ..GenerateOptions::default()
    };
    pollster::block_on(pipe.generate(&opts, &mut NoHook, &CancelToken::new()))
        .unwrap()
        .image
        .rgb
}

/// The vocabulary's embedding rows of `words`' tokens, as an embedding file holding one
/// tensor named `key`.
fn embedding_of(pipe: &StableDiffusion, words: &str, key: &str) -> Vec<u8> {
    let ids: Vec<u32> = pipe.tokenizer().encode(words).unwrap().ids;
    // [bos, tokens.., eos, pad..]
    let eos = ids[ids.len() - 1];
    let tokens: Vec<u32> = ids[1..].iter().copied().take_while(|&i| i != eos).collect();
    let file = read_fixture("sd1_tiny/text_encoder/model.safetensors");
    let st = SafeTensors::deserialize(&file).unwrap();
    let table = st
        .tensor("text_model.embeddings.token_embedding.weight")
        .unwrap();
    let dim = table.shape()[1];
    let mut bytes = Vec::new();
    for id in &tokens {
        let row = *id as usize * dim * 4;
        bytes.extend_from_slice(&table.data()[row..row + dim * 4]);
    }
    let shape = if tokens.len() == 1 {
        vec![dim]
    } else {
        vec![tokens.len(), dim]
    };
    safetensors::serialize(
        [(key, TensorView::new(Dtype::F32, shape, &bytes).unwrap())],
        None,
    )
    .unwrap()
}

#[test]
fn a_trigger_bound_to_words_own_vectors_draws_those_words() {
    let mut pipe = load();
    let plain = image(&pipe, "a red ball on a small mirror");
    // Several vectors, in the web UIs' format; one vector, in diffusers'.
    let red_ball = embedding_of(&pipe, "red ball", "emb_params");
    let small = embedding_of(&pipe, "small", "<small-one>");
    let eos = *pipe.tokenizer().encode("").unwrap().ids.last().unwrap();
    let tokens = pipe.tokenizer().encode("red ball").unwrap().ids;
    assert_ne!(tokens[2], eos, "\"red ball\" is more than one token");
    pipe.add_embedding("<red-ball>", "red_ball.safetensors", &red_ball)
        .unwrap();
    pipe.add_embedding("<small-one>", "small.safetensors", &small)
        .unwrap();
    assert_eq!(image(&pipe, "a <red-ball> on a small mirror"), plain);
    assert_eq!(image(&pipe, "a red ball on a <small-one> mirror"), plain);
    // Without the trigger, the prompt is as before.
    assert_eq!(image(&pipe, "a red ball on a small mirror"), plain);
}

#[test]
fn a_bad_embedding_is_refused_and_changes_nothing() {
    let mut pipe = load();
    let before = image(&pipe, "a red ball on a small mirror");
    let good = embedding_of(&pipe, "red", "emb_params");
    let code = |e: lina_runtime::Error| (e.code(), e.to_string());

    // A trigger that is a word of the vocabulary already.
    let (c, e) = code(pipe.add_embedding("red</w>", "x", &good).unwrap_err());
    assert_eq!(c, "invalid_input");
    assert!(e.contains("already a token"), "{e}");
    // Vectors of another width.
    let wide = safetensors::serialize(
        [(
            "emb_params",
            TensorView::new(Dtype::F32, vec![2, 7], &[0u8; 56]).unwrap(),
        )],
        None,
    )
    .unwrap();
    let e = code(
        pipe.add_embedding("<wide>", "wide.safetensors", &wide)
            .unwrap_err(),
    )
    .1;
    assert!(e.contains("7 wide"), "{e}");
    // An SDXL pair.
    let pair = safetensors::serialize(
        [
            (
                "clip_g",
                TensorView::new(Dtype::F32, vec![1], &[0u8; 4]).unwrap(),
            ),
            (
                "clip_l",
                TensorView::new(Dtype::F32, vec![1], &[0u8; 4]).unwrap(),
            ),
        ],
        None,
    )
    .unwrap();
    let e = code(
        pipe.add_embedding("<xl>", "xl.safetensors", &pair)
            .unwrap_err(),
    )
    .1;
    assert!(
        e.contains("clip_l") && e.contains("one text encoder"),
        "{e}"
    );
    // A truncated file.
    let (c, _) = code(
        pipe.add_embedding("<cut>", "cut.safetensors", &good[..good.len() - 3])
            .unwrap_err(),
    );
    assert_eq!(c, "weight_file");
    // A trigger with a space.
    assert!(pipe.add_embedding("my style", "x", &good).is_err());

    // None of it changed the model, and a good one still binds.
    assert_eq!(image(&pipe, "a red ball on a small mirror"), before);
    pipe.add_embedding("<wide>", "red.safetensors", &good)
        .unwrap();
    assert_eq!(image(&pipe, "a <wide> ball on a small mirror"), before);
}

/// The rows of `ids` in a text encoder's token table (a file of any float type), as a tensor
/// of that type named `key`: its bytes as stored, and its shape.
fn rows_of(file: &[u8], ids: &[u32]) -> (Dtype, Vec<usize>, Vec<u8>) {
    let st = SafeTensors::deserialize(file).unwrap();
    let table = st
        .tensor("text_model.embeddings.token_embedding.weight")
        .unwrap();
    let dim = table.shape()[1];
    let size = table.data().len() / (table.shape()[0] * dim);
    let mut bytes = Vec::new();
    for &id in ids {
        let row = id as usize * dim * size;
        bytes.extend_from_slice(&table.data()[row..row + dim * size]);
    }
    (table.dtype(), vec![ids.len(), dim], bytes)
}

#[test]
fn an_sdxl_trigger_bound_to_both_encoders_rows_encodes_as_those_words() {
    let mut pipe = StableDiffusion::load(
        &DirSource::new(fixture("sdxl_tiny")),
        &lina_runtime::device::cpu(),
    )
    .unwrap();
    let encode = |pipe: &StableDiffusion, prompt: &str| {
        let p = pipe.encode_prompt(prompt, 0).unwrap();
        (common::values(p.context), common::values(p.pooled.unwrap()))
    };
    let words = encode(&pipe, "a red ball on a small mirror");
    // Both tokenizers are the same BPE: "red ball"'s tokens, without bos and eos.
    let ids = pipe.tokenizer().encode("red ball").unwrap().ids;
    let eos = ids[ids.len() - 1];
    let tokens: Vec<u32> = ids[1..].iter().copied().take_while(|&i| i != eos).collect();
    let (dl, sl, bl) = rows_of(
        &read_fixture("sdxl_tiny/text_encoder/model.safetensors"),
        &tokens,
    );
    let (dg, sg, bg) = rows_of(
        &read_fixture("sdxl_tiny/text_encoder_2/model.safetensors"),
        &tokens,
    );
    let pair = safetensors::serialize(
        [
            ("clip_l", TensorView::new(dl, sl, &bl).unwrap()),
            ("clip_g", TensorView::new(dg, sg, &bg).unwrap()),
        ],
        None,
    )
    .unwrap();

    // A one-set embedding does not fit SDXL, and changes nothing.
    let one = embedding_of(&load(), "red ball", "emb_params");
    let e = pipe
        .add_embedding("<red-ball>", "one.safetensors", &one)
        .unwrap_err();
    assert!(e.to_string().contains("clip_g"), "{e}");
    assert_eq!(encode(&pipe, "a red ball on a small mirror"), words);

    pipe.add_embedding("<red-ball>", "pair.safetensors", &pair)
        .unwrap();
    assert_eq!(
        encode(&pipe, "a <red-ball> on a small mirror"),
        words,
        "the trigger encodes as the words its vectors came from, in both encoders"
    );

    // The SDXL refiner (the second encoder alone) binds the pair's `clip_g`.
    let mut refiner = StableDiffusion::load(
        &DirSource::new(fixture("sdxl_refiner_tiny")),
        &lina_runtime::device::cpu(),
    )
    .unwrap();
    let words = encode(&refiner, "a red ball on a small mirror");
    refiner
        .add_embedding("<red-ball>", "pair.safetensors", &pair)
        .unwrap();
    assert_eq!(
        encode(&refiner, "a <red-ball> on a small mirror"),
        words,
        "the refiner's trigger encodes as the words of clip_g's rows"
    );
}
