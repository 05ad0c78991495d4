#![cfg(not(target_arch = "wasm32"))]
//! Decoding in row bands (`VaeDecoder::decode_in_bands`): the up blocks run on horizontal
//! bands of their activations, each convolution borrowing its neighbours' edge rows and each
//! group norm taking the whole tensor's statistics, so the image is the whole decode's, while
//! no buffer holds a whole full-resolution activation.

mod common;

use burn::tensor::{Tensor, TensorData};
use common::{fixture, read_fixture, test_devices, values};
use lina_runtime::models::vae::{VaeConfig, VaeDecoder, band_peak, decoder_bands};
use lina_runtime::weights::Weights;

fn decoder(device: &burn::tensor::Device) -> VaeDecoder {
    let config =
        VaeConfig::from_json(&String::from_utf8(read_fixture("sd1_tiny/vae/config.json")).unwrap())
            .unwrap();
    let bytes = std::fs::read(fixture("sd1_tiny/vae/diffusion_pytorch_model.safetensors")).unwrap();
    let weights = Weights::from_bytes("vae", &bytes, device).unwrap();
    VaeDecoder::load(config, &weights).unwrap()
}

/// Seeded latents of `h` x `w` cells, spread like a sampler's final latents.
fn latents(h: usize, w: usize, device: &burn::tensor::Device) -> Tensor<4> {
    let normals = lina_runtime::rng::Rng::new(7).normals(4 * h * w);
    Tensor::from_data(TensorData::new(normals, [1, 4, h, w]), device)
}

#[test]
fn banded_decoding_gives_the_whole_decode_s_image() {
    for (name, device) in test_devices() {
        let vae = decoder(&device);
        // Uneven bands too: 13 rows in 2, 3 and 13 bands (one latent row each).
        let z = latents(13, 10, &device);
        let whole = values(vae.decode(z.clone()));
        for bands in [2, 3, 13] {
            let banded = values(vae.decode_in_bands(z.clone(), bands));
            let err = common::max_abs_diff(&banded, &whole);
            eprintln!("{name}, {bands} bands: max abs difference {err:.2e}");
            // Only the order of the group norms' sums differs.
            assert!(err < 1e-5, "{name}, {bands} bands: {err}");
        }
    }
}

/// At 512x512 each of the decoder's last group norms reduces 2^19 values per group, past
/// where burn's wgpu reduction goes wrong (`nn::sum_last` works around it): whole and in
/// bands, every GPU device must draw the CPU's image. (The CPU's own banded decode is the
/// test above; without a GPU, this one checks the CPU's 512-pixel bands against its whole
/// decode.)
#[test]
fn a_512_pixel_decode_matches_the_cpu_whole_and_in_bands() {
    let cpu = lina_runtime::device::cpu();
    let expected = values(decoder(&cpu).decode(latents(64, 64, &cpu)));
    let gpus: Vec<_> = test_devices()
        .into_iter()
        .filter(|(name, _)| *name != "cpu")
        .collect();
    if gpus.is_empty() {
        let banded = values(decoder(&cpu).decode_in_bands(latents(64, 64, &cpu), 3));
        let err = common::max_abs_diff(&banded, &expected);
        assert!(err < 1e-3, "cpu, in 3 bands: {err}");
    }
    for (name, device) in gpus {
        let vae = decoder(&device);
        let z = latents(64, 64, &device);
        for (how, image) in [
            ("whole", values(vae.decode(z.clone()))),
            ("in 3 bands", values(vae.decode_in_bands(z.clone(), 3))),
        ] {
            let err = common::max_abs_diff(&image, &expected);
            eprintln!("{name}, {how}: max abs difference from the CPU {err:.2e}");
            assert!(err < 1e-3, "{name}, {how}: {err}");
        }
    }
}

#[test]
fn bands_are_as_few_as_the_limit_allows() {
    let vae = decoder(&lina_runtime::device::cpu());
    let config = vae.config();
    // The tiny VAE's largest activation is its last block's input: 16 channels at full size.
    assert_eq!(config.decoder_peak(64, 64).1, [1, 16, 512, 512]);
    let limit = 8 << 20;
    // 16 MiB whole; two bands of 32 latent rows, 258 pixel rows with the halo, 8.06 MiB;
    // three bands of at most 22 rows fit.
    assert_eq!(decoder_bands(config, 64, 64, limit), 3);
    let (_, shape) = band_peak(config, 64, 64, 3);
    assert_eq!(shape, [1, 16, 22 * 8 + 2, 512]);
    // What fits is decoded whole.
    assert_eq!(decoder_bands(config, 32, 32, limit), 1);
}
