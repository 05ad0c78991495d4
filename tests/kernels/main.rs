#![cfg(not(target_arch = "wasm32"))]
//! The fused WGSL kernels (shaders/, src/kernels/) against the same operations composed from
//! burn's own on the CPU backend, on shapes that reach their edges: groups longer than a
//! workgroup, query counts that are no multiple of a workgroup, cross-attention, heads of
//! several sizes, inputs stored channels-last, and f16 storage. Needs the wgpu backend: set
//! LINA_TEST_GPU=1 (CI does, on lavapipe). One module per family of kernels, as in
//! src/kernels/; here the helpers they share and the checks that span families.

#[path = "../common/mod.rs"]
mod common;

mod attention;
mod conv;
mod matmul;
mod norm;
mod rows;
mod step;
mod timings;

use burn::tensor::{Device, FloatDType, Tensor, TensorData};
use lina_runtime::StableDiffusion;
use lina_runtime::device::{GpuRequest, Precision};
use lina_runtime::kernels::Kernels;
use lina_runtime::source::DirSource;

use crate::attention::check_attention;
use crate::common::{gpu_device, max_abs_diff, values};
use crate::conv::check_im2col;
use crate::matmul::{check_matmul_kernels, lanes_kernels};
use crate::norm::check_norms;
use crate::rows::check_rows;
use crate::step::check_guided_step;

/// The same random values on the CPU and on `gpu` (in the GPU's float type).
fn pair<const D: usize>(shape: [usize; D], seed: u64, gpu: &Device) -> (Tensor<D>, Tensor<D>) {
    let cpu = lina_runtime::device::cpu();
    let mut rng = lina_runtime::rng::Rng::new(seed);
    let n: usize = shape.iter().product();
    let data: Vec<f32> = rng.normals(n).iter().map(|v| v * 2.0 + 0.5).collect();
    let on_cpu = Tensor::<D>::from_data(TensorData::new(data.clone(), shape), &cpu);
    let on_gpu = Tensor::<D>::from_data(TensorData::new(data, shape), gpu);
    (on_cpu, on_gpu)
}

fn read<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    values(t.cast(FloatDType::F32))
}

/// The largest difference from `want`, over its largest value: sums over hundreds of
/// products of values near 2 grow with their length.
fn relative(got: Vec<f32>, want: &[f32]) -> f32 {
    let peak = want.iter().fold(0f32, |m, v| m.max(v.abs()));
    max_abs_diff(&got, want) / peak
}

fn check_all(gpu: &Device, tolerance: f32, label: &str) {
    // Every norm both ways for short groups: a workgroup per group (GPUs) and an invocation
    // per group (software adapters).
    for wide in [false, true] {
        check_norms(gpu, tolerance, &format!("{label}, wide {wide}"), wide);
    }
    check_attention(gpu, tolerance, label);
    check_rows(gpu, tolerance, label);
    check_im2col(gpu, tolerance, label);
    check_matmul_kernels(gpu, tolerance, label, &lanes_kernels(gpu, label), false);
    check_guided_step(gpu, tolerance, label);
}

#[test]
fn fused_kernels_compute_what_burns_operations_compute() {
    let Some(gpu) = gpu_device() else { return };
    check_all(&gpu, 1e-4, "f32");

    // f16 storage keeps 11 bits: values near 10 are stored within 0.005.
    check_all(&f16_device(), 0.01, "f16");
}

/// A device that computes in f16: LINA_TEST_GPU=1 asks for every GPU capability, so no
/// shader-f16 is a failure.
fn f16_device() -> Device {
    lina_runtime::device::gpu_with(&GpuRequest {
        max_binding_bytes: None,
        precision: Precision::F16,
    })
    .unwrap_or_else(|e| panic!("LINA_TEST_GPU=1 but no f16 device: {e}"))
}

/// How far sd1_tiny's UNet on `device` with `kernels` is from diffusers' output on the
/// fixture's inputs: the largest difference over the largest value.
fn tiny_unet_off_by(device: &Device, kernels: Kernels) -> f32 {
    use lina_runtime::models::unet::{UNet, UNetConfig};
    use lina_runtime::weights::Weights;

    let reference = common::Reference::open("sd1_tiny");
    let config = String::from_utf8(common::read_fixture("sd1_tiny/unet/config.json")).unwrap();
    let file = "sd1_tiny/unet/diffusion_pytorch_model.safetensors";
    let weights = Weights::from_bytes(file, &common::read_fixture(file), device)
        .unwrap()
        .with_kernels(kernels);
    let unet = UNet::load(UNetConfig::from_json(&config).unwrap(), &weights).unwrap();
    let sample: Tensor<4> = reference.tensor("unet_sample", device);
    let context: Tensor<3> = reference.tensor("unet_encoder_hidden_states", device);
    let t = reference.f32("unet_timestep").1[0] as f64;
    relative(
        read(unet.forward(sample, t, &context)),
        &reference.f32("unet_out").1,
    )
}

#[test]
fn the_kernel_choice_belongs_to_each_model() {
    let Some(gpu) = gpu_device() else { return };
    let dtype = burn::tensor::DType::F32;
    assert!(Kernels::Fused.fused_for(&gpu, dtype));
    assert!(!Kernels::Fused.fused_for(&lina_runtime::device::cpu(), dtype));
    assert!(!Kernels::Burn.fused_for(&gpu, dtype));
    // Two models side by side, one with each choice: each keeps its own.
    let fixture = common::fixture("sd1_tiny");
    let fused = StableDiffusion::load(&DirSource::new(&fixture), &gpu).unwrap();
    let burn_only =
        StableDiffusion::load_with(&DirSource::new(&fixture), &gpu, Kernels::Burn).unwrap();
    assert_eq!(fused.kernels(), Kernels::Fused);
    assert_eq!(burn_only.kernels(), Kernels::Burn);
}
