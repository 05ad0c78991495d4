//! Choosing where tensors live: burn's wgpu runtime (WebGPU in browsers; Vulkan, Metal or
//! DX12 natively, lavapipe on machines without a GPU) or the pure-Rust CPU backend.
//! The adapter's limits are read once, when the device is acquired: attention sizes its
//! chunks from them, and the memory estimate refuses what cannot fit before any work.
//! A device that fails (lost, out of memory) is reported at the next readback and replaced by
//! a fresh one the next time a model is loaded.

use burn::backend::ExecutionError;
use burn::tensor::wgpu::{WgpuSetup, wgpu};
use burn::tensor::{Device, Tensor};

use crate::error::{Error, Result};

/// The size of the adapter's subgroups where every subgroup has the same, a power of two the
/// lanes kernels can take (4 to 64): those kernels make a workgroup of one subgroup.
fn fixed_subgroup_size(info: &wgpu::AdapterInfo) -> Option<u32> {
    let size = info.subgroup_min_size;
    (size == info.subgroup_max_size && (4..=64).contains(&size) && size.is_power_of_two())
        .then_some(size)
}

/// Whether shaders on `device`, opened from an adapter described by `info`, may use subgroup
/// operations. Natively wgpu says so in the device's features. In a browser wgpu (30) neither
/// asks for WebGPU's `subgroups` feature nor reports it, so lina-web adds it to the request
/// where the adapter has it; whether that happened shows only in whether a shader that needs
/// it compiles, which this tries (once per device, and only where the subgroup size is fixed,
/// as the lanes kernels need).
#[cfg(not(target_arch = "wasm32"))]
async fn subgroups_usable(device: &wgpu::Device, _info: &wgpu::AdapterInfo) -> bool {
    device.features().contains(wgpu::Features::SUBGROUP)
}

#[cfg(target_arch = "wasm32")]
async fn subgroups_usable(device: &wgpu::Device, info: &wgpu::AdapterInfo) -> bool {
    if fixed_subgroup_size(info).is_none() {
        return false;
    }
    let scope = device.push_error_scope(wgpu::ErrorFilter::Validation);
    let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
        label: Some("lina: do subgroups compile"),
        source: wgpu::ShaderSource::Wgsl(
            "enable subgroups;\n@compute @workgroup_size(1) fn main() { _ = subgroupBroadcast(1.0, 0u); }"
                .into(),
        ),
    });
    let _pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
        label: Some("lina: do subgroups compile"),
        layout: None,
        module: &module,
        entry_point: Some("main"),
        compilation_options: Default::default(),
        cache: None,
    });
    scope.pop().await.is_none()
}

/// The side of the square cooperative matrices (8 or 16) in which the adapter multiplies f16
/// by f16 into f32 sums per subgroup (NVIDIA's tensor cores; lavapipe in Mesa 26, not 25.0),
/// preferring 16, where wgpu offers them (natively, on Vulkan and Metal, as an experimental
/// feature) and every subgroup has the same size. `shaders/matmul_coop.wgsl` multiplies in
/// them. Never in a browser: WebGPU has no matrix instructions yet.
#[cfg(not(target_arch = "wasm32"))]
fn coop_size(adapter: &wgpu::Adapter) -> Option<u32> {
    use wgpu::CooperativeScalarType as Scalar;
    if !adapter
        .features()
        .contains(wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX)
        || fixed_subgroup_size(&adapter.get_info()).is_none()
    {
        return None;
    }
    let squares: Vec<u32> = adapter
        .cooperative_matrix_properties()
        .iter()
        .filter(|p| p.ab_type == Scalar::F16 && p.cr_type == Scalar::F32)
        .filter(|p| p.m_size == p.n_size && p.n_size == p.k_size)
        .map(|p| p.m_size)
        .collect();
    [16, 8].into_iter().find(|size| squares.contains(size))
}

#[cfg(target_arch = "wasm32")]
fn coop_size(_adapter: &wgpu::Adapter) -> Option<u32> {
    None
}

/// Whether `device` compiles a kernel that multiplies in cooperative matrices of `size`, as
/// `shaders/matmul_coop.wgsl` and `attention_coop.wgsl` do (f16 loaded from workgroup memory,
/// f32 sums loaded from it and stored back), on subgroups of `lanes`: the feature is
/// experimental, and a driver that offers it may still refuse the translated shader. Tried
/// once per device, inside error scopes.
async fn coop_compiles(device: &wgpu::Device, size: u32, lanes: u32) -> bool {
    let text = format!(
        "enable f16;\nenable wgpu_cooperative_matrix;\n\
         var<workgroup> halves: array<f16, {n}>;\nvar<workgroup> sums: array<f32, {n}>;\n\
         @compute @workgroup_size({lanes})\nfn main() {{\n    \
         var acc = coopLoadT<coop_mat{size}x{size}<f32, C>>(&sums[0], {size}u);\n    \
         let a = coopLoadT<coop_mat{size}x{size}<f16, A>>(&halves[0], {size}u);\n    \
         let b = coopLoad<coop_mat{size}x{size}<f16, B>>(&halves[0], {size}u);\n    \
         acc = coopMultiplyAdd(a, b, acc);\n    coopStoreT(acc, &sums[0], {size}u);\n}}\n",
        n = size * size
    );
    let scopes = [wgpu::ErrorFilter::Validation, wgpu::ErrorFilter::Internal]
        .map(|filter| device.push_error_scope(filter));
    let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
        label: Some("lina: do cooperative matrices compile"),
        source: wgpu::ShaderSource::Wgsl(text.into()),
    });
    let _pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
        label: Some("lina: do cooperative matrices compile"),
        layout: None,
        module: &module,
        entry_point: Some("main"),
        compilation_options: Default::default(),
        cache: None,
    });
    let mut compiled = true;
    // Scopes close in the reverse order of their opening.
    for scope in scopes.into_iter().rev() {
        if let Some(error) = scope.pop().await {
            tracing::warn!(%error, "cooperative matrices are offered but do not compile");
            compiled = false;
        }
    }
    compiled
}

/// What a device allows.
#[derive(Clone, Debug, PartialEq)]
pub struct Limits {
    /// The largest buffer a shader may bind (`maxStorageBufferBindingSize`, capped by
    /// `maxBufferSize`): no single tensor may be larger.
    pub max_binding_bytes: u64,
    /// Whether shaders may use f16 (`shader-f16`).
    pub shader_f16: bool,
    /// Whether the device was opened to compute in f16 (see [`Precision`]).
    pub computes_f16: bool,
    /// The adapter, in words, for messages.
    pub adapter: String,
    /// Workgroup memory one kernel may declare (`maxComputeWorkgroupStorageSize`), in bytes,
    /// and invocations one workgroup may hold (`maxComputeInvocationsPerWorkgroup`): the tiled
    /// kernels pick their tile within these.
    pub workgroup_bytes: u32,
    pub workgroup_invocations: u32,
    /// Whether the adapter runs on the CPU (lavapipe, SwiftShader; in a browser, a fallback
    /// adapter): there workgroup barriers are slow, and kernels without them win.
    pub software: bool,
    /// The invocations in each of the adapter's subgroups, where shaders may use subgroup
    /// operations and every subgroup has that many (lavapipe: 8, one per lane of its 256-bit
    /// vectors; SwiftShader: 4). In a browser only where the device was opened with WebGPU's
    /// `subgroups` feature, which wgpu does not ask for: lina-web asks for it (see
    /// `subgroups_usable`).
    pub subgroup_lanes: Option<u32>,
    /// The side of the square cooperative matrices the device was opened to multiply f16 in
    /// (see `coop_size`): only on devices that compute in f16.
    pub coop_size: Option<u32>,
}

impl Limits {
    /// The CPU backend: host memory, no binding limit.
    fn host() -> Self {
        Self {
            max_binding_bytes: u64::MAX,
            shader_f16: false,
            computes_f16: false,
            adapter: "CPU".into(),
            workgroup_bytes: 0,
            workgroup_invocations: 0,
            software: true,
            subgroup_lanes: None,
            coop_size: None,
        }
    }

    /// The limits of the device `setup` opened; `subgroups`: whether its shaders may use
    /// subgroup operations.
    fn of(setup: &WgpuSetup, subgroups: bool) -> Self {
        let limits = setup.device.limits();
        let info = setup.adapter.get_info();
        Self {
            max_binding_bytes: limits
                .max_storage_buffer_binding_size
                .min(limits.max_buffer_size),
            shader_f16: setup.device.features().contains(wgpu::Features::SHADER_F16),
            computes_f16: false,
            adapter: format!("{} ({:?})", info.name, info.backend),
            workgroup_bytes: limits.max_compute_workgroup_storage_size,
            workgroup_invocations: limits.max_compute_invocations_per_workgroup,
            software: info.device_type == wgpu::DeviceType::Cpu
                || ["llvmpipe", "swiftshader"]
                    .iter()
                    .any(|name| info.name.to_lowercase().contains(name)),
            subgroup_lanes: fixed_subgroup_size(&info).filter(|_| subgroups),
            coop_size: None,
        }
    }
}

/// What a GPU device computes in.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// f32 weights and activations everywhere: the reference.
    #[default]
    F32,
    /// f16 weights and activations (norms' statistics stay f32); needs `shader-f16`.
    F16,
    /// f16 where the adapter has `shader-f16`, f32 otherwise.
    Auto,
}

/// How to open a wgpu device: for computing in f16, or for trying a model against a smaller
/// GPU's limits.
#[derive(Clone, Debug, Default)]
pub struct GpuRequest {
    /// Bind at most this many bytes per buffer, as a small adapter would.
    pub max_binding_bytes: Option<u64>,
    pub precision: Precision,
}

/// The first error that left a device unusable: lost, out of memory, or a failed GPU
/// operation. Shared with the handler wgpu calls, which may run on another thread.
#[derive(Default)]
struct Health(std::sync::Mutex<Option<Failure>>);

/// What left a device unusable, by kind: callers tell a lost device from other failures by
/// this, never by the text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Failure {
    /// The device was lost (a driver reset, a destroyed device), for this reason.
    Lost(String),
    /// Out of memory, or a GPU operation failed; in words.
    Failed(String),
}

impl Failure {
    /// The error a computation on the failed device gets, naming `what` it was computing.
    fn error(&self, what: &str) -> Error {
        match self {
            Failure::Lost(reason) => Error::DeviceLost {
                reason: reason.clone(),
                what: what.to_string(),
            },
            Failure::Failed(why) => Error::Device(format!(
                "{why} while computing {what}; load the model again"
            )),
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Lost(reason) => write!(f, "the GPU device was lost ({reason})"),
            Failure::Failed(why) => f.write_str(why),
        }
    }
}

impl Health {
    fn fail(&self, why: Failure) {
        let mut first = self.0.lock().unwrap_or_else(|p| p.into_inner());
        first.get_or_insert(why);
    }

    fn failure(&self) -> Option<Failure> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// A device opened here, with what is known about it.
struct Opened {
    device: Device,
    limits: Limits,
    /// What it was opened for; `gpu_for` shares one device per precision.
    precision: Precision,
    shared: bool,
    handle: wgpu::Device,
    health: std::sync::Arc<Health>,
}

// Every device opened so far; any other device is the CPU backend. wgpu's handles are only
// `Send` natively, so in the browser the list is per thread (the page's or the worker's).
#[cfg(not(target_arch = "wasm32"))]
static OPENED: std::sync::Mutex<Vec<Opened>> = std::sync::Mutex::new(Vec::new());
#[cfg(target_arch = "wasm32")]
thread_local! {
    static OPENED: std::cell::RefCell<Vec<Opened>> = const { std::cell::RefCell::new(Vec::new()) };
}

fn with_opened<T>(f: impl FnOnce(&mut Vec<Opened>) -> T) -> T {
    #[cfg(not(target_arch = "wasm32"))]
    return f(&mut OPENED.lock().unwrap_or_else(|p| p.into_inner()));
    #[cfg(target_arch = "wasm32")]
    return OPENED.with(|o| f(&mut o.borrow_mut()));
}

/// What is known of `device`, if it was opened here.
fn with_device<T>(device: &Device, f: impl FnOnce(&Opened) -> T) -> Option<T> {
    with_opened(|opened| opened.iter().find(|o| &o.device == device).map(f))
}

/// Whether `device` is a GPU (wgpu) device opened here, rather than the CPU backend.
pub fn is_gpu(device: &Device) -> bool {
    with_device(device, |_| ()).is_some()
}

/// The limits of `device`, as read when it was opened.
pub fn limits(device: &Device) -> Limits {
    with_device(device, |o| o.limits.clone()).unwrap_or_else(Limits::host)
}

/// Why `device` can no longer be used, if it cannot: it was lost, ran out of memory, or a GPU
/// operation on it failed. Its tensors are gone; a model must be loaded again (on a fresh
/// device from [`gpu_for`]).
pub fn failure(device: &Device) -> Option<Failure> {
    with_device(device, |o| o.health.failure()).flatten()
}

fn mark_failed(device: &Device, why: Failure) {
    with_device(device, |o| o.health.fail(why));
}

/// The shared f32 wgpu device (see [`gpu_for`]).
pub async fn gpu() -> Result<Device> {
    gpu_for(Precision::F32).await
}

/// The device shared by everything that asks for `precision`: opened on first use, and again
/// after a failure (a lost device, say), so that loading the model again recovers without
/// restarting the process or reloading the page.
pub async fn gpu_for(precision: Precision) -> Result<Device> {
    let healthy = with_opened(|opened| {
        opened
            .iter()
            .rev()
            .find(|o| o.shared && o.precision == precision && o.health.failure().is_none())
            .map(|o| o.device.clone())
    });
    match healthy {
        Some(device) => Ok(device),
        None => {
            open_as(
                &GpuRequest {
                    max_binding_bytes: None,
                    precision,
                },
                true,
            )
            .await
        }
    }
}

/// Opens a device of its own, as `request` asks: a new one on every call.
pub async fn open(request: &GpuRequest) -> Result<Device> {
    open_as(request, false).await
}

async fn open_as(request: &GpuRequest, shared: bool) -> Result<Device> {
    #[cfg(not(target_arch = "wasm32"))]
    let instance =
        wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
    #[cfg(target_arch = "wasm32")]
    let instance = wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle());
    let adapter = instance
        .request_adapter(&wgpu::RequestAdapterOptions {
            power_preference: wgpu::PowerPreference::HighPerformance,
            ..Default::default()
        })
        .await
        .map_err(|e| Error::Device(no_adapter(e)))?;
    let has_f16 = adapter.features().contains(wgpu::Features::SHADER_F16);
    let f16 = match request.precision {
        Precision::F32 => false,
        Precision::Auto => has_f16,
        Precision::F16 if has_f16 => true,
        Precision::F16 => {
            return Err(Error::DeviceLimit(format!(
                "f16 was asked for, but {} has no shader-f16; use f32 or auto",
                adapter.get_info().name
            )));
        }
    };
    let mut required_limits = adapter.limits();
    if let Some(bytes) = request.max_binding_bytes {
        required_limits.max_storage_buffer_binding_size = bytes;
        required_limits.max_buffer_size = bytes;
    }
    // As burn asks for its own devices: every feature but mapped primary buffers, and
    // allocations sized for memory use rather than speed. Experimental features (which
    // NVIDIA's Vulkan driver offers: cooperative matrices, mesh shaders, ray tracing) are
    // refused unless a device opts into them; asked for all of them, NVIDIA's device did
    // not open (docs/bench.md). A device that computes in f16 asks for cooperative matrices
    // alone where the adapter multiplies f16 in them, and opens without them if that fails.
    let features = adapter.features().difference(
        wgpu::Features::MAPPABLE_PRIMARY_BUFFERS | wgpu::Features::all_experimental_mask(),
    );
    let coop = coop_size(&adapter).filter(|_| f16);
    let with_coop = match coop {
        Some(_) => {
            let features = features | wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX;
            request_device(&adapter, features, &required_limits)
                .await
                .inspect_err(|e| {
                    tracing::warn!(%e, "the device did not open with cooperative matrices");
                })
                .ok()
        }
        None => None,
    };
    let coop = coop.filter(|_| with_coop.is_some());
    let (device, queue) = match with_coop {
        Some(opened) => opened,
        None => request_device(&adapter, features, &required_limits)
            .await
            .map_err(|e| Error::Device(format!("cannot open the GPU adapter as asked: {e}")))?,
    };
    let setup = WgpuSetup {
        backend: adapter.get_info().backend,
        instance,
        adapter,
        device,
        queue,
    };
    let subgroups = subgroups_usable(&setup.device, &setup.adapter.get_info()).await;
    let lanes = fixed_subgroup_size(&setup.adapter.get_info()).filter(|_| subgroups);
    // The kernel names subgroups (`subgroup_id`), so it needs them usable too.
    let coop = match (coop, lanes) {
        (Some(size), Some(lanes)) if coop_compiles(&setup.device, size, lanes).await => Some(size),
        _ => None,
    };
    let limits = Limits {
        computes_f16: f16,
        coop_size: coop,
        ..Limits::of(&setup, subgroups)
    };
    tracing::info!(
        adapter = %limits.adapter,
        f16,
        coop_size = ?limits.coop_size,
        max_binding_bytes = limits.max_binding_bytes,
        "GPU device opened"
    );
    let handle = setup.device.clone();
    let mut device = Device::wgpu_options()
        .setup(setup)
        .init()
        .map_err(|e| Error::Device(format!("cannot register the GPU device: {e}")))?;
    if f16 {
        device
            .configure(burn::tensor::FloatDType::F16)
            .map_err(|e| Error::Device(format!("cannot compute in f16: {e:?}")))?;
    }
    // Registering the device installed burn's handler for errors no scope caught, which
    // panics: in a browser that would kill the page's wasm instance, and out-of-memory is
    // such an error. Ours records the first one instead, and the next readback reports it.
    let health = std::sync::Arc::new(Health::default());
    let recorder = health.clone();
    handle.on_uncaptured_error(std::sync::Arc::new(move |error: wgpu::Error| {
        recorder.fail(Failure::Failed(match error {
            wgpu::Error::OutOfMemory { .. } => "the GPU ran out of memory".into(),
            // wgpu's messages span lines; one line reads better in an exception.
            other => format!(
                "a GPU operation failed: {}",
                other
                    .to_string()
                    .split_whitespace()
                    .collect::<Vec<_>>()
                    .join(" ")
            ),
        }))
    }));
    with_opened(|opened| {
        // Devices that failed are of no more use (their tensors are gone, and whoever held
        // them loads again, onto this one): forget them, so that the registry holds the live
        // devices only and does not grow with every recovery.
        opened.retain(|o| o.health.failure().is_none());
        opened.push(Opened {
            device: device.clone(),
            limits,
            precision: request.precision,
            shared,
            handle,
            health,
        })
    });
    Ok(device)
}

/// Opens `adapter` with `features`, and experimental ones allowed where asked for.
async fn request_device(
    adapter: &wgpu::Adapter,
    features: wgpu::Features,
    limits: &wgpu::Limits,
) -> std::result::Result<(wgpu::Device, wgpu::Queue), wgpu::RequestDeviceError> {
    let experimental = features.intersects(wgpu::Features::all_experimental_mask());
    adapter
        .request_device(&wgpu::DeviceDescriptor {
            label: Some("lina"),
            required_features: features,
            required_limits: limits.clone(),
            // SAFETY: wgpu asks callers of experimental features to accept that they may
            // have bugs. The only one asked for is cooperative matrices, used by two kernels
            // (shaders/matmul_coop.wgsl, attention_coop.wgsl) whose results tests/kernels/
            // checks against burn's operations on every adapter that has them
            // (LINA_TEST_COOP=1).
            experimental_features: if experimental {
                unsafe { wgpu::ExperimentalFeatures::enabled() }
            } else {
                wgpu::ExperimentalFeatures::disabled()
            },
            memory_hints: wgpu::MemoryHints::MemoryUsage,
            ..Default::default()
        })
        .await
}

fn no_adapter(e: impl std::fmt::Display) -> String {
    if cfg!(target_arch = "wasm32") {
        format!("WebGPU is unavailable ({e}); use a browser with WebGPU enabled")
    } else {
        format!("no usable GPU adapter: {e}")
    }
}

/// [`open`], natively, where blocking is allowed.
#[cfg(not(target_arch = "wasm32"))]
pub fn gpu_with(request: &GpuRequest) -> Result<Device> {
    pollster::block_on(open(request))
}

/// Destroys a device, as a driver reset or a lost GPU would: for testing that the loss comes
/// back as an error and that [`gpu_for`] then opens a fresh device. Nothing hangs.
pub fn lose(device: &Device) -> Result<()> {
    with_device(device, |o| o.handle.destroy())
        .ok_or_else(|| Error::InvalidInput("only GPU devices can be lost".into()))
}

/// Makes one GPU operation on `device` fail outside any error scope (a buffer larger than the
/// device allows), as a bug or an exhausted GPU would: for testing that such errors come back
/// from the next readback instead of panicking.
pub fn provoke_error(device: &Device) -> Result<()> {
    with_device(device, |o| {
        let too_big = o.handle.limits().max_buffer_size.saturating_add(4);
        drop(o.handle.create_buffer(&wgpu::BufferDescriptor {
            label: Some("too big on purpose"),
            size: too_big,
            usage: wgpu::BufferUsages::STORAGE,
            mapped_at_creation: false,
        }));
    })
    .ok_or_else(|| Error::InvalidInput("only GPU devices can fail".into()))
}

/// What a GPU device's allocator holds: live allocations, the bytes they use, and the bytes
/// reserved from the driver (those plus pages kept for reuse). What leak checks watch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GpuMemory {
    pub allocations: u64,
    pub bytes_in_use: u64,
    pub bytes_reserved: u64,
}

/// `device`'s allocator now; `None` on the CPU backend, which does not report one.
pub fn gpu_memory(device: &Device) -> Option<GpuMemory> {
    device.memory_pool_usage().map(|usage| GpuMemory {
        allocations: usage.number_allocs,
        bytes_in_use: usage.bytes_in_use,
        bytes_reserved: usage.bytes_reserved,
    })
}

/// The pure-Rust CPU backend: deterministic and quick for small models, natively and in the
/// browser (one wasm thread), where it beats WebGPU on a software adapter.
pub fn cpu() -> Device {
    Device::flex()
}

/// Reads a tensor back to the host as f32 values. Async, because browsers allow no other
/// way; `what` names the value in the error.
pub async fn read_f32<const D: usize>(tensor: Tensor<D>, what: &str) -> Result<Vec<f32>> {
    let device = tensor.device();
    let read = tensor.into_data_async().await;
    // A failure recorded since the last readback makes these values meaningless.
    if let Some(failure) = failure(&device) {
        return Err(failure.error(what));
    }
    let data = read.map_err(|e| read_failure(&device, what, e))?;
    // A device computing in f16 gives f16 values. The bytes may be read from the device only
    // now, where a lost device's error has lost its type: ask the device itself.
    data.convert::<f32>()
        .try_to_vec::<f32>()
        .map_err(|e| match poisoned(&device) {
            Some(reason) => lost(&device, what, reason),
            None => Error::Device(format!("reading back {what} failed: {e:?}")),
        })
}

/// A readback that failed: a lost device (burn reports it as poisoned) is its own error, since
/// the user must load the model again; anything else keeps its details.
fn read_failure(device: &Device, what: &str, e: ExecutionError) -> Error {
    match e {
        ExecutionError::DevicePoisoned { reason } => lost(device, what, reason),
        other => match poisoned(device) {
            Some(reason) => lost(device, what, reason),
            None => Error::Device(format!("reading back {what} failed: {other}")),
        },
    }
}

/// Why `device` is poisoned (lost), if it is, as burn reports it by type. Natively by waiting
/// for its queue; a page may not block, so there by flushing it, which a poisoned device
/// refuses as well.
fn poisoned(device: &Device) -> Option<String> {
    #[cfg(not(target_arch = "wasm32"))]
    let state = device.sync();
    #[cfg(target_arch = "wasm32")]
    let state = device.flush();
    match state {
        Err(ExecutionError::DevicePoisoned { reason }) => Some(reason),
        _ => None,
    }
}

/// The error for a lost device, recorded so that later calls report it at once.
fn lost(device: &Device, what: &str, reason: String) -> Error {
    // The reason may nest another error's display ("…\nCaused by:\n  Destroyed: …"): keep
    // its innermost first line, for people (the kind of error is already known).
    let inner = reason.rsplit("Caused by:").next().unwrap_or(&reason);
    let reason = inner
        .lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("unknown")
        .trim()
        .trim_end_matches(':')
        .to_string();
    tracing::warn!(%reason, what, "GPU device lost");
    let failure = Failure::Lost(reason);
    mark_failed(device, failure.clone());
    failure.error(what)
}

/// Resolves a device by name: "gpu" (f16 where the adapter has shader-f16, f32 otherwise),
/// "gpu-f32", "gpu-f16", or "cpu".
pub async fn by_name(name: &str) -> Result<Device> {
    match name {
        "gpu" | "wgpu" => gpu_for(Precision::Auto).await,
        "gpu-f32" => gpu_for(Precision::F32).await,
        "gpu-f16" => gpu_for(Precision::F16).await,
        "cpu" => Ok(cpu()),
        other => Err(Error::InvalidInput(format!(
            "unknown device \"{other}\" (use cpu, gpu, gpu-f32 or gpu-f16)"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn adapter(min: u32, max: u32) -> wgpu::AdapterInfo {
        wgpu::AdapterInfo {
            subgroup_min_size: min,
            subgroup_max_size: max,
            ..wgpu::AdapterInfo::new(wgpu::DeviceType::Cpu, wgpu::Backend::Vulkan)
        }
    }

    /// The lanes kernels take adapters whose subgroups all have one size they can make a
    /// workgroup of: SwiftShader's 4, lavapipe's 8, a GPU's 32 or 64; not a range (a browser
    /// on Intel: 8 to 32), nor what a browser reports without subgroups (0), nor a size that
    /// is no power of two or past 64.
    #[test]
    fn subgroups_of_one_size_serve_the_lanes_kernels() {
        for size in [4, 8, 32, 64] {
            assert_eq!(fixed_subgroup_size(&adapter(size, size)), Some(size));
        }
        for (min, max) in [(8, 32), (0, 0), (4, 128), (2, 2), (12, 12), (128, 128)] {
            assert_eq!(
                fixed_subgroup_size(&adapter(min, max)),
                None,
                "{min}..{max}"
            );
        }
    }
}
