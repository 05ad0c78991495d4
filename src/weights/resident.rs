//! One tensor as it lies on the device: its values in blocks the adapter can bind, in the
//! layout its kernels read (convolution filters reordered for the product they run as).

use std::rc::Rc;

use burn::tensor::{Device, Tensor, TensorData};

/// One uploaded tensor, flat; a model's request reshapes it (a free view).
pub(super) struct Resident {
    /// The file it came from (shards differ).
    pub(super) file: Rc<str>,
    pub(super) shape: Vec<usize>,
    /// How its values lie on the device (see [`layout_for`]).
    pub(super) layout: Layout,
    /// `Err(dtype)` for a tensor this runtime cannot decode.
    pub(super) values: std::result::Result<Parts, String>,
}

/// A tensor on the device: whole, or, where it is larger than the adapter can bind in one
/// buffer (a big vocabulary's embedding), as consecutive blocks of whole rows.
pub(super) struct Parts {
    pub(super) blocks: Vec<Tensor<1>>,
}

/// How a weight's values lie on the device. Convolution filters of more than one tap go to
/// GPUs reordered for the product a convolution is computed as, read back in PyTorch's
/// [out, in, kh, kw] order as a view without a copy; everything else (1x1 kernels, which
/// products read as PyTorch's [out, in] as it is, and every weight on the CPU backend) as
/// the file gives it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Layout {
    AsGiven,
    /// [kh, kw, in, out]: the [K, N] matrix, row-major, that a convolution as gathered
    /// patches multiplies by (`kernels::conv2d_im2col`), and that splits along K into
    /// [parts, K / parts, N] as a free view (burn's matmul copies any other layout of it on
    /// every call).
    FilterMatrix,
    /// [out, kh, kw, in]: each output's filter as one row over K in the filter matrix's
    /// order, which the lanes matmul on software adapters reads as the transposed [K, N]
    /// (`kernels::conv2d_fused`): each lane then reads its columns' values of K in
    /// sequence. Read as [K, N] rows instead, SD 1.5's 16x16 convolutions ran at half the
    /// rate on lavapipe (their rows lie 5 KB apart).
    FilterRows,
}

/// The layout a weight of `shape` takes on `device`: a filter of more than one tap goes to a
/// GPU as the filter matrix, or as filter rows on a software adapter with subgroups where the
/// lanes matmul serves its channels (`kernels::matmul_kernel`: in and out in fours).
pub(super) fn layout_for(shape: &[usize], device: &Device) -> Layout {
    if shape.len() != 4 || shape[2] * shape[3] == 1 || !crate::device::is_gpu(device) {
        return Layout::AsGiven;
    }
    let limits = crate::device::limits(device);
    let lanes = limits.software
        && limits.subgroup_lanes.is_some()
        && shape[0].is_multiple_of(4)
        && shape[1].is_multiple_of(4);
    if lanes {
        Layout::FilterRows
    } else {
        Layout::FilterMatrix
    }
}

impl Layout {
    /// PyTorch-ordered values of a weight of `shape`, reordered on the host before the upload.
    pub(super) fn reorder(self, values: Vec<f32>, shape: &[usize]) -> Vec<f32> {
        if self == Layout::AsGiven {
            return values;
        }
        let [o, i, kh, kw] = [shape[0], shape[1], shape[2], shape[3]];
        let taps = kh * kw;
        let mut out = vec![0.0; values.len()];
        for (f, filter) in values.chunks_exact(i * taps).enumerate() {
            for c in 0..i {
                for t in 0..taps {
                    let at = match self {
                        Layout::FilterMatrix => (t * i + c) * o + f,
                        _ => (f * taps + t) * i + c,
                    };
                    out[at] = filter[c * taps + t];
                }
            }
        }
        out
    }

    /// The stored values seen in PyTorch's order, without a copy.
    pub(super) fn view<const D: usize>(self, flat: Tensor<1>, shape: [usize; D]) -> Tensor<D> {
        let (order, axes) = match self {
            Layout::AsGiven => return flat.reshape(shape),
            // Stored [kh, kw, in, out]: out is axis 3, in axis 2, the taps axes 0 and 1.
            Layout::FilterMatrix => ([2, 3, 1, 0], [3, 2, 0, 1]),
            // Stored [out, kh, kw, in].
            Layout::FilterRows => ([0, 2, 3, 1], [0, 3, 1, 2]),
        };
        let stored: [usize; D] = std::array::from_fn(|d| shape[order[d]]);
        let axes: [usize; D] = std::array::from_fn(|d| axes[d]);
        flat.reshape(stored).permute(axes)
    }
}

/// Uploads `values` whole, or in blocks of whole rows of at most `max_block` bytes where the
/// device cannot bind it in one buffer. Rows are along the first axis longer than 1 (SD 3's
/// position table is [1, positions, width]).
pub(super) fn upload_in_blocks(
    values: Vec<f32>,
    shape: &[usize],
    max_block: u64,
    device: &Device,
) -> Parts {
    let bytes = values.len() as u64 * 4;
    let shape = &shape[shape.iter().take_while(|&&d| d == 1).count()..];
    let row = shape.iter().skip(1).product::<usize>().max(1);
    let rows_per_block = ((max_block / 4) as usize / row).max(1);
    if bytes <= max_block || shape.len() < 2 || rows_per_block >= shape[0] {
        let n = values.len();
        return Parts {
            blocks: vec![Tensor::from_data(TensorData::new(values, [n]), device)],
        };
    }
    let blocks = values
        .chunks(rows_per_block * row)
        .map(|block| Tensor::from_data(TensorData::new(block.to_vec(), [block.len()]), device))
        .collect();
    Parts { blocks }
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests {
    use super::*;

    #[test]
    fn filter_weights_read_back_in_pytorch_order() {
        let shape = [2, 3, 2, 2];
        let values: Vec<f32> = (0..24).map(|v| v as f32).collect();
        let device = crate::device::cpu();
        for layout in [Layout::FilterMatrix, Layout::FilterRows] {
            let stored = layout.reorder(values.clone(), &shape);
            match layout {
                // Row (tap, channel) of the [K, out] matrix holds that weight of each output:
                // tap (0, 1) of input channel 0 is row 3, value 1 of output 0 and value 13 of
                // output 1.
                Layout::FilterMatrix => assert_eq!(&stored[6..8], &[1.0, 13.0]),
                // Output 1's row starts with tap (0, 0) of each input channel: 12, 16, 20.
                _ => assert_eq!(&stored[12..15], &[12.0, 16.0, 20.0]),
            }
            let flat = Tensor::from_data(TensorData::new(stored, [24]), &device);
            let seen = layout.view(flat, shape);
            let got = seen.into_data().try_to_vec::<f32>().unwrap();
            assert_eq!(got, values, "{layout:?}");
        }
    }

    #[test]
    fn a_table_with_a_leading_unit_axis_splits_along_its_rows() {
        let device = crate::device::cpu();
        let values: Vec<f32> = (0..40).map(|v| v as f32).collect();
        // [1, 10, 4] in blocks of at most 3 rows (48 bytes): 3 + 3 + 3 + 1 rows.
        let parts = upload_in_blocks(values, &[1, 10, 4], 48, &device);
        let lengths: Vec<usize> = parts.blocks.iter().map(|b| b.dims()[0]).collect();
        assert_eq!(lengths, [12, 12, 12, 4]);
    }
}
