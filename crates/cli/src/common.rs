//! What the commands share: value parsers for clap, files in and out, progress bars.

use std::path::Path;

use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use lina_runtime::image::Image;
use lina_runtime::pipeline::{ReferenceSize, StepHook, StepState};
use lina_runtime::schedulers::SchedulerKind;
use lina_runtime::{Error, Result};

/// Where a model runs: the CPU backend, or the wgpu device (`gpu`: f16 where the adapter has
/// shader-f16, f32 otherwise; or a precision forced).
#[derive(Args, Debug, Clone)]
pub struct DeviceArg {
    #[arg(long, default_value = "cpu", value_parser = ["cpu", "gpu", "gpu-f32", "gpu-f16"])]
    pub device: String,
}

impl DeviceArg {
    pub async fn open(&self) -> Result<burn::tensor::Device> {
        lina_runtime::device::by_name(&self.device).await
    }
}

/// `--scheduler`'s values, parsed by the runtime's own parser.
pub fn scheduler(value: &str) -> std::result::Result<SchedulerKind, String> {
    SchedulerKind::parse(value).map_err(|e| e.to_string())
}

pub fn reference_size(value: &str) -> std::result::Result<ReferenceSize, String> {
    ReferenceSize::parse(value).map_err(|e| e.to_string())
}

/// A plan from "baseline", "lina", inline JSON, or a JSON file's path.
pub fn plan(value: &str) -> std::result::Result<lina::Plan, String> {
    let text = if Path::new(value).is_file() {
        std::fs::read_to_string(value).map_err(|e| format!("{value}: {e}"))?
    } else {
        value.to_string()
    };
    lina::Plan::parse(&text).map_err(|e| e.to_string())
}

/// An img2img strength, which must leave some of the schedule to run: in (0, 1].
pub fn strength(value: &str) -> std::result::Result<f64, String> {
    match value.parse::<f64>() {
        Ok(s) if s > 0.0 && s <= 1.0 => Ok(s),
        _ => Err(format!("{value}: a strength is a number in (0, 1]")),
    }
}

/// `--kernels fused` (the default: the WGSL kernels of shaders/ on a GPU), `burn`, `matrices`
/// or `no-matrices`.
pub fn kernels(value: &str) -> std::result::Result<lina_runtime::kernels::Kernels, String> {
    lina_runtime::kernels::Kernels::parse(value).map_err(|e| e.to_string())
}

/// A ControlNet as a user names it: its diffusers folder, or one `.safetensors` file in the
/// original layout (`control_v11p_sd15_canny.safetensors`), read as such a folder's weight
/// file with nothing beside it (its config inferred from its shapes). A pickle is refused
/// unread.
pub fn controlnet_source(path: &Path) -> Result<lina_runtime::source::DirSource> {
    use lina_runtime::source::DirSource;
    if path.is_dir() {
        return Ok(DirSource::new(path));
    }
    let extension = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    if ["ckpt", "pt", "pth", "bin"].contains(&extension.to_ascii_lowercase().as_str()) {
        return Err(Error::PickledWeights(path.display().to_string()));
    }
    if !path.exists() {
        return Err(Error::MissingFile(path.display().to_string()));
    }
    let weights = lina_runtime::models::controlnet::WEIGHT_FILES[0];
    Ok(DirSource::single(path, weights))
}

pub fn read_png(path: &Path) -> Result<Image> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path.display(), e))?;
    Image::from_png(&bytes).map_err(|e| Error::InvalidInput(format!("{}: {e}", path.display())))
}

pub fn read_text(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|e| Error::io(path.display(), e))
}

pub fn write(path: &Path, bytes: impl AsRef<[u8]>) -> Result<()> {
    std::fs::write(path, bytes).map_err(|e| Error::io(path.display(), e))
}

pub fn create_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir.display(), e))
}

pub fn write_json(path: &Path, value: &impl serde::Serialize) -> Result<()> {
    write(
        path,
        serde_json::to_string_pretty(value).expect("plain data serialises"),
    )
}

/// A progress bar on standard error for `len` items of `what` (hidden when standard error is
/// not a terminal, as indicatif does).
pub fn bar(len: u64, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template(&format!(
            "{{elapsed_precise}} [{{bar:30}}] {{pos}}/{{len}} {what} {{msg}}"
        ))
        .expect("a valid template")
        .progress_chars("=> "),
    );
    bar
}

/// Advances a progress bar at every sampler step.
pub struct StepBar(pub ProgressBar);

impl StepHook for StepBar {
    fn after_step(&mut self, state: &mut StepState) -> Result<()> {
        self.0.set_length(state.steps as u64);
        self.0.set_position(state.step as u64 + 1);
        Ok(())
    }
}

/// A count that must be at least 1.
pub fn positive(value: &str) -> std::result::Result<usize, String> {
    match value.parse::<usize>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(format!(
            "expected a whole number of at least 1, got \"{value}\""
        )),
    }
}
