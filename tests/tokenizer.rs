#![cfg(not(target_arch = "wasm32"))]
//! Token ids equal to transformers' CLIPTokenizer on accents, punctuation, emoji, CJK,
//! empty and over-long prompts, from both tokenizer file layouts.

mod common;

use common::read_fixture;
use lina_runtime::tokenizer::ClipTokenizer;

fn cases() -> Vec<(String, Vec<u32>)> {
    let doc: serde_json::Value =
        serde_json::from_slice(&read_fixture("tokenizer_cases.json")).unwrap();
    doc["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let ids = c["ids"]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| i.as_u64().unwrap() as u32)
                .collect();
            (c["prompt"].as_str().unwrap().to_string(), ids)
        })
        .collect()
}

fn check(tokenizer: &ClipTokenizer, layout: &str) {
    let cases = cases();
    assert!(cases.len() >= 10);
    for (prompt, expected) in cases {
        let tokens = tokenizer.encode(&prompt).unwrap();
        assert_eq!(tokens.ids, expected, "{layout}: {prompt:?}");
    }
}

#[test]
fn tokenizer_json_matches_python() {
    let config = read_fixture("tokenizer/tokenizer_config.json");
    let t = ClipTokenizer::from_tokenizer_json(
        &read_fixture("tokenizer/tokenizer.json"),
        Some(&config),
    )
    .unwrap();
    check(&t, "tokenizer.json");
}

#[test]
fn vocab_and_merges_match_python() {
    let config = read_fixture("tokenizer/tokenizer_config.json");
    let t = ClipTokenizer::from_vocab_merges(
        &read_fixture("tokenizer/vocab.json"),
        &read_fixture("tokenizer/merges.txt"),
        Some(&config),
    )
    .unwrap();
    check(&t, "vocab.json + merges.txt");
}

#[test]
fn over_long_prompts_report_what_was_cut() {
    let t = ClipTokenizer::from_tokenizer_json(&read_fixture("tokenizer/tokenizer.json"), None)
        .unwrap();
    let long = "a red ball on a small mirror ".repeat(20) + "and a purple elephant";
    let tokens = t.encode(&long).unwrap();
    assert_eq!(tokens.ids.len(), 77);
    let cut = tokens.truncated.expect("a warning for the cut text");
    assert!(cut.ends_with("purple elephant"), "cut text: {cut}");
    assert!(t.encode("a red ball").unwrap().truncated.is_none());
}

#[test]
fn broken_tokenizer_files_are_clear_errors() {
    let err = ClipTokenizer::from_tokenizer_json(b"{not json", None)
        .err()
        .unwrap();
    assert!(err.to_string().contains("tokenizer.json"), "{err}");
    let err = ClipTokenizer::from_vocab_merges(b"{\"a\": 0}", b"#version: 0.2\n", None)
        .err()
        .unwrap();
    assert!(err.to_string().contains("<|startoftext|>"), "{err}");
}

#[test]
fn decoding_gives_back_the_text() {
    // CLIP ends every word and punctuation run with `</w>`, so the spacing around
    // punctuation cannot come back; the characters must.
    let t = ClipTokenizer::from_tokenizer_json(&read_fixture("tokenizer/tokenizer.json"), None)
        .unwrap();
    let squeeze = |s: &str| s.split_whitespace().collect::<String>();
    for text in [
        "a red ball on a small mirror",
        "café crème, 3 jars!",
        "猫が好き",
    ] {
        let ids = t.encode(text).unwrap().ids;
        let eos = ids[ids.len() - 1];
        let body: Vec<u32> = ids[1..]
            .iter()
            .copied()
            .take_while(|&id| id != eos)
            .collect();
        let decoded = t.decode(&body);
        assert_eq!(squeeze(&decoded), squeeze(text), "{decoded:?}");
        if text.is_ascii() && !text.contains(',') {
            assert_eq!(decoded, text);
        }
    }
}

#[test]
fn words_name_the_word_of_every_token() {
    let tok = ClipTokenizer::from_tokenizer_json(&read_fixture("tokenizer/tokenizer.json"), None)
        .unwrap();
    let text = "A red Ball, on a small mirror";
    let ids = tok.encode(text).unwrap().ids;
    let words = tok.words(text).unwrap();
    assert_eq!(words.len(), ids.len());
    assert_eq!(words[0], None);
    let named: Vec<&str> = words.iter().flatten().map(String::as_str).collect();
    for w in ["a", "red", "ball", ",", "on", "small", "mirror"] {
        assert!(named.contains(&w), "{w} missing from {named:?}");
    }
    // Exactly the body tokens (between the start token and the first end token) are named.
    let eos = ids[1..]
        .iter()
        .position(|&i| i == *ids.last().unwrap())
        .unwrap()
        + 1;
    assert!(words[1..eos].iter().all(Option::is_some));
    assert!(words[eos..].iter().all(Option::is_none));
}
