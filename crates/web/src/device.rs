//! The device a model lives on, from `{ backend, precision, kernels }`.

use js_sys::{Object, Reflect};
use wasm_bindgen::prelude::*;

use lina_runtime::device::Precision;
use lina_runtime::kernels::Kernels;

use crate::{invalid, js_err};

/// The device that device options ask for: `{ backend, precision }`, both optional.
/// `backend`: `"webgpu"` (the default) or `"cpu"`, burn's pure-Rust CPU backend compiled into
/// this module, which beats WebGPU on a software adapter such as SwiftShader by far (the
/// worker chooses it for `"auto"`, see lina-worker.js). `precision`: `"auto"` (the default:
/// f16 where the adapter has shader-f16, f32 otherwise), `"f32"` or `"f16"`; the CPU backend
/// computes in f32. `kernels`: `"fused"` (the default: the WGSL kernels of shaders/ on WebGPU)
/// or `"burn"` (burn's own kernels only), for the model loaded with these options. Other keys
/// are errors.
pub(crate) async fn device_from_options(
    options: &JsValue,
) -> Result<(burn::tensor::Device, Kernels), JsValue> {
    let (mut cpu, mut precision, mut kernels) = (false, None, Kernels::Fused);
    if !options.is_undefined() && !options.is_null() {
        let object = options
            .dyn_ref::<Object>()
            .ok_or_else(|| invalid("options must be an object"))?;
        for key in Object::keys(object).iter() {
            let name = key.as_string().unwrap_or_default();
            let value = Reflect::get(object, &key).unwrap_or(JsValue::UNDEFINED);
            match (name.as_str(), value.as_string().as_deref()) {
                ("backend", Some("webgpu")) => cpu = false,
                ("backend", Some("cpu")) => cpu = true,
                ("backend", _) => {
                    return Err(invalid("backend must be \"webgpu\" or \"cpu\""));
                }
                ("precision", Some("auto")) => precision = None,
                ("precision", Some("f32")) => precision = Some(Precision::F32),
                ("precision", Some("f16")) => precision = Some(Precision::F16),
                ("precision", _) => {
                    return Err(invalid("precision must be \"auto\", \"f32\" or \"f16\""));
                }
                ("kernels", Some("fused")) => kernels = Kernels::Fused,
                ("kernels", Some("burn")) => kernels = Kernels::Burn,
                ("kernels", _) => {
                    return Err(invalid("kernels must be \"fused\" or \"burn\""));
                }
                (other, _) => {
                    return Err(invalid(&format!(
                        "unknown option \"{other}\" (the options are backend, precision and kernels)"
                    )));
                }
            }
        }
    }
    let device = match (cpu, precision) {
        (true, Some(Precision::F16)) => {
            return Err(invalid(
                "the CPU backend computes in f32: ask for precision \"f32\" or \"auto\"",
            ));
        }
        (true, _) => lina_runtime::device::cpu(),
        (false, precision) => {
            let stop_asking = ask_for_subgroups();
            let device = lina_runtime::device::gpu_for(precision.unwrap_or(Precision::Auto)).await;
            // Calling the function it returned cannot throw.
            let _ = stop_asking.call0(&JsValue::NULL);
            device.map_err(js_err)?
        }
    };
    Ok((device, kernels))
}

// wgpu (30) opens WebGPU devices without the `subgroups` feature, which it does not know in
// browsers, and shaders may use subgroup operations only on a device opened with it; on
// software adapters (SwiftShader) the runtime's lanes kernels need them. So while the runtime
// opens a device, the adapter's `requestDevice` adds the feature wherever the adapter has it.
// Patching the prototype is the only way in, since wgpu calls `requestDevice` itself; it lasts
// from here to the call of the function this returns, which puts the original back. A device
// some other code opens in that window gets the feature too, which changes nothing for it; if
// ours is not the one that got it, the runtime finds its shaders cannot use subgroups and keeps
// the other kernels (`lina_runtime::device`).
#[wasm_bindgen(inline_js = r#"
export function ask_for_subgroups() {
  const proto = globalThis.GPUAdapter?.prototype;
  const original = proto?.requestDevice;
  if (typeof original !== "function") return () => {};
  const asking = function (descriptor = {}) {
    if (!this.features.has("subgroups")) return original.call(this, descriptor);
    const features = [...(descriptor.requiredFeatures ?? [])];
    if (!features.includes("subgroups")) features.push("subgroups");
    return original.call(this, { ...descriptor, requiredFeatures: features });
  };
  proto.requestDevice = asking;
  return () => {
    if (proto.requestDevice === asking) proto.requestDevice = original;
  };
}
"#)]
extern "C" {
    fn ask_for_subgroups() -> js_sys::Function;
}
