//! The browser API: a thin wasm-bindgen layer over the runtime, LINA and the probe, and the
//! only crate of the workspace that knows wasm-bindgen. Every method is async where the
//! GPU is involved, every error is a JS `Error` with the core's message, and a panic hook
//! reports any bug to the console instead of an opaque `unreachable`.
//!
//! One module per part of the API: `pipeline` (the `Pipeline` class: a loaded model and
//! everything run on it), `loader` (the `ModelLoader` class: a model's files streamed to the
//! device), `device` (device options), `options` (generation options) and `convert` (values
//! between JS and Rust).

#![cfg(target_arch = "wasm32")]

mod convert;
mod device;
mod loader;
mod options;
mod pipeline;

pub use loader::ModelLoader;
pub use pipeline::Pipeline;

use js_sys::Reflect;
use wasm_bindgen::prelude::*;

#[wasm_bindgen(start)]
pub fn start() {
    use tracing_subscriber::prelude::*;

    console_error_panic_hook::set_once();
    // Info and above, to the console as text (no ANSI colours, no clock: a page has no
    // std::time). A second instance in the same realm keeps the first subscriber.
    let console = tracing_subscriber::fmt::layer()
        .with_ansi(false)
        .without_time()
        .with_writer(tracing_web::MakeWebConsoleWriter::new())
        .with_filter(tracing_subscriber::filter::LevelFilter::INFO);
    let _ = tracing_subscriber::registry().with(console).try_init();
}

/// A JS `Error` with `message` and a stable `code` (the runtime's [`lina_runtime::Error::code`]
/// for its errors): what every rejection and exception of this API is, so that callers branch
/// on `error.code` rather than on message text.
pub(crate) fn js_error(code: &str, message: &str) -> JsValue {
    let error = js_sys::Error::new(message);
    // Setting a property on a fresh Error cannot fail.
    let _ = Reflect::set(&error, &JsValue::from_str("code"), &JsValue::from_str(code));
    error.into()
}

pub(crate) fn js_err(e: lina_runtime::Error) -> JsValue {
    js_error(e.code(), &e.to_string())
}

/// Bad input from the caller: options, files, images, graphs.
pub(crate) fn invalid(message: &str) -> JsValue {
    js_error("invalid_input", message)
}
