//! `lina bench-kernels`: the UNet's layer kinds at SD 1.5's shapes, each by burn's kernels
//! and by ours, with the square product that sets the adapter's matrix peak.

use std::path::PathBuf;
use std::time::Instant;

use lina_runtime::kernels::{CoopBlock, Kernels, MatmulKernel};
use lina_runtime::{Error, Result};

use super::differences;
use crate::common::{self, DeviceArg};

#[derive(clap::Args)]
pub struct Args {
    /// Timed runs of each case, after one warm-up; the median is reported.
    #[arg(long, default_value_t = 10, value_parser = common::positive)]
    repeat: usize,
    /// Only the cases whose name contains this.
    #[arg(long)]
    only: Option<String>,
    #[command(flatten)]
    device: DeviceArg,
    /// Write one JSON object per case here too (JSON lines).
    #[arg(long)]
    json: Option<PathBuf>,
}

/// One timed way to compute a case.
#[derive(serde::Serialize)]
struct KernelTiming {
    case: String,
    kind: &'static str,
    how: String,
    ms: f64,
    /// Floating-point operations per second (bytes per second for norms), in units of 1e12.
    tera_per_s: f64,
    /// Largest difference from the first way's output, over its largest value.
    error: f64,
}

/// Our matmul kernels that suit the adapter, named for the table: the lanes matmul where it
/// has subgroups of one size, and cooperative matrices where the device multiplies in them
/// (f16 devices only).
fn our_matmuls(limits: &lina_runtime::device::Limits) -> Vec<(String, MatmulKernel)> {
    let mut kernels = Vec::new();
    if let Some(lanes) = limits.subgroup_lanes {
        kernels.push(("lanes".to_string(), MatmulKernel::Lanes { lanes }));
        // The runtime's choice (its block, and its sum over K cut where the product is
        // small), and each block with the sum whole: as the runtime has it (rows in
        // workgroup memory padded, two matrices of K per step, no prefetch), unpadded, four
        // matrices of K per step, and the next step prefetched into registers.
        if let Some(size) = limits.coop_size {
            let block = None;
            kernels.push((
                format!("coop {size}, chosen"),
                MatmulKernel::Coop { size, lanes, block },
            ));
            for tiles in [2, 4] {
                let side = 2 * tiles * size;
                let usual = CoopBlock::new(tiles);
                let variants = [
                    (usual, String::new()),
                    (
                        CoopBlock {
                            padded: false,
                            ..usual
                        },
                        ", unpadded".to_string(),
                    ),
                    (
                        CoopBlock { depth: 4, ..usual },
                        format!(", {} of K per step", 4 * size),
                    ),
                    (
                        CoopBlock {
                            prefetch: true,
                            ..usual
                        },
                        ", prefetched".to_string(),
                    ),
                ];
                for (block, how) in variants {
                    if lina_runtime::kernels::coop_fits(limits, size, lanes, block) {
                        kernels.push((
                            format!("coop {size}, {side}x{side}{how}"),
                            MatmulKernel::Coop {
                                size,
                                lanes,
                                block: Some(block),
                            },
                        ));
                    }
                }
            }
        }
    }
    kernels
}

/// Times the UNet's layer kinds at SD 1.5's shapes (batch 2, 64x64 latents and the levels
/// below), each by burn's kernels and by ours (the convolution as gathered patches and
/// burn's matmul; attention without workgroup memory and tiled with each key block), and
/// the square product that sets the adapter's matrix peak as burn's matmul reaches it.
pub fn run(args: Args) -> Result<()> {
    use burn::tensor::module::{conv2d, linear};
    use burn::tensor::ops::ConvOptions;
    use burn::tensor::{Distribution, Tensor};
    use lina_runtime::kernels as k;
    use lina_runtime::nn::multi_head_attention;

    let Args {
        repeat,
        only,
        device,
        json,
    } = args;
    pollster::block_on(async {
        let device = device.open().await?;
        let limits = lina_runtime::device::limits(&device);
        println!(
            "adapter: {} (f16 compute: {}, workgroup memory {} B, subgroups of {}, cooperative matrices: {})",
            limits.adapter,
            limits.computes_f16,
            limits.workgroup_bytes,
            limits
                .subgroup_lanes
                .map_or("various sizes or none".to_string(), |n| n.to_string()),
            limits
                .coop_size
                .map_or("none".to_string(), |s| format!("{s}x{s}")),
        );
        let random4 =
            |shape: [usize; 4]| Tensor::<4>::random(shape, Distribution::Normal(0.0, 1.0), &device);
        let random =
            |shape: [usize; 3]| Tensor::<3>::random(shape, Distribution::Normal(0.0, 1.0), &device);
        // Runs `f` once to warm up, then `repeat` times, reading one value back after the
        // last: the median of per-call times over three such rounds.
        let time = |f: &dyn Fn() -> Tensor<1>| -> Result<(f64, Vec<f32>)> {
            let first = pollster::block_on(lina_runtime::device::read_f32(f(), "warm-up"))?;
            let mut rounds = Vec::new();
            for _ in 0..3 {
                let started = Instant::now();
                let mut last = None;
                for _ in 0..repeat {
                    last = Some(f());
                }
                let last = last.expect("repeat is positive").narrow(0, 0, 1);
                pollster::block_on(lina_runtime::device::read_f32(last, "a timed call"))?;
                rounds.push(started.elapsed().as_secs_f64() * 1000.0 / repeat as f64);
            }
            rounds.sort_by(f64::total_cmp);
            Ok((rounds[1], first))
        };
        // Each case's lines are written as soon as it is timed: a run stopped by a timeout
        // keeps what it measured.
        let mut sink = match &json {
            Some(file) => {
                Some(std::fs::File::create(file).map_err(|e| Error::io(file.display(), e))?)
            }
            None => None,
        };
        let mut report = |case: &str,
                          kind: &'static str,
                          work: f64,
                          ways: Vec<(String, Box<dyn Fn() -> Tensor<1> + '_>)>|
         -> Result<()> {
            if only.as_ref().is_some_and(|o| !case.contains(o.as_str())) {
                return Ok(());
            }
            let mut reference: Option<Vec<f32>> = None;
            for (how, f) in ways {
                let (ms, values) = time(&*f)?;
                let error = match &reference {
                    None => 0.0,
                    Some(r) => differences(&values, r).1,
                };
                reference.get_or_insert(values);
                let tera_per_s = work / (ms / 1000.0) / 1e12;
                println!(
                    "{case:<34} {kind:<9} {how:<22} {ms:>9.3} ms {tera_per_s:>8.2} T/s  error {error:.1e}"
                );
                if let (Some(file), Some(path)) = (sink.as_mut(), json.as_ref()) {
                    use std::io::Write;
                    let timing = KernelTiming {
                        case: case.into(),
                        kind,
                        how,
                        ms,
                        tera_per_s,
                        error,
                    };
                    let line = serde_json::to_string(&timing).expect("plain numbers and strings");
                    writeln!(file, "{line}").map_err(|e| Error::io(path.display(), e))?;
                }
            }
            Ok(())
        };
        let flat4 = |t: Tensor<4>| t.reshape([-1]);
        let flat3 = |t: Tensor<3>| t.reshape([-1]);

        // Convolutions, channels-last as the UNet holds them: (side, c_in, c_out, stride).
        for (side, c_in, c_out, stride) in [
            (64, 320, 320, 1),
            (64, 960, 320, 1),
            (64, 320, 320, 2),
            (32, 640, 640, 1),
            (16, 1280, 1280, 1),
            (8, 1280, 1280, 1),
        ] {
            let x = random4([2, side, side, c_in]).permute([0, 3, 1, 2]);
            let w = random4([c_out, 3, 3, c_in]).permute([0, 3, 1, 2]);
            let b = Tensor::<1>::random([c_out], Distribution::Normal(0.0, 1.0), &device);
            let out_side = side / stride;
            let work = 2.0 * (2 * out_side * out_side * c_out * 9 * c_in) as f64;
            let mut ways: Vec<(String, Box<dyn Fn() -> Tensor<1>>)> = vec![(
                "burn".into(),
                Box::new(|| {
                    let options = ConvOptions::new([stride; 2], [1, 1], [1, 1], 1);
                    flat4(conv2d(x.clone(), w.clone(), Some(b.clone()), options))
                }),
            )];
            // Gathered patches and burn's matmul: the sum over K whole, then cut as the
            // runtime cuts it on this adapter and, around that, in half and twice as many.
            let rows = 2 * out_side * out_side;
            let chosen = k::k_splits(&limits, rows, c_out, 9 * c_in);
            let mut splits = vec![1];
            for s in [chosen / 2, chosen, chosen * 2] {
                if s > 1 && s <= 32 && !splits.contains(&s) {
                    splits.push(s);
                }
            }
            for k_splits in splits {
                let (x, w, b) = (x.clone(), w.clone(), b.clone());
                let cuts = k::GemmCuts {
                    max_bytes: None,
                    k_splits: Some(k_splits),
                };
                let how = match (k_splits, k_splits == chosen) {
                    (1, _) => "im2col + burn matmul".to_string(),
                    (s, true) => format!("im2col, K in {s} (chosen)"),
                    (s, false) => format!("im2col, K in {s}"),
                };
                ways.push((
                    how,
                    Box::new(move || {
                        flat4(k::conv2d_im2col(x.clone(), &w, Some(&b), stride, 1, cuts))
                    }),
                ));
            }
            // Our implicit GEMMs, reading the input in place: the lanes matmul where the
            // adapter has subgroups (the runtime's choice on software adapters), and in f16
            // the cooperative matrices where the device has them (the runtime's choice there).
            for (how, kernel) in our_matmuls(&limits) {
                let (x, w, b) = (x.clone(), w.clone(), b.clone());
                ways.push((
                    format!("{how}, implicit"),
                    Box::new(move || {
                        flat4(k::conv2d_fused(x.clone(), &w, Some(&b), stride, 1, kernel))
                    }),
                ));
            }
            let case = format!("conv3x3 {side}x{side} {c_in}->{c_out} s{stride}");
            report(&case, "conv", work, ways)?;
        }

        // Linear layers (tokens, in, out) and the square product that sets the peak.
        for (rows, d_in, d_out, name) in [
            (8192, 320, 960, "qkv 64x64"),
            (8192, 320, 2560, "ff in 64x64"),
            (8192, 1280, 320, "ff out 64x64"),
            (2048, 640, 5120, "ff in 32x32"),
            (4096, 4096, 4096, "square 4096 (peak)"),
        ] {
            let x = random([1, rows, d_in]);
            // Stored as a linear layer's weight is: PyTorch's [out, in], seen transposed.
            let w = Tensor::<2>::random([d_out, d_in], Distribution::Normal(0.0, 1.0), &device)
                .transpose();
            let work = 2.0 * (rows * d_in * d_out) as f64;
            let mut ways: Vec<(String, Box<dyn Fn() -> Tensor<1>>)> = vec![(
                "burn".into(),
                Box::new(|| flat3(linear(x.clone(), w.clone(), None))),
            )];
            for (how, kernel) in our_matmuls(&limits) {
                let (x, w) = (x.clone(), w.clone());
                ways.push((
                    how,
                    Box::new(move || {
                        let rows = x.clone().reshape([rows, d_in]);
                        k::matmul(rows, &w, None, kernel).reshape([-1])
                    }),
                ));
            }
            report(&format!("matmul {name}"), "matmul", work, ways)?;
        }

        // Attention: self-attention at SD 1.5's 64x64 (8 heads of 40) and SD 2.1's 96x96 (5
        // heads of 64), and cross-attention onto 77 tokens; 4 B L_q L_k D FLOPs per head and
        // sample. burn's attention makes the score matrix, 3.4 GB at 96x96 in f32: there the
        // first of ours is the reference.
        for (lq, lk, heads, d, name) in [
            (4096, 4096, 8, 40, "self 64x64"),
            (4096, 77, 8, 40, "cross 64x64"),
            (9216, 9216, 5, 64, "self 96x96, SD 2.1"),
            (9216, 77, 5, 64, "cross 96x96, SD 2.1"),
        ] {
            let q = random([2, lq, heads * d]);
            let kv = random([2, lk, heads * d]);
            let work = 4.0 * (2 * heads * lq * lk * d) as f64;
            let attend = |kernels: lina_runtime::kernels::Kernels| {
                let (q, kv) = (q.clone(), kv.clone());
                Box::new(move || {
                    flat3(multi_head_attention(
                        q.clone().into(),
                        kv.clone().into(),
                        kv.clone().into(),
                        heads,
                        false,
                        kernels,
                    ))
                }) as Box<dyn Fn() -> Tensor<1>>
            };
            // Up to SD 1.5's 64x64 self-attention; past it, burn's scores and the untiled
            // kernel are left out.
            let at_most_64 = lq * lk <= 4096 * 4096;
            let mut ways = Vec::new();
            if at_most_64 {
                ways.push(("burn".to_string(), attend(Kernels::Burn)));
            }
            // The kernel without workgroup memory (not at 96x96, where no GPU takes it and
            // it would take seconds of the GPU script's budget), the tiled one with each key
            // block that fits the adapter, the lanes kernel where the adapter has subgroups,
            // and the coop kernel where the device multiplies in cooperative matrices: the
            // runtime's block, and each block of keys beside it that fits.
            let mut kernels = Vec::new();
            if at_most_64 {
                kernels.push(k::AttentionKernel::Untiled);
            }
            for keys in [16u32, 32, 64] {
                if 2 * 4 * keys * d as u32 <= limits.workgroup_bytes {
                    kernels.push(k::AttentionKernel::Tiled { keys });
                }
            }
            if let Some(lanes) = limits.subgroup_lanes {
                kernels.push(k::AttentionKernel::Lanes { lanes });
            }
            let coop = k::attention_kernel(Kernels::Matrices, &device, burn::tensor::DType::F16, d);
            if let k::AttentionKernel::Coop {
                size,
                lanes,
                subgroups,
                keys: chosen,
            } = coop
            {
                kernels.push(coop);
                for keys in [16, 32, 64] {
                    let other = k::AttentionKernel::Coop {
                        size,
                        lanes,
                        subgroups,
                        keys,
                    };
                    if keys != chosen && k::coop_attention_fits(&limits, other, d) {
                        kernels.push(other);
                    }
                }
            }
            for kernel in kernels {
                let (q, kv) = (q.clone(), kv.clone());
                let how = match kernel {
                    k::AttentionKernel::Untiled => "ours".to_string(),
                    k::AttentionKernel::Tiled { keys } => format!("ours tiled, {keys} keys"),
                    k::AttentionKernel::Lanes { lanes } => format!("ours, {lanes} lanes"),
                    k::AttentionKernel::Coop {
                        size,
                        subgroups,
                        keys,
                        ..
                    } => {
                        let chosen = if kernel == coop { ", chosen" } else { "" };
                        format!(
                            "coop {size}, {} rows, {keys} keys{chosen}",
                            subgroups * size
                        )
                    }
                };
                ways.push((
                    how,
                    Box::new(move || {
                        flat3(k::attention_with(
                            q.clone().into(),
                            kv.clone().into(),
                            kv.clone().into(),
                            heads,
                            None,
                            kernel,
                        ))
                    }),
                ));
            }
            report(&format!("attention {name}"), "attention", work, ways)?;
        }

        // Group norm with SiLU at 64x64, 320 channels in 32 groups: bytes read and written.
        let x = random4([2, 64, 64, 320]).permute([0, 3, 1, 2]);
        let gamma = Tensor::<1>::ones([320], &device);
        let beta = Tensor::<1>::zeros([320], &device);
        let bytes = 2.0 * (2 * 320 * 64 * 64) as f64 * if limits.computes_f16 { 2.0 } else { 4.0 };
        let composed = || {
            let g = x.clone().reshape([2, 32, 10 * 64 * 64]);
            let mean = g.clone().mean_dim(2);
            let centred = g - mean;
            let var = centred.clone().powi_scalar(2).mean_dim(2);
            let normed = (centred / var.add_scalar(1e-5).sqrt()).reshape([2, 320, 64, 64]);
            let y = normed * gamma.clone().reshape([1, 320, 1, 1])
                + beta.clone().reshape([1, 320, 1, 1]);
            flat4(burn::tensor::activation::silu(y))
        };
        let ways: Vec<(String, Box<dyn Fn() -> Tensor<1>>)> = vec![
            ("burn".into(), Box::new(composed)),
            (
                "ours".into(),
                Box::new(|| flat4(k::group_norm(x.clone(), &gamma, &beta, 32, 1e-5, true))),
            ),
        ];
        report("group norm + SiLU 64x64x320", "norm", bytes, ways)?;
        Ok(())
    })
}
