//! Moving a loaded file's tensors into new sets under new names: a single-file checkpoint
//! split into its components, fused projections cut apart, matrices stored the other way
//! round turned.

use std::collections::HashMap;

use burn::tensor::Tensor;

use super::resident::{Layout, Parts, Resident};
use super::{Backing, Weights};
use crate::error::{Error, Result};

/// Where [`Weights::regroup`] puts one tensor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Regroup {
    /// Into part `part`, as `name`.
    Move { part: usize, name: String },
    /// Cut along its first axis into blocks of rows in proportion to their shares (fused
    /// q/k/v projections: 1, 1, 1; FLUX's single-stream input projection: 1, 1, 1, 4), each
    /// into part `part` under its name.
    Split {
        part: usize,
        pieces: Vec<(String, usize)>,
    },
    /// A matrix stored the other way round (OpenCLIP's `x @ text_projection`), transposed
    /// into part `part` as `name`.
    Transpose { part: usize, name: String },
    /// Its two halves along the first axis in the other order (SD 3's final adaLN
    /// projections: shift then scale, where diffusers takes scale then shift), into part
    /// `part` as `name`.
    SwapHalves { part: usize, name: String },
    /// Not used by any part (training state, buffers a model recomputes).
    Drop,
}

/// A [rows, cols] `resident` as [cols, rows].
fn transpose_matrix(name: &str, resident: Resident, source: &str) -> Result<Resident> {
    let &[rows, cols] = resident.shape.as_slice() else {
        return Err(Error::WeightFile {
            file: source.to_string(),
            message: format!(
                "tensor `{name}` of shape {:?} is not a matrix",
                resident.shape
            ),
        });
    };
    let values = match resident.values {
        Err(dtype) => Err(dtype),
        Ok(parts) if parts.blocks.len() == 1 => {
            let flat = parts.blocks.into_iter().next().expect("one block");
            let t = flat
                .reshape([rows, cols])
                .transpose()
                .reshape([rows * cols]);
            Ok(Parts { blocks: vec![t] })
        }
        Ok(_) => {
            return Err(Error::WeightFile {
                file: source.to_string(),
                message: format!("tensor `{name}` is too large to transpose on this device"),
            });
        }
    };
    Ok(Resident {
        file: resident.file,
        shape: vec![cols, rows],
        layout: Layout::AsGiven,
        values,
    })
}

/// `resident` with its two row halves in the other order.
fn swap_halves(name: &str, resident: Resident, source: &str) -> Result<Resident> {
    let (file, shape, layout) = (
        resident.file.clone(),
        resident.shape.clone(),
        resident.layout,
    );
    let mut halves = split_rows(name, resident, &[1, 1], source)?;
    let second = halves.pop().expect("two halves");
    let first = halves.pop().expect("two halves");
    let values = match (first.values, second.values) {
        (Ok(a), Ok(b)) => {
            let halves: Vec<Tensor<1>> = b.blocks.into_iter().chain(a.blocks).collect();
            let whole = if layout == Layout::FilterMatrix {
                // Each half is [K, out / 2] flat: the halves sit side by side along out.
                let k = shape[1..].iter().product::<usize>();
                let columns = halves
                    .into_iter()
                    .map(|h| h.reshape([k as i32, -1]))
                    .collect();
                Tensor::cat(columns, 1).reshape([-1])
            } else {
                Tensor::cat(halves, 0)
            };
            Ok(Parts {
                blocks: vec![whole],
            })
        }
        (Err(dtype), _) | (_, Err(dtype)) => Err(dtype),
    };
    Ok(Resident {
        file,
        shape,
        layout,
        values,
    })
}

/// `resident` cut into blocks of whole rows in proportion to `shares`.
fn split_rows(
    name: &str,
    resident: Resident,
    shares: &[usize],
    source: &str,
) -> Result<Vec<Resident>> {
    let total: usize = shares.iter().sum();
    // A tensor of no axes has no rows to cut (a hostile header may give one any shape).
    let rows = resident.shape.first().copied();
    let Some(rows) = rows.filter(|&rows| total > 0 && rows % total == 0) else {
        return Err(Error::WeightFile {
            file: source.to_string(),
            message: format!(
                "tensor `{name}` of shape {:?} does not split into parts of {shares:?} shares",
                resident.shape
            ),
        });
    };
    let unit = rows / total;
    // Each piece's first row and row count.
    let pieces: Vec<(usize, usize)> = shares
        .iter()
        .scan(0, |first, &share| {
            let piece = (*first, share * unit);
            *first += share * unit;
            Some(piece)
        })
        .collect();
    let shape_of = |piece_rows: usize| {
        let mut shape = resident.shape.clone();
        shape[0] = piece_rows;
        shape
    };
    let blocks = match resident.values {
        Err(dtype) => {
            return Ok(pieces
                .iter()
                .map(|&(_, n)| Resident {
                    file: resident.file.clone(),
                    shape: shape_of(n),
                    layout: resident.layout,
                    values: Err(dtype.clone()),
                })
                .collect());
        }
        Ok(parts) if parts.blocks.len() == 1 => parts.blocks.into_iter().next().expect("one block"),
        Ok(_) => {
            return Err(Error::WeightFile {
                file: source.to_string(),
                message: format!("tensor `{name}` is too large to split on this device"),
            });
        }
    };
    // The values of one row: the product of the other axes.
    let per_row: usize = resident.shape[1..].iter().product();
    Ok(pieces
        .iter()
        .map(|&(first, n)| Resident {
            file: resident.file.clone(),
            shape: shape_of(n),
            layout: resident.layout,
            values: Ok(Parts {
                blocks: vec![if resident.layout == Layout::FilterMatrix {
                    // Stored [K, out]: a block of outputs is a block of columns.
                    let k = per_row;
                    blocks
                        .clone()
                        .reshape([k, rows])
                        .slice([0..k, first..first + n])
                        .reshape([k * n])
                } else {
                    blocks.clone().slice(first * per_row..(first + n) * per_row)
                }],
            }),
        })
        .collect())
}

/// The suffix of a weight's scale in "scaled" fp8 files (ComfyUI's): the weight's values are
/// its stored values times this one-value tensor.
pub const SCALE_SUFFIX: &str = ".scale_weight";

impl Weights {
    /// Each `X.weight` that has an `X.scale_weight` beside it (ComfyUI's "scaled" fp8 files)
    /// multiplied by that scale on the device, and the scales gone: the weights as the model
    /// uses them. A scale of more than one value, or without its weight, is a bad file.
    pub fn with_scales_applied(self) -> Result<Weights> {
        let Backing::Resident(mut tensors) = self.backing else {
            return Err(Error::InvalidInput(
                "only loaded weights can be rescaled".into(),
            ));
        };
        let scales: Vec<String> = tensors
            .keys()
            .filter(|name| name.ends_with(SCALE_SUFFIX))
            .cloned()
            .collect();
        let bad = |message: String| Error::WeightFile {
            file: self.source.clone(),
            message,
        };
        for name in scales {
            let scale = tensors.remove(&name).expect("listed above");
            let weight_name = format!("{}.weight", name.trim_end_matches(SCALE_SUFFIX));
            if scale.shape.iter().product::<usize>() != 1 {
                return Err(bad(format!(
                    "`{name}` has shape {:?}; a weight's scale is one value",
                    scale.shape
                )));
            }
            let weight = tensors.get_mut(&weight_name).ok_or_else(|| {
                bad(format!(
                    "`{name}` scales `{weight_name}`, which the file lacks"
                ))
            })?;
            let (Ok(factor), Ok(parts)) = (scale.values, weight.values.as_mut()) else {
                continue; // an undecodable dtype: refused by name when the model reads it
            };
            let factor = factor
                .blocks
                .into_iter()
                .next()
                .expect("one value")
                .reshape([1]);
            for block in &mut parts.blocks {
                *block = block.clone() * factor.clone();
            }
        }
        Ok(Weights::over(
            self.source.clone(),
            Backing::Resident(tensors),
            &self.device,
        )
        .with_kernels(self.kernels))
    }
}

impl Weights {
    /// Moves the tensors into `parts` new sets under new names, as `route` says for each
    /// (a single-file checkpoint splitting into its components). Nothing is copied except
    /// the fused tensors that [`Regroup::Split`] cuts into blocks of rows.
    pub fn regroup(
        self,
        parts: usize,
        mut route: impl FnMut(&str) -> Regroup,
    ) -> Result<Vec<Weights>> {
        let Backing::Resident(tensors) = self.backing else {
            return Err(Error::InvalidInput(
                "only loaded weights can be regrouped".into(),
            ));
        };
        let mut groups: Vec<HashMap<String, Resident>> =
            (0..parts).map(|_| HashMap::new()).collect();
        let mut place = |part: usize, name: String, resident: Resident| -> Result<()> {
            let group = groups.get_mut(part).ok_or_else(|| {
                Error::InvalidInput(format!("tensor `{name}` routed to part {part} of {parts}"))
            })?;
            if group.insert(name.clone(), resident).is_some() {
                return Err(Error::WeightFile {
                    file: self.source.clone(),
                    message: format!("two tensors map to `{name}`"),
                });
            }
            Ok(())
        };
        for (name, resident) in tensors {
            match route(&name) {
                Regroup::Drop => {}
                Regroup::Move { part, name } => place(part, name, resident)?,
                Regroup::Transpose { part, name } => {
                    let transposed = transpose_matrix(&name, resident, &self.source)?;
                    place(part, name, transposed)?
                }
                Regroup::SwapHalves { part, name } => {
                    let swapped = swap_halves(&name, resident, &self.source)?;
                    place(part, name, swapped)?
                }
                Regroup::Split { part, pieces } => {
                    let shares: Vec<usize> = pieces.iter().map(|(_, share)| *share).collect();
                    for (piece, (new_name, _)) in
                        split_rows(&name, resident, &shares, &self.source)?
                            .into_iter()
                            .zip(pieces)
                    {
                        place(part, new_name, piece)?;
                    }
                }
            }
        }
        Ok(groups
            .into_iter()
            .map(|tensors| {
                Weights::over(
                    self.source.clone(),
                    Backing::Resident(tensors),
                    &self.device,
                )
                .with_kernels(self.kernels)
            })
            .collect())
    }
}
