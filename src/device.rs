//! Choosing where tensors live: burn's wgpu runtime (WebGPU in browsers; Vulkan, Metal or
//! DX12 natively, lavapipe on machines without a GPU) or, natively, the pure-Rust CPU backend.

use burn::tensor::{Device, Tensor};

use crate::error::{Error, Result};

/// Acquires the wgpu device once per process; later calls reuse it (burn's runtime cannot
/// be initialised twice).
pub async fn gpu() -> Result<Device> {
    #[cfg(not(target_arch = "wasm32"))]
    {
        static GPU: std::sync::OnceLock<std::result::Result<Device, String>> =
            std::sync::OnceLock::new();
        if let Some(found) = GPU.get() {
            return found.clone().map_err(Error::Device);
        }
        let made = Device::wgpu_options()
            .init_async()
            .await
            .map_err(|e| format!("no usable GPU adapter: {e}"));
        GPU.get_or_init(|| made).clone().map_err(Error::Device)
    }
    #[cfg(target_arch = "wasm32")]
    {
        thread_local! {
            static GPU: std::cell::RefCell<Option<Device>> = const { std::cell::RefCell::new(None) };
        }
        if let Some(found) = GPU.with(|g| g.borrow().clone()) {
            return Ok(found);
        }
        let made = Device::wgpu_options().init_async().await.map_err(|e| {
            Error::Device(format!(
                "WebGPU is unavailable ({e}); use a browser with WebGPU enabled"
            ))
        })?;
        GPU.with(|g| *g.borrow_mut() = Some(made.clone()));
        Ok(made)
    }
}

/// The pure-Rust CPU backend (native only): deterministic and quick for tiny models.
#[cfg(not(target_arch = "wasm32"))]
pub fn cpu() -> Device {
    Device::flex()
}

/// Reads a tensor back to the host as f32 values. Async, because browsers allow no other
/// way; `what` names the value in the error.
pub async fn read_f32<const D: usize>(tensor: Tensor<D>, what: &str) -> Result<Vec<f32>> {
    let data = tensor
        .into_data_async()
        .await
        .map_err(|e| Error::Device(format!("reading back {what} failed: {e:?}")))?;
    data.try_to_vec::<f32>()
        .map_err(|e| Error::Device(format!("unexpected data for {what}: {e:?}")))
}

/// Resolves a device by name: "cpu" or "gpu"/"wgpu".
pub async fn by_name(name: &str) -> Result<Device> {
    match name {
        "gpu" | "wgpu" => gpu().await,
        #[cfg(not(target_arch = "wasm32"))]
        "cpu" => Ok(cpu()),
        other => Err(Error::InvalidInput(format!(
            "unknown device \"{other}\" (use cpu or gpu)"
        ))),
    }
}
