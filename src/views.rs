//! Views into tensors that layers ([`crate::nn`]) pass to kernels ([`crate::kernels`]): parts
//! of one matmul's output, read where they lie instead of copied out. Both modules use them,
//! so they live apart from either.

use burn::tensor::Tensor;

/// One value per sample and channel, added to a group norm's input: columns
/// `first..first + C` of `table` [B, N]. Every ResNet block's time projection is such a
/// slice of one matmul's output.
pub struct ChannelShift<'a> {
    pub table: &'a Tensor<2>,
    pub first: usize,
}

/// One of attention's q, k and v: `width` columns of `rows` [B, L, N], from column `first` on.
/// A fused projection computes [q | k | v] (or [k | v]) in one matmul, and attention reads
/// each part where it lies.
#[derive(Clone)]
pub struct Columns {
    pub rows: Tensor<3>,
    pub first: usize,
    pub width: usize,
}

impl Columns {
    /// `rows` cut into `N` equal parts side by side.
    pub fn split<const N: usize>(rows: Tensor<3>) -> [Self; N] {
        let width = rows.dims()[2] / N;
        std::array::from_fn(|i| Self {
            rows: rows.clone(),
            first: i * width,
            width,
        })
    }

    /// The columns as a tensor of their own (a view where they are not all of `rows`).
    pub fn into_tensor(self) -> Tensor<3> {
        if self.width == self.rows.dims()[2] {
            self.rows
        } else {
            self.rows.narrow(2, self.first, self.width)
        }
    }
}

impl From<Tensor<3>> for Columns {
    fn from(rows: Tensor<3>) -> Self {
        let width = rows.dims()[2];
        Self {
            rows,
            first: 0,
            width,
        }
    }
}
