//! The `ModelLoader` class: a model's files streamed to the device as they arrive.

use js_sys::{Object, Promise, Reflect, Uint8Array};
use sha2::{Digest, Sha256};
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;

use lina_runtime::kernels::Kernels;
use lina_runtime::single_file;
use lina_runtime::source::StagedSource;
use lina_runtime::weights::{Lora, ScaledLora, WeightsUpload};

use crate::device::device_from_options;
use crate::{invalid, js_err, js_error};

/// Gathers a model's files as they arrive, so that no weight file is ever whole in wasm
/// memory: each `.safetensors` file goes to the GPU tensor by tensor while its bytes stream
/// in (from `fetch`, or chunk by chunk from `File.slice`); other files are kept as bytes.
/// `Pipeline.fromLoader` then builds the model.
#[wasm_bindgen]
pub struct ModelLoader {
    pub(crate) device: burn::tensor::Device,
    /// The kernels the model built from this loader runs.
    pub(crate) kernels: Kernels,
    pub(crate) source: StagedSource,
    pub(crate) current: Option<(String, Incoming)>,
    /// The current file's SHA-256 so far, when its caller asked for one.
    digest: Option<Sha256>,
    /// LoRA adapters to merge into the model as it is built, each at its scale.
    pub(crate) loras: Vec<ScaledLora>,
    /// The components the single-file checkpoint lacks, once it has arrived.
    checkpoint_lacks: Vec<String>,
}

pub(crate) enum Incoming {
    // Boxed: the upload's parser state is far larger than a byte buffer.
    Weights(Box<WeightsUpload>),
    Bytes(Vec<u8>),
}

#[wasm_bindgen]
impl ModelLoader {
    /// Acquires the WebGPU device the weights will live on. `options.precision`: `"auto"`
    /// (the default: f16 where the adapter has shader-f16, f32 otherwise), `"f32"` or `"f16"`.
    /// After a device failure (reported by `generate`), the next loader gets a fresh device.
    pub async fn create(options: JsValue) -> Result<ModelLoader, JsValue> {
        let (device, kernels) = device_from_options(&options).await?;
        Ok(ModelLoader {
            device,
            kernels,
            source: StagedSource::default(),
            current: None,
            digest: None,
            loras: Vec::new(),
            checkpoint_lacks: Vec::new(),
        })
    }

    /// A LoRA (`.safetensors`, kohya or diffusers/PEFT names) to merge into the UNet (or SD 3's
    /// transformer) and the text encoders at `scale` when `Pipeline.fromLoader` builds the
    /// model. A malformed file
    /// fails here; a LoRA for another model fails in `fromLoader`, naming its module.
    #[wasm_bindgen(js_name = addLora)]
    pub fn add_lora(&mut self, name: String, bytes: &[u8], scale: f64) -> Result<(), JsValue> {
        if !scale.is_finite() {
            return Err(invalid(&format!(
                "LoRA {name}: the scale must be a finite number"
            )));
        }
        let lora = Lora::from_safetensors(&name, bytes).map_err(js_err)?;
        self.loras.push(ScaledLora {
            lora,
            scale: scale as f32,
        });
        Ok(())
    }

    /// Starts a file at a diffusers-layout path (`"unet/diffusion_pytorch_model.safetensors"`).
    /// With `digest`, `endFile` returns the file's SHA-256: the bytes are hashed as they pass,
    /// so that a cached copy can be checked without reading it twice. `length`, the file's
    /// size where the caller knows it (`File.size`), bounds what a weight file's header may
    /// claim: a hostile header is refused before anything is reserved for it.
    #[wasm_bindgen(js_name = beginFile)]
    pub fn begin_file(
        &mut self,
        path: String,
        digest: Option<bool>,
        length: Option<f64>,
    ) -> Result<(), JsValue> {
        if let Some((open, _)) = &self.current {
            return Err(invalid(&format!(
                "{path}: cannot start while {open} is still being read"
            )));
        }
        let incoming = if path.ends_with(".safetensors") {
            let mut upload = WeightsUpload::new(&self.device);
            if path == single_file::CHECKPOINT_FILE {
                upload = upload.skipping(single_file::unused);
            }
            let length = length
                .filter(|l| l.is_finite() && *l >= 0.0)
                .map(|l| l as u64);
            upload.begin_file(&path, length).map_err(js_err)?;
            Incoming::Weights(Box::new(upload))
        } else {
            Incoming::Bytes(Vec::new())
        };
        self.current = Some((path, incoming));
        self.digest = digest.unwrap_or(false).then(Sha256::new);
        Ok(())
    }

    /// The next bytes of the current file.
    pub fn push(&mut self, chunk: &[u8]) -> Result<(), JsValue> {
        if let Some(digest) = &mut self.digest {
            digest.update(chunk);
        }
        match &mut self.current {
            None => Err(invalid("push: no file was started (call beginFile)")),
            Some((_, Incoming::Weights(upload))) => upload.push(chunk).map_err(js_err),
            Some((_, Incoming::Bytes(bytes))) => {
                bytes.extend_from_slice(chunk);
                Ok(())
            }
        }
    }

    /// Ends the current file; a truncated weight file fails here, naming it. Returns the
    /// file's SHA-256 in hex when `beginFile` asked for it.
    #[wasm_bindgen(js_name = endFile)]
    pub fn end_file(&mut self) -> Result<Option<String>, JsValue> {
        let digest = self.digest.take().map(|d| {
            d.finalize()
                .iter()
                .map(|byte| format!("{byte:02x}"))
                .collect()
        });
        match self.current.take() {
            None => return Err(invalid("endFile: no file was started")),
            Some((path, Incoming::Weights(mut upload))) => {
                upload.end_file().map_err(js_err)?;
                // A checkpoint that fits no layout fails here, before anything is fetched
                // for it from beside.
                if path == single_file::CHECKPOINT_FILE {
                    let lacking = single_file::lacking(&path, &upload.shapes()).map_err(js_err)?;
                    self.checkpoint_lacks = lacking.into_iter().map(String::from).collect();
                }
                self.source.insert_uploaded(path, *upload);
            }
            Some((path, Incoming::Bytes(bytes))) => self.source.insert(path, bytes),
        }
        Ok(digest)
    }

    /// The components (`vae`, `text_encoder`, ...) the single-file checkpoint that has arrived
    /// lacks, whose weights must come from the folder beside it: a FLUX transformer file's
    /// VAE and text encoders, an SD 3 file's T5. Empty before the checkpoint.
    #[wasm_bindgen(js_name = checkpointLacks)]
    pub fn checkpoint_lacks(&self) -> Vec<String> {
        self.checkpoint_lacks.clone()
    }

    /// What the model whose configs have arrived needs of this loader's device, before any
    /// weight is fetched: `{ weightBytes, nativeSize, largestSide }`, T5's weights counted only
    /// `withT5`. Rejects with "device_limit" a model the adapter cannot run at any size, and
    /// with "missing_file" where a config has not arrived.
    pub fn requirements(
        &self,
        #[wasm_bindgen(js_name = withT5)] with_t5: bool,
    ) -> Result<JsValue, JsValue> {
        let needs = lina_runtime::memory::requirements(&self.source, with_t5, &self.device)
            .map_err(js_err)?;
        let out = Object::new();
        for (key, value) in [
            ("weightBytes", needs.weight_bytes as f64),
            ("nativeSize", needs.native_size as f64),
            ("largestSide", needs.largest_side as f64),
        ] {
            Reflect::set(&out, &key.into(), &value.into())?;
        }
        Ok(out.into())
    }

    /// A whole file at once (a small config, or bytes the page already holds).
    #[wasm_bindgen(js_name = addFile)]
    pub fn add_file(&mut self, path: String, bytes: &[u8]) -> Result<(), JsValue> {
        self.begin_file(path, None, Some(bytes.len() as f64))?;
        self.push(bytes)?;
        self.end_file().map(drop)
    }

    /// Fetches `url` into the file at `path`, streaming the body. Resolves to `false` when the
    /// server has no such file (404), so optional files can be tried; any other failure
    /// rejects. `onProgress(received, total)` follows the download (`total` is undefined
    /// without a Content-Length).
    pub async fn fetch(
        &mut self,
        path: String,
        url: String,
        #[wasm_bindgen(js_name = onProgress)] on_progress: Option<js_sys::Function>,
    ) -> Result<bool, JsValue> {
        let fail = |what: &str, e: JsValue| js_error("network", &format!("{path}: {what}: {e:?}"));
        // `fetch` from the global scope: a page's window or a worker's self.
        let fetch: js_sys::Function = Reflect::get(&js_sys::global(), &JsValue::from_str("fetch"))
            .and_then(|f| f.dyn_into())
            .map_err(|e| fail("no fetch in this context", e))?;
        let response: web_sys::Response = JsFuture::from(
            fetch
                .call1(&JsValue::NULL, &JsValue::from_str(&url))
                .and_then(|p| p.dyn_into::<Promise>())
                .map_err(|e| fail("fetch failed", e))?,
        )
        .await
        .and_then(|r| r.dyn_into())
        .map_err(|e| fail("fetch failed", e))?;
        if response.status() == 404 {
            return Ok(false);
        }
        if !response.ok() {
            return Err(js_error(
                "network",
                &format!("{path}: HTTP {}", response.status()),
            ));
        }
        let header = |name: &str| response.headers().get(name).ok().flatten();
        // A dev server that answers a missing file with its HTML page must not pass as a file.
        if header("content-type").is_some_and(|t| t.contains("text/html")) {
            return Ok(false);
        }
        let total = header("content-length").and_then(|l| l.parse::<f64>().ok());
        // The body's length, where the Content-Length gives it: with a content encoding it
        // counts the compressed bytes instead.
        let length = total.filter(|_| {
            header("content-encoding").is_none_or(|e| e.trim().eq_ignore_ascii_case("identity"))
        });
        let body = response
            .body()
            .ok_or_else(|| invalid(&format!("{path}: the response has no body")))?;
        let reader: web_sys::ReadableStreamDefaultReader = body
            .get_reader()
            .dyn_into()
            .map_err(|e| fail("unreadable body", e.into()))?;
        self.begin_file(path.clone(), None, length)?;
        match self
            .stream_body(&path, &reader, total, on_progress.as_ref())
            .await
        {
            Ok(()) => self.end_file().map(|_| true),
            Err(e) => {
                // Nothing half-read stays behind: the file can be fetched again.
                self.current = None;
                self.digest = None;
                Err(e)
            }
        }
    }
}

impl ModelLoader {
    async fn stream_body(
        &mut self,
        path: &str,
        reader: &web_sys::ReadableStreamDefaultReader,
        total: Option<f64>,
        on_progress: Option<&js_sys::Function>,
    ) -> Result<(), JsValue> {
        let fail = |what: &str, e: JsValue| js_error("network", &format!("{path}: {what}: {e:?}"));
        let mut received = 0.0;
        loop {
            let next = JsFuture::from(reader.read())
                .await
                .map_err(|e| fail("download interrupted", e))?;
            let done = Reflect::get(&next, &JsValue::from_str("done"))
                .map(|d| d.is_truthy())
                .unwrap_or(true);
            if done {
                return Ok(());
            }
            let chunk: Uint8Array = Reflect::get(&next, &JsValue::from_str("value"))
                .and_then(|v| v.dyn_into())
                .map_err(|e| fail("unexpected chunk", e))?;
            received += chunk.length() as f64;
            // Copied into wasm memory one chunk at a time, then uploaded.
            self.push(&chunk.to_vec())?;
            if let Some(f) = on_progress {
                let total = total.map_or(JsValue::UNDEFINED, JsValue::from);
                f.call2(&JsValue::NULL, &JsValue::from(received), &total)
                    .map_err(|e| fail("onProgress threw", e))?;
            }
        }
    }
}
