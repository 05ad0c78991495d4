//! Choosing where tensors live: burn's wgpu runtime (WebGPU in browsers; Vulkan, Metal or
//! DX12 natively, lavapipe on machines without a GPU) or, natively, the pure-Rust CPU backend.
//! The adapter's limits are read once, when the device is acquired: attention sizes its
//! chunks from them, and the memory estimate refuses what cannot fit before any work.

use burn::tensor::wgpu::{WgpuSetup, wgpu};
use burn::tensor::{Device, Tensor};

use crate::error::{Error, Result};

/// What a device allows.
#[derive(Clone, Debug, PartialEq)]
pub struct Limits {
    /// The largest buffer a shader may bind (`maxStorageBufferBindingSize`, capped by
    /// `maxBufferSize`): no single tensor may be larger.
    pub max_binding_bytes: u64,
    /// Whether shaders may use f16 (`shader-f16`).
    pub shader_f16: bool,
    /// The adapter, in words, for messages.
    pub adapter: String,
}

impl Limits {
    /// The CPU backend: host memory, no binding limit.
    fn host() -> Self {
        Self {
            max_binding_bytes: u64::MAX,
            shader_f16: false,
            adapter: "CPU".into(),
        }
    }

    fn of(setup: &WgpuSetup) -> Self {
        let limits = setup.device.limits();
        let info = setup.adapter.get_info();
        Self {
            max_binding_bytes: limits
                .max_storage_buffer_binding_size
                .min(limits.max_buffer_size),
            shader_f16: setup.device.features().contains(wgpu::Features::SHADER_F16),
            adapter: format!("{} ({:?})", info.name, info.backend),
        }
    }
}

// The devices acquired so far with their limits; any other device is the CPU backend.
#[cfg(not(target_arch = "wasm32"))]
static KNOWN: std::sync::Mutex<Vec<(Device, Limits)>> = std::sync::Mutex::new(Vec::new());
#[cfg(target_arch = "wasm32")]
thread_local! {
    static KNOWN: std::cell::RefCell<Vec<(Device, Limits)>> = const { std::cell::RefCell::new(Vec::new()) };
}

fn remember(device: &Device, limits: Limits) {
    #[cfg(not(target_arch = "wasm32"))]
    KNOWN
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push((device.clone(), limits));
    #[cfg(target_arch = "wasm32")]
    KNOWN.with(|k| k.borrow_mut().push((device.clone(), limits)));
}

/// The limits of `device`, as read when it was acquired.
pub fn limits(device: &Device) -> Limits {
    let find = |known: &[(Device, Limits)]| {
        known
            .iter()
            .find(|(d, _)| d == device)
            .map(|(_, l)| l.clone())
    };
    #[cfg(not(target_arch = "wasm32"))]
    let found = find(&KNOWN.lock().unwrap_or_else(|p| p.into_inner()));
    #[cfg(target_arch = "wasm32")]
    let found = KNOWN.with(|k| find(&k.borrow()));
    found.unwrap_or_else(Limits::host)
}

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
        let made = match Device::wgpu_options().init_with_setup_async().await {
            Ok((device, setup)) => {
                remember(&device, Limits::of(&setup));
                Ok(device)
            }
            Err(e) => Err(format!("no usable GPU adapter: {e}")),
        };
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
        let (made, setup) = Device::wgpu_options()
            .init_with_setup_async()
            .await
            .map_err(|e| {
                Error::Device(format!(
                    "WebGPU is unavailable ({e}); use a browser with WebGPU enabled"
                ))
            })?;
        remember(&made, Limits::of(&setup));
        GPU.with(|g| *g.borrow_mut() = Some(made.clone()));
        Ok(made)
    }
}

/// How to open a wgpu device of one's own (natively): for trying a model against a smaller
/// GPU's limits, or in f16.
#[derive(Clone, Debug, Default)]
pub struct GpuRequest {
    /// Bind at most this many bytes per buffer, as a small adapter would.
    pub max_binding_bytes: Option<u64>,
    /// Compute in f16 (weights and activations); needs the adapter's `shader-f16`.
    pub f16: bool,
}

/// Opens a wgpu device as `request` asks. Natively only; call it before `gpu()`, once per
/// process and request (burn registers each device for the process's lifetime).
#[cfg(not(target_arch = "wasm32"))]
pub fn gpu_with(request: &GpuRequest) -> Result<Device> {
    let instance =
        wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
    let adapter = pollster::block_on(instance.request_adapter(&wgpu::RequestAdapterOptions {
        power_preference: wgpu::PowerPreference::HighPerformance,
        ..Default::default()
    }))
    .map_err(|e| Error::Device(format!("no usable GPU adapter: {e}")))?;
    if request.f16 && !adapter.features().contains(wgpu::Features::SHADER_F16) {
        return Err(Error::DeviceLimit(format!(
            "f16 was asked for, but {} has no shader-f16",
            adapter.get_info().name
        )));
    }
    let mut required_limits = adapter.limits();
    if let Some(bytes) = request.max_binding_bytes {
        required_limits.max_storage_buffer_binding_size = bytes;
        required_limits.max_buffer_size = bytes;
    }
    let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
        label: Some("lina"),
        required_features: adapter.features(),
        required_limits,
        ..Default::default()
    }))
    .map_err(|e| Error::Device(format!("cannot open the adapter as asked: {e}")))?;
    let setup = WgpuSetup {
        backend: adapter.get_info().backend,
        instance,
        adapter,
        device,
        queue,
    };
    let limits = Limits::of(&setup);
    let handle = setup.device.clone();
    let mut device = Device::wgpu_options()
        .setup(setup)
        .init()
        .map_err(|e| Error::Device(format!("cannot register the device: {e}")))?;
    if request.f16 {
        device
            .configure(burn::tensor::FloatDType::F16)
            .map_err(|e| Error::Device(format!("cannot compute in f16: {e:?}")))?;
    }
    remember(&device, limits);
    OPENED
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push((device.clone(), handle));
    Ok(device)
}

// The wgpu handles of devices opened by `gpu_with`, so a test can lose one on purpose.
#[cfg(not(target_arch = "wasm32"))]
static OPENED: std::sync::Mutex<Vec<(Device, wgpu::Device)>> = std::sync::Mutex::new(Vec::new());

/// Destroys a device opened by [`gpu_with`], as a driver reset or a lost GPU would: for
/// testing that the loss comes back as an error. Later work on it fails; nothing hangs.
#[cfg(not(target_arch = "wasm32"))]
pub fn lose(device: &Device) -> Result<()> {
    let opened = OPENED.lock().unwrap_or_else(|p| p.into_inner());
    let (_, handle) = opened.iter().find(|(d, _)| d == device).ok_or_else(|| {
        Error::InvalidInput("only devices from gpu_with can be lost on purpose".into())
    })?;
    handle.destroy();
    Ok(())
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
        .map_err(|e| failure(what, e))?;
    // A device computing in f16 gives f16 values.
    data.convert::<f32>()
        .try_to_vec::<f32>()
        .map_err(|e| failure(what, e))
}

/// A readback that failed: a lost device (burn reports it as poisoned) says so plainly, since
/// the user must load the model again; anything else keeps its details.
fn failure(what: &str, e: impl std::fmt::Debug) -> Error {
    let detail = format!("{e:?}");
    if detail.contains("poisoned") {
        let reason = detail
            .split("Caused by:")
            .nth(1)
            .and_then(|r| r.split("\\n").find(|l| !l.trim().is_empty()))
            .unwrap_or("unknown")
            .trim()
            .trim_end_matches(':');
        Error::Device(format!(
            "the GPU device was lost ({reason}) while reading back {what}; load the model again"
        ))
    } else {
        Error::Device(format!("reading back {what} failed: {detail}"))
    }
}

/// Resolves a device by name: "cpu", "gpu"/"wgpu", or natively "gpu-f16" (computing in f16,
/// where the adapter has shader-f16).
pub async fn by_name(name: &str) -> Result<Device> {
    match name {
        "gpu" | "wgpu" => gpu().await,
        #[cfg(not(target_arch = "wasm32"))]
        "gpu-f16" => gpu_with(&GpuRequest {
            max_binding_bytes: None,
            f16: true,
        }),
        #[cfg(not(target_arch = "wasm32"))]
        "cpu" => Ok(cpu()),
        other => Err(Error::InvalidInput(format!(
            "unknown device \"{other}\" (use cpu, gpu or gpu-f16)"
        ))),
    }
}
