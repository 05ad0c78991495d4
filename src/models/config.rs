//! Helpers shared by the config.json parsers of every component.

use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::error::{Error, Result};

/// A config value given either once for all blocks or once per block, as diffusers allows
/// for `attention_head_dim`, `layers_per_block` and `transformer_layers_per_block`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum PerBlock<T> {
    One(T),
    Many(Vec<T>),
}

impl<T: Clone> PerBlock<T> {
    /// The value for each of `blocks` blocks; a list of the wrong length is a config error.
    pub fn expand(&self, blocks: usize, field: &str, file: &str) -> Result<Vec<T>> {
        match self {
            PerBlock::One(v) => Ok(vec![v.clone(); blocks]),
            PerBlock::Many(list) if list.len() == blocks => Ok(list.clone()),
            PerBlock::Many(list) => Err(Error::config(
                file,
                format!("`{field}` has {} entries for {blocks} blocks", list.len()),
            )),
        }
    }
}

/// Reads a config.json as diffusers and transformers write it: Python's json module writes
/// the non-finite floats as bare `NaN`, `Infinity` and `-Infinity`, which JSON lacks, and
/// diffusers' scheduler configs hold them (`"lambda_min_clipped": -Infinity`). An error names
/// the key whose value is wrong. Keys no field reads are ignored.
pub fn parse<T: DeserializeOwned>(file: &str, json: &str) -> Result<T> {
    let json = finite_json(json);
    let mut de = serde_json::Deserializer::from_str(&json);
    serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path == "." {
            Error::config(file, inner.to_string())
        } else {
            Error::config(file, format!("{path}: {inner}"))
        }
    })
}

/// `json` with Python's bare `Infinity` and `-Infinity` (outside strings) written as the
/// largest finite numbers of their sign, which every comparison the runtime makes treats as
/// infinite, and `NaN` as `null`. Unchanged, and not copied, when it has none.
fn finite_json(json: &str) -> std::borrow::Cow<'_, str> {
    const INFINITY: &str = "Infinity";
    if !json.contains(INFINITY) && !json.contains("NaN") {
        return json.into();
    }
    let mut out = String::with_capacity(json.len() + 32);
    let (mut in_string, mut escaped) = (false, false);
    let mut rest = json;
    while let Some(c) = rest.chars().next() {
        if in_string {
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '"' => in_string = false,
                _ => {}
            }
        } else if c == '"' {
            in_string = true;
        } else if let Some(after) = rest.strip_prefix("-Infinity") {
            out.push_str("-1.7976931348623157e308");
            rest = after;
            continue;
        } else if let Some(after) = rest.strip_prefix(INFINITY) {
            out.push_str("1.7976931348623157e308");
            rest = after;
            continue;
        } else if let Some(after) = rest.strip_prefix("NaN") {
            out.push_str("null");
            rest = after;
            continue;
        }
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    out.into()
}

/// Checks a `block_out_channels` list and the `norm_num_groups` that must divide each entry.
pub fn check_channels(file: &str, channels: &[usize], groups: usize) -> Result<()> {
    check_size(file, "block_out_channels (count)", channels.len(), 8)?;
    check_size(file, "norm_num_groups", groups, 1024)?;
    for &ch in channels {
        check_size(file, "block_out_channels", ch, 1 << 14)?;
        if !ch.is_multiple_of(groups) {
            return Err(Error::config(
                file,
                format!("block_out_channels {ch} is not a multiple of norm_num_groups {groups}"),
            ));
        }
    }
    Ok(())
}

/// Refuses sizes that are zero or absurd before any allocation is attempted.
pub fn check_size(file: &str, field: &str, value: usize, max: usize) -> Result<()> {
    if value == 0 || value > max {
        return Err(Error::config(
            file,
            format!("`{field}` = {value} is outside 1..={max}"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    struct Sample {
        low: f64,
        high: f64,
        missing: Option<f64>,
        name: String,
    }

    #[test]
    fn python_json_reads_with_its_non_finite_floats() {
        let text = r#"{"low": -Infinity, "high": Infinity, "missing": NaN, "name": "NaN -Infinity \" Infinity"}"#;
        let s: Sample = parse("x.json", text).unwrap();
        assert!(s.low < -1e308 && s.high > 1e308 && s.missing.is_none());
        assert_eq!(
            s.name, "NaN -Infinity \" Infinity",
            "strings stay as they are"
        );
    }

    #[test]
    fn a_bad_value_is_an_error_naming_its_key() {
        let e = parse::<Sample>(
            "x.json",
            r#"{"low": 1, "high": "two", "missing": null, "name": ""}"#,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("x.json") && e.contains("high"), "{e}");
    }
}
