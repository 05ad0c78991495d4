//! The lanes and coop matmuls, on products and on convolutions read in place.

use burn::tensor::{Device, Tensor};
use lina_runtime::kernels::{CoopBlock, Kernels, MatmulKernel};

use crate::common::{gpu_device, values};
use crate::conv::{Conv, conv_case};
use crate::{f16_device, pair, read, relative, tiny_unet_off_by};

/// The lanes matmul (shaders/matmul_lanes.wgsl) where `gpu` has subgroups of one size:
/// lavapipe (CI's adapter) has.
pub(super) fn lanes_kernels(gpu: &Device, label: &str) -> Vec<MatmulKernel> {
    let limits = lina_runtime::device::limits(gpu);
    let Some(lanes) = limits.subgroup_lanes else {
        assert!(
            !limits.adapter.to_lowercase().contains("llvmpipe"),
            "{label}: lavapipe without subgroup lanes ({})",
            limits.adapter
        );
        eprintln!(
            "{label}: no subgroup lanes on {}: the lanes matmul is not run here",
            limits.adapter
        );
        return Vec::new();
    };
    vec![MatmulKernel::Lanes { lanes }]
}

/// The side of the cooperative matrices `gpu` multiplies in and its subgroups' size; none
/// where it has no matrices (CI's lavapipe, Mesa 22.3: then `what` is not run here), unless
/// LINA_TEST_COOP=1 asks for them.
pub(super) fn coop_matrices(gpu: &Device, what: &str) -> Option<(u32, u32)> {
    let limits = lina_runtime::device::limits(gpu);
    let found = limits.coop_size.zip(limits.subgroup_lanes);
    if found.is_none() {
        assert!(
            std::env::var("LINA_TEST_COOP").as_deref() != Ok("1"),
            "LINA_TEST_COOP=1 but {} multiplies in no cooperative matrices",
            limits.adapter
        );
        eprintln!(
            "{} has no cooperative matrices: {what} is not run here \
             (scripts/lavapipe-coop.sh runs it on a lavapipe that has them)",
            limits.adapter
        );
    }
    found
}

/// The coop matmul (shaders/matmul_coop.wgsl) with each block of sums per workgroup that
/// fits `gpu`, an f16 device that multiplies in cooperative matrices; none where it does not.
pub(super) fn coop_kernels(gpu: &Device) -> Vec<MatmulKernel> {
    let limits = lina_runtime::device::limits(gpu);
    let Some((size, lanes)) = coop_matrices(gpu, "the coop matmul") else {
        return Vec::new();
    };
    // The runtime's choice (2 x 2 matrices per subgroup on lavapipe, the sum whole, the
    // blocks' rows padded); each invocation's share of the next step prefetched into
    // registers, the sum cut in 3 (as the runtime cuts small products on GPUs, here into
    // parts that do not divide K, so that each part's first step is fetched from its own
    // offset); then 4 x 4 matrices per subgroup where they fit, the blocks' rows unpadded,
    // and steps of 4 matrices' worth of K. The first two run on every shape.
    let usual = CoopBlock::new(2);
    let blocks = [
        CoopBlock {
            prefetch: true,
            splits: 3,
            ..usual
        },
        CoopBlock::new(4),
        CoopBlock {
            padded: false,
            ..usual
        },
        CoopBlock { depth: 4, ..usual },
    ];
    let mut kernels = vec![MatmulKernel::Coop {
        size,
        lanes,
        block: None,
    }];
    for block in blocks {
        if !lina_runtime::kernels::coop_fits(&limits, size, lanes, block) {
            assert!(
                block.tiles > 2,
                "the coop matmul's block {block:?} does not fit {}",
                limits.adapter
            );
            continue;
        }
        let block = Some(block);
        kernels.push(MatmulKernel::Coop { size, lanes, block });
    }
    kernels
}

/// Our matmul kernels against burn's operations on the CPU: products whose rows and columns
/// are no multiple of a workgroup's block, with the weight stored as [K, N] rows and as a
/// transposed [N, K], with and without a bias; and convolutions read in place, with padding,
/// a stride, 1x1 kernels, a 1x1 input, and inputs stored channels-last or not. The coop
/// matmul also on sizes no multiple of 4 and a depth no multiple of its steps (copied value
/// by value), and on sizes in eights (copied in runs of eight). With `few`, one product and
/// two convolutions: the coop matmul writes a kernel per shape, and lavapipe takes seconds
/// to compile each.
pub(super) fn check_matmul_kernels(
    gpu: &Device,
    tolerance: f32,
    label: &str,
    kernels: &[MatmulKernel],
    few: bool,
) {
    for &kernel in kernels {
        let coop = matches!(kernel, MatmulKernel::Coop { .. });
        // (rows, depth, cols): rows past a workgroup's and not a multiple; a column block cut
        // short.
        let mut products = vec![(37, 20, 12), (5, 8, 44)];
        products.push(if coop { (131, 77, 70) } else { (70, 132, 36) });
        if coop {
            products.push((1, 3, 5));
        }
        if coop {
            products.push((70, 136, 48));
        }
        if few {
            products = vec![(131, 136, 72)];
        }
        for (i, &(m, k, n)) in products.iter().enumerate() {
            let seed = 80 + 4 * i as u64;
            let (a, ga) = pair([m, k], seed, gpu);
            let (w, gw) = pair([n, k], seed + 1, gpu);
            let (bias, g_bias) = pair([n], seed + 2, gpu);
            for with_bias in [false, true] {
                let mut want = a.clone().matmul(w.clone().transpose());
                if with_bias {
                    want = want + bias.clone().reshape([1, n]);
                }
                let want = values(want);
                // [K, N] as the transpose of [N, K] (a linear layer's weight), then as rows.
                let rows_layout = Tensor::<2>::from_data(gw.clone().transpose().into_data(), gpu);
                for (how, b) in [
                    ("transposed", gw.clone().transpose()),
                    ("rows", rows_layout),
                ] {
                    let got = lina_runtime::kernels::matmul(
                        ga.clone(),
                        &b,
                        with_bias.then_some(&g_bias),
                        kernel,
                    );
                    let diff = relative(read(got), &want);
                    assert!(
                        diff < tolerance,
                        "{label}: {kernel:?} {m}x{k}x{n}, b {how}, bias {with_bias}, off by {diff} (relative)"
                    );
                }
            }
        }
        let mut convs: Vec<Conv> = vec![
            (2, 36, 9, 11, 44, 3, 1, true),
            (1, 4, 8, 8, 72, 3, 1, true),
            (1, 16, 9, 8, 20, 3, 2, true),
            (2, 40, 5, 7, 36, 1, 1, false),
            (2, 8, 1, 1, 12, 3, 1, true),
        ];
        if coop {
            convs.extend([
                (2, 3, 10, 9, 5, 3, 1, true),
                (1, 37, 12, 12, 70, 3, 2, false),
            ]);
        }
        if coop {
            convs.push((2, 16, 9, 9, 24, 3, 1, true));
        }
        if few {
            convs.drain(..convs.len() - 2);
        }
        for (i, &conv) in convs.iter().enumerate() {
            let (_, _, _, _, _, taps, stride, with_bias) = conv;
            let case = conv_case(conv, 60 + 4 * i as u64, gpu);
            for (gx, gw) in case.layouts {
                let got = lina_runtime::kernels::conv2d_fused(
                    gx,
                    &gw,
                    with_bias.then_some(&case.bias),
                    stride,
                    taps / 2,
                    kernel,
                );
                let diff = relative(read(got), &case.want);
                assert!(
                    diff < tolerance,
                    "{label}: {kernel:?} convolution {conv:?} off by {diff} (relative)"
                );
            }
        }
    }
}

/// The coop matmul on an f16 device that multiplies in cooperative matrices (a GPU with
/// tensor cores; without one, `scripts/lavapipe-coop.sh` runs this on a lavapipe that has
/// them, as scripts/test.sh does), against burn's operations on the CPU and, through a tiny
/// UNet, against diffusers; and that the runtime picks it for f16 products there.
#[test]
pub(super) fn the_coop_matmul_computes_what_burns_operations_compute() {
    let Some(_) = gpu_device() else { return };
    let f16 = f16_device();
    let kernels = coop_kernels(&f16);
    if kernels.is_empty() {
        return;
    }
    // The runtime's choice: on software adapters the lanes matmul wherever it serves (the
    // emulated matrices are slower there), the coop matmul for the rest; on GPUs the coop
    // matmul for every f16 product.
    let limits = lina_runtime::device::limits(&f16);
    let choice = |depth, cols| {
        lina_runtime::kernels::matmul_kernel(
            Kernels::Fused,
            &f16,
            burn::tensor::DType::F16,
            depth,
            cols,
        )
    };
    let (usual, odd) = (choice(320, 640), choice(27, 5));
    assert!(
        matches!(odd, Some(MatmulKernel::Coop { block: None, .. })),
        "a 27-deep product into 5 columns takes {odd:?}, not the coop matmul"
    );
    if limits.software {
        assert!(
            matches!(usual, Some(MatmulKernel::Lanes { .. })),
            "{usual:?}"
        );
    } else {
        assert_eq!(usual, odd, "f16 products on a GPU take one kernel");
    }
    let forced = lina_runtime::kernels::matmul_kernel(
        Kernels::Matrices,
        &f16,
        burn::tensor::DType::F16,
        320,
        640,
    );
    assert_eq!(
        forced, odd,
        "Kernels::Matrices takes the matrices for every f16 product"
    );
    let refused = lina_runtime::kernels::matmul_kernel(
        Kernels::NoMatrices,
        &f16,
        burn::tensor::DType::F16,
        27,
        5,
    );
    assert_eq!(
        refused, None,
        "Kernels::NoMatrices leaves a product the matrices would take to burn's matmul"
    );

    // Every shape through the runtime's choice; the other blocks on a few.
    check_matmul_kernels(&f16, 0.01, "f16", &kernels[..2], false);
    check_matmul_kernels(&f16, 0.01, "f16", &kernels[2..], true);

    // Through a whole UNet against diffusers, every product in the matrices, beside the same
    // f16 UNet without them: f16 storage alone keeps the two about as far from the f32
    // reference.
    let with_matrices = tiny_unet_off_by(&f16, Kernels::Matrices);
    let without = tiny_unet_off_by(&f16, Kernels::Fused);
    eprintln!(
        "sd1_tiny's f16 UNet off by {with_matrices:.1e} with the matrices, {without:.1e} without"
    );
    assert!(
        with_matrices < 0.01 && with_matrices < 2.0 * without + 1e-3,
        "sd1_tiny's f16 UNet off by {with_matrices} (relative) with the matrices, {without} without"
    );
}
