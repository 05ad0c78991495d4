//! What each fuzz target checks, one function per target (`fuzz/fuzz_targets/NAME.rs` calls
//! `NAME` here). The checks live apart from libFuzzer so that the native tests can replay the
//! committed seeds through the very same code (`tests/fuzz_seeds.rs` includes this file) in
//! every CI run, while the long coverage-guided runs stay in `scripts/fuzz.sh`.
//!
//! The runtime is safe Rust, so what a fuzzer can find is a panic, an arithmetic overflow or a
//! failed assertion: each function returns quietly on input it rejects with an error, and
//! panics on a broken promise.

use lina_csg::Csg;
use lina_runtime::models::clip::ClipTextConfig;
use lina_runtime::models::denoiser::DenoiserConfig;
use lina_runtime::models::mmdit::MmditConfig;
use lina_runtime::models::t5::T5Config;
use lina_runtime::models::taesd::TaesdConfig;
use lina_runtime::models::unet::UNetConfig;
use lina_runtime::models::vae::VaeConfig;
use lina_runtime::schedulers::SchedulerConfig;
use lina_runtime::tokenizer::ClipTokenizer;
use lina_runtime::weights::{StreamedTensor, TensorStream, Weights};

/// A safetensors file of any bytes, read the two ways the runtime reads weights: streamed in
/// chunks of a size the input chooses (as from a fetch body), with or without a declared
/// length (a Content-Length, which may itself disagree with the bytes), and whole onto the CPU
/// device, where a model then asks for a tensor by name and shape. A header that lies about
/// its tensors' sizes must cost no more memory than the bytes that arrive: libFuzzer's RSS and
/// malloc limits turn any large reservation into a crash.
pub fn weights(data: &[u8]) {
    let [chunk, length, file @ ..] = data else {
        return;
    };
    let chunk = usize::from(*chunk).max(1);
    let true_length = file.len() as u64;
    // 0: unknown; 1: the true length; otherwise a wrong one, near it or far from it.
    let declared = match length {
        0 => None,
        1 => Some(true_length),
        &n if n < 128 => Some(true_length + u64::from(n)),
        &n => Some(true_length.saturating_sub(u64::from(n - 127))),
    };
    let mut stream = TensorStream::new("fuzz.safetensors", declared);
    let mut sink = |tensor: StreamedTensor| {
        let elements: usize = tensor.shape.iter().product();
        if let Some(values) = &tensor.values {
            assert_eq!(values.len(), elements, "{}: decoded length", tensor.name);
        }
        Ok(())
    };
    let streamed = file
        .chunks(chunk)
        .try_for_each(|c| stream.push(c, &mut sink))
        .and_then(|()| stream.finish());

    let device = lina_runtime::device::cpu();
    let whole = Weights::from_bytes("fuzz.safetensors", file, &device);
    // One parser, two ways in: they must agree on whether the file is good, except that a
    // wrong declared length makes a good file bad.
    if declared.is_none_or(|d| d == true_length) {
        assert_eq!(
            streamed.is_ok(),
            whole.is_ok(),
            "{streamed:?} vs {:?}",
            whole.as_ref().err()
        );
    } else {
        assert!(streamed.is_err(), "a wrong declared length was accepted");
    }
    if let Ok(weights) = whole {
        let _ = weights.root().tensor::<2>("weight", [2, 3]);
        let _ = weights.finish();
    }
}

/// A component's config.json of any text: parsed, validated, and, where accepted, sized for a
/// 512x512 generation, as the loader does before allocating anything.
pub fn config(data: &[u8]) {
    let Ok(json) = std::str::from_utf8(data) else {
        return;
    };
    let _ = SchedulerConfig::from_json(json);
    let _ = TaesdConfig::from_json(json);
    let text = ClipTextConfig::from_json(json);
    let unet = UNetConfig::from_json(json);
    let vae = VaeConfig::from_json(json);
    let _ = T5Config::from_json(json);
    let mmdit = MmditConfig::from_json(json);
    for denoiser in [
        unet.as_ref().ok().map(DenoiserConfig::UNet),
        mmdit.as_ref().ok().map(DenoiserConfig::Mmdit),
    ]
    .into_iter()
    .flatten()
    {
        if let Ok(vae) = &vae {
            let _ = lina_runtime::memory::activations(
                denoiser,
                vae,
                512,
                512,
                2,
                lina_runtime::memory::Encoded {
                    output_size: true,
                    reference: Some((384, 640)),
                    t5_tokens: None,
                },
                128 << 20,
            );
        }
    }
    if let Ok(vae) = &vae {
        let _ = vae.decoder_peak(512, 512);
    }
    if let (Ok(text), Ok(unet), Ok(vae)) = (&text, &unet, &vae) {
        let _ = lina_runtime::memory::weight_bytes(
            text,
            DenoiserConfig::UNet(unet),
            vae,
            &lina_runtime::device::cpu(),
        );
    }
}

/// The embedded default model's tokenizer, built once: a fuzzer calls a target millions of
/// times, and the tokenizer's files never change.
fn default_tokenizer() -> &'static ClipTokenizer {
    static TOKENIZER: std::sync::OnceLock<ClipTokenizer> = std::sync::OnceLock::new();
    TOKENIZER.get_or_init(|| {
        // Paths relative to this file, so that both crates that compile it find them.
        ClipTokenizer::from_vocab_merges(
            include_bytes!("../../www/models/default/tokenizer/vocab.json"),
            include_bytes!("../../www/models/default/tokenizer/merges.txt"),
            Some(include_bytes!(
                "../../www/models/default/tokenizer/tokenizer_config.json"
            )),
        )
        .expect("the default model's tokenizer loads")
    })
}

/// Any prompt through the embedded model's tokenizer: encoding, the word map the prompt-space
/// guidance uses, and decoding back.
pub fn tokenizer(data: &[u8]) {
    let Ok(prompt) = std::str::from_utf8(data) else {
        return;
    };
    let tokenizer = default_tokenizer();
    if let Ok(tokens) = tokenizer.encode(prompt) {
        assert!(tokens.ids.len() <= tokenizer.max_length());
        let _ = tokenizer.decode(&tokens.ids);
    }
    let _ = tokenizer.words(prompt);
}

/// Scene-graph JSON of any text: parsed and validated; an accepted graph survives a round
/// trip through JSON and the rules that add implied effects.
pub fn csg_json(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(csg) = Csg::from_json(text) else {
        return;
    };
    let again = Csg::from_json(&csg.to_json()).expect("a graph we wrote reads back");
    assert_eq!(again.to_json(), csg.to_json());
    let mut implied = csg.clone();
    lina_csg::rules::add_implied(&mut implied);
    implied.validate().expect("the rules keep a graph valid");
}

/// Any prompt through the prompt-to-scene-graph parser: what it accepts is a valid graph.
pub fn prompt(data: &[u8]) {
    let Ok(prompt) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(csg) = lina_csg::parse::parse(prompt) {
        csg.validate().expect("the parser's graph is valid");
        Csg::from_json(&csg.to_json()).expect("and reads back from its JSON");
    }
}

/// A LoRA file of any bytes (`weights::Lora`), which comes from a user (a model hub, a drag
/// and drop), never from the model's author: parsing never panics, and a file it accepts
/// adapts something (the parser itself refuses a half missing, ranks that disagree or are 0,
/// a NaN alpha: `tests/lora.rs`).
pub fn lora(data: &[u8]) {
    use lina_runtime::weights::{Lora, LoraTarget};
    if let Ok(lora) = Lora::from_safetensors("fuzz.safetensors", data) {
        // A parsed LoRA adapts something: a file of no module is refused.
        assert!(LoraTarget::ALL.into_iter().any(|t| lora.adapts(t)));
    }
}
