//! Any prompt through the embedded model's tokenizer: encoding, the word map the prompt-space
//! guidance uses, and decoding back.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use lina_runtime::tokenizer::ClipTokenizer;

const DIR: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../www/models/default/tokenizer/"
);

fn tokenizer() -> &'static ClipTokenizer {
    static TOKENIZER: OnceLock<ClipTokenizer> = OnceLock::new();
    TOKENIZER.get_or_init(|| {
        let read = |name: &str| std::fs::read(format!("{DIR}{name}")).expect(name);
        let config = read("tokenizer_config.json");
        ClipTokenizer::from_vocab_merges(&read("vocab.json"), &read("merges.txt"), Some(&config))
            .expect("the default model's tokenizer loads")
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(prompt) = std::str::from_utf8(data) else {
        return;
    };
    let tokenizer = tokenizer();
    if let Ok(tokens) = tokenizer.encode(prompt) {
        assert!(tokens.ids.len() <= tokenizer.max_length());
        let _ = tokenizer.decode(&tokens.ids);
    }
    let _ = tokenizer.words(prompt);
});
