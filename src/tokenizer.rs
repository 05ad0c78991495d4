//! The text encoders' tokenizers through the `tokenizers` crate: CLIP's byte-level BPE, from
//! a `tokenizer.json` or from the `vocab.json` + `merges.txt` pair that SD repositories ship;
//! and T5's SentencePiece (Unigram) one, from its `tokenizer.json` (SD 3's `tokenizer_3`).

use serde_json::{Value, json};
use tokenizers::Tokenizer;

use crate::error::{Error, Result};

const BOS: &str = "<|startoftext|>";
const EOS: &str = "<|endoftext|>";

/// CLIP's pre-tokenisation: special tokens, English contractions, letter runs, single
/// digits, and runs of anything else that is not whitespace.
const CLIP_SPLIT: &str =
    r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+";

/// A prompt as ids: `[bos, tokens.., eos, pad..]`, exactly `max_length` long.
#[derive(Debug, Clone, PartialEq)]
pub struct Tokens {
    pub ids: Vec<u32>,
    /// Text that did not fit and was cut, if any: callers surface it as a warning.
    pub truncated: Option<String>,
}

#[derive(Clone)]
pub struct ClipTokenizer {
    inner: Tokenizer,
    /// Textual-inversion triggers with more than one vector, and their vector count: a
    /// trigger in a prompt stands for `trigger trigger_1 .. trigger_{n-1}`.
    triggers: Vec<(String, usize)>,
    bos: u32,
    eos: u32,
    pad: u32,
    max_length: usize,
}

impl ClipTokenizer {
    /// Loads `tokenizer.json` (transformers' fast CLIP tokenizer format).
    pub fn from_tokenizer_json(json: &[u8], config: Option<&[u8]>) -> Result<Self> {
        let inner = Tokenizer::from_bytes(json)
            .map_err(|e| Error::Tokenizer(format!("tokenizer.json: {e}")))?;
        Self::finish(inner, config)
    }

    /// Builds the tokenizer from `vocab.json` and `merges.txt`, with CLIP's normaliser and
    /// pre-tokeniser, as transformers' converter does.
    pub fn from_vocab_merges(vocab: &[u8], merges: &[u8], config: Option<&[u8]>) -> Result<Self> {
        let vocab: Value = serde_json::from_slice(vocab)
            .map_err(|e| Error::Tokenizer(format!("vocab.json: {e}")))?;
        let merges = std::str::from_utf8(merges)
            .map_err(|e| Error::Tokenizer(format!("merges.txt: {e}")))?;
        let merges: Vec<&str> = merges
            .lines()
            .filter(|l| !l.starts_with("#version") && !l.trim().is_empty())
            .collect();
        let special = |content: &str| -> Result<Value> {
            let id = vocab
                .get(content)
                .and_then(Value::as_u64)
                .ok_or_else(|| Error::Tokenizer(format!("vocab.json has no `{content}` token")))?;
            Ok(
                json!({"id": id, "content": content, "single_word": false, "lstrip": false,
                      "rstrip": false, "normalized": true, "special": true}),
            )
        };
        let spec = json!({
            "version": "1.0",
            "truncation": null,
            "padding": null,
            "added_tokens": [special(BOS)?, special(EOS)?],
            "normalizer": {"type": "Sequence", "normalizers": [
                {"type": "NFC"},
                {"type": "Replace", "pattern": {"Regex": r"\s+"}, "content": " "},
                {"type": "Lowercase"}
            ]},
            "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
                {"type": "Split", "pattern": {"Regex": CLIP_SPLIT}, "behavior": "Removed", "invert": true},
                {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false}
            ]},
            "post_processor": null,
            "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
            "model": {"type": "BPE", "dropout": null, "unk_token": EOS,
                      "continuing_subword_prefix": "", "end_of_word_suffix": "</w>",
                      "fuse_unk": false, "byte_fallback": false,
                      "vocab": vocab, "merges": merges}
        });
        let bytes = serde_json::to_vec(&spec).expect("a JSON value serialises");
        let inner = Tokenizer::from_bytes(&bytes)
            .map_err(|e| Error::Tokenizer(format!("vocab.json/merges.txt: {e}")))?;
        Self::finish(inner, config)
    }

    fn finish(inner: Tokenizer, config: Option<&[u8]>) -> Result<Self> {
        let config = read_config(config)?;
        let token_name = |key: &str, default: &str| special_token(&config, key, default);
        let id = |name: String| token_id(&inner, &name);
        let max_length = config
            .get("model_max_length")
            .and_then(Value::as_u64)
            .filter(|&n| (3..=4096).contains(&n))
            .unwrap_or(77) as usize;
        Ok(Self {
            bos: id(token_name("bos_token", BOS))?,
            eos: id(token_name("eos_token", EOS))?,
            pad: id(token_name("pad_token", EOS))?,
            max_length,
            inner,
            triggers: Vec::new(),
        })
    }

    /// Adds a textual-inversion trigger of `vectors` tokens (`trigger`, `trigger_1`, ..);
    /// returns the first one's id. The trigger must not be a token already, and is matched
    /// as written (case and all), like diffusers' added tokens.
    pub fn add_trigger(&mut self, trigger: &str, vectors: usize) -> Result<u32> {
        if trigger.trim().is_empty() || trigger.contains(char::is_whitespace) {
            return Err(Error::InvalidInput(format!(
                "embedding trigger `{trigger}`: one word without spaces, such as <my-style>"
            )));
        }
        let names: Vec<String> = (0..vectors)
            .map(|k| match k {
                0 => trigger.to_string(),
                k => format!("{trigger}_{k}"),
            })
            .collect();
        if let Some(taken) = names.iter().find(|n| self.inner.token_to_id(n).is_some()) {
            return Err(Error::InvalidInput(format!(
                "embedding trigger `{trigger}`: `{taken}` is already a token of the vocabulary; pick another trigger"
            )));
        }
        let first = self.inner.get_vocab_size(true) as u32;
        let tokens: Vec<tokenizers::AddedToken> = names
            .iter()
            .map(|n| tokenizers::AddedToken::from(n.clone(), false).normalized(false))
            .collect();
        self.inner
            .add_tokens(tokens)
            .map_err(|e| Error::Tokenizer(format!("adding the trigger `{trigger}`: {e}")))?;
        for (k, n) in names.iter().enumerate() {
            if self.inner.token_to_id(n) != Some(first + k as u32) {
                return Err(Error::Tokenizer(format!(
                    "the trigger token `{n}` did not get the id after the vocabulary's"
                )));
            }
        }
        if vectors > 1 {
            self.triggers.push((trigger.to_string(), vectors));
        }
        Ok(first)
    }

    /// The prompt with each multi-vector trigger written out as its tokens.
    fn expand<'t>(&self, text: &'t str) -> std::borrow::Cow<'t, str> {
        let mut text = std::borrow::Cow::Borrowed(text);
        for (trigger, n) in &self.triggers {
            if text.contains(trigger.as_str()) {
                let spelled: Vec<String> = (0..*n)
                    .map(|k| match k {
                        0 => trigger.clone(),
                        k => format!("{trigger}_{k}"),
                    })
                    .collect();
                text = text.replace(trigger.as_str(), &spelled.join(" ")).into();
            }
        }
        text
    }

    pub fn max_length(&self) -> usize {
        self.max_length
    }

    /// Caps the length to what the text encoder can take.
    pub fn limit_length(&mut self, positions: usize) {
        self.max_length = self.max_length.min(positions);
    }

    /// Text of `ids`: CLIP tokens are byte-level symbols, with `</w>` closing each word.
    pub fn decode(&self, ids: &[u32]) -> String {
        let symbols = byte_symbols();
        let mut bytes = Vec::new();
        for token in ids.iter().filter_map(|&id| self.inner.id_to_token(id)) {
            let (body, word_end) = match token.strip_suffix("</w>") {
                Some(body) => (body, true),
                None => (token.as_str(), false),
            };
            bytes.extend(
                body.chars()
                    .filter_map(|c| symbols.iter().position(|&s| s == c))
                    .map(|b| b as u8),
            );
            if word_end {
                bytes.push(b' ');
            }
        }
        String::from_utf8_lossy(&bytes).trim().to_string()
    }

    /// Tokenises, truncates (keeping the final eos) and pads to `max_length`.
    pub fn encode(&self, text: &str) -> Result<Tokens> {
        let text = self.expand(text);
        let encoding = self
            .inner
            .encode(text.as_ref(), false)
            .map_err(|e| Error::Tokenizer(e.to_string()))?;
        let body = encoding.get_ids();
        let room = self.max_length - 2;
        let kept = &body[..body.len().min(room)];
        let truncated = (body.len() > room).then(|| self.decode(&body[room..]));
        let mut ids = Vec::with_capacity(self.max_length);
        ids.push(self.bos);
        ids.extend_from_slice(kept);
        ids.push(self.eos);
        ids.resize(self.max_length, self.pad);
        Ok(Tokens { ids, truncated })
    }
}

/// A `tokenizer_config.json`, or nothing where the folder has none.
fn read_config(config: Option<&[u8]>) -> Result<Value> {
    match config {
        Some(bytes) => serde_json::from_slice(bytes)
            .map_err(|e| Error::Tokenizer(format!("tokenizer_config.json: {e}"))),
        None => Ok(Value::Null),
    }
}

/// A special token's text as a tokenizer config names it (a string, or an object with
/// `content`), else `default`.
fn special_token(config: &Value, key: &str, default: &str) -> String {
    match config.get(key) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Object(o)) => o
            .get("content")
            .and_then(Value::as_str)
            .unwrap_or(default)
            .to_string(),
        _ => default.to_string(),
    }
}

fn token_id(inner: &Tokenizer, name: &str) -> Result<u32> {
    inner
        .token_to_id(name)
        .ok_or_else(|| Error::Tokenizer(format!("the vocabulary has no `{name}` token")))
}

/// T5's tokenizer as diffusers' SD 3 pipeline uses it: SentencePiece pieces, then `</s>`,
/// truncated to the length asked for (keeping `</s>`) and padded with `<pad>`.
#[derive(Clone)]
pub struct T5Tokenizer {
    inner: Tokenizer,
    eos: u32,
    pad: u32,
}

impl T5Tokenizer {
    /// Loads `tokenizer.json` (transformers' fast T5 tokenizer format) with its config.
    pub fn from_tokenizer_json(json: &[u8], config: Option<&[u8]>) -> Result<Self> {
        let inner = Tokenizer::from_bytes(json)
            .map_err(|e| Error::Tokenizer(format!("T5's tokenizer.json: {e}")))?;
        let config = read_config(config)?;
        Ok(Self {
            eos: token_id(&inner, &special_token(&config, "eos_token", "</s>"))?,
            pad: token_id(&inner, &special_token(&config, "pad_token", "<pad>"))?,
            inner,
        })
    }

    /// `text` as exactly `length` ids; also the text cut to fit, if any.
    pub fn encode(&self, text: &str, length: usize) -> Result<Tokens> {
        let encoding = self
            .inner
            .encode(text, false)
            .map_err(|e| Error::Tokenizer(e.to_string()))?;
        let body = encoding.get_ids();
        let room = length.saturating_sub(1);
        let truncated = (body.len() > room)
            .then(|| self.inner.decode(&body[room..], true))
            .transpose()
            .map_err(|e| Error::Tokenizer(e.to_string()))?;
        let mut ids = body[..body.len().min(room)].to_vec();
        ids.push(self.eos);
        ids.resize(length, self.pad);
        Ok(Tokens { ids, truncated })
    }

    /// For each position of `encode(text, length).ids`, the lower-cased word its token
    /// belongs to (`None` for the end token, the padding and pieces of no word): to find the
    /// tokens of a word, as [`ClipTokenizer::words`] does.
    pub fn words(&self, text: &str, length: usize) -> Result<Vec<Option<String>>> {
        let room = length.saturating_sub(1);
        let mut out: Vec<Option<String>> = token_words(&self.inner, text)?
            .into_iter()
            .take(room)
            .collect();
        out.resize(length, None);
        Ok(out)
    }
}

impl ClipTokenizer {
    /// For each position of `encode(text).ids`, the lower-cased word its token belongs to
    /// (`None` for the start and end tokens and the padding): to find the tokens of a word.
    pub fn words(&self, text: &str) -> Result<Vec<Option<String>>> {
        let text = self.expand(text);
        let text = text.as_ref();
        let room = self.max_length - 2;
        let mut out = vec![None];
        out.extend(token_words(&self.inner, text)?.into_iter().take(room));
        out.resize(self.max_length, None);
        Ok(out)
    }
}

/// For each token of `text` (no special tokens), the lower-cased word it belongs to: the
/// text that all the tokens of its word span, trimmed (SentencePiece's word-start piece
/// covers the space before the word); `None` for a piece of no word.
fn token_words(tokenizer: &Tokenizer, text: &str) -> Result<Vec<Option<String>>> {
    let encoding = tokenizer
        .encode(text, false)
        .map_err(|e| Error::Tokenizer(e.to_string()))?;
    let (offsets, word_ids) = (encoding.get_offsets(), encoding.get_word_ids());
    let span = |word: u32| {
        let (mut start, mut end) = (usize::MAX, 0);
        for (w, o) in word_ids.iter().zip(offsets) {
            if *w == Some(word) {
                start = start.min(o.0);
                end = end.max(o.1);
            }
        }
        text.get(start..end)
            .map(|w| w.trim().to_lowercase())
            .filter(|w| !w.is_empty())
    };
    Ok(word_ids.iter().map(|w| w.and_then(span)).collect())
}

/// GPT-2/CLIP's byte-to-symbol table: printable bytes stand for themselves, the others are
/// shifted to code points from 256 up, so every byte is a visible character.
fn byte_symbols() -> [char; 256] {
    let printable =
        |b: u32| (33..=126).contains(&b) || (161..=172).contains(&b) || (174..=255).contains(&b);
    let mut table = ['\0'; 256];
    let mut next = 256;
    for b in 0..256u32 {
        table[b as usize] = if printable(b) {
            char::from_u32(b).expect("a Latin-1 code point")
        } else {
            next += 1;
            char::from_u32(next - 1).expect("a code point below 512")
        };
    }
    table
}
