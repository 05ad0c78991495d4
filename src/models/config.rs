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

pub fn parse<T: DeserializeOwned>(file: &str, json: &str) -> Result<T> {
    serde_json::from_str(json).map_err(|e| Error::config(file, e.to_string()))
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
