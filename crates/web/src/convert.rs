//! Values between JS and Rust: images, scene graphs, attention maps, serialisable results.

use js_sys::{Object, Reflect, Uint8Array, Uint8ClampedArray};
use wasm_bindgen::prelude::*;

use lina_runtime::source::MemorySource;

use crate::{invalid, js_err};

/// `{ tokens: [{ position, word }], height, width, steps: Float32Array[] }`.
pub(crate) fn token_maps_object(maps: &lina::attention::TokenMaps) -> Result<JsValue, JsValue> {
    let out = Object::new();
    let steps: js_sys::Array = maps
        .steps
        .iter()
        .map(|s| JsValue::from(js_sys::Float32Array::from(s.as_slice())))
        .collect();
    let set = |k: &str, v: &JsValue| Reflect::set(&out, &JsValue::from_str(k), v);
    set("tokens", &to_js(&maps.tokens)?)
        .and_then(|_| set("height", &JsValue::from(maps.height as u32)))
        .and_then(|_| set("width", &JsValue::from(maps.width as u32)))
        .and_then(|_| set("steps", &steps))
        .map_err(|_| invalid("could not build the attention maps"))?;
    Ok(out.into())
}

/// A scene graph from its JSON object, validated. Through serde_json, whose errors name the
/// unknown or missing field.
pub(crate) fn csg_from_js(csg: JsValue) -> Result<lina_csg::Csg, JsValue> {
    let csg: serde_json::Value =
        serde_wasm_bindgen::from_value(csg).map_err(|e| invalid(&format!("invalid CSG: {e}")))?;
    lina_csg::Csg::from_json(&csg.to_string()).map_err(js_err)
}

/// Files from an object mapping relative paths (`"unet/config.json"`) to `Uint8Array`s.
pub(crate) fn source_from_files(files: &Object) -> Result<MemorySource, JsValue> {
    let mut source = MemorySource::new();
    for key in Object::keys(files).iter() {
        let path = key
            .as_string()
            .ok_or_else(|| invalid("file names must be strings"))?;
        let value = Reflect::get(files, &key).map_err(|_| invalid("unreadable file entry"))?;
        let bytes = value
            .dyn_into::<Uint8Array>()
            .map_err(|_| invalid(&format!("{path}: expected a Uint8Array")))?;
        source.insert(path, bytes.to_vec());
    }
    Ok(source)
}

/// A serialisable value as a plain JS object (maps as objects, not `Map`s).
pub(crate) fn to_js<T: serde::Serialize>(value: &T) -> Result<JsValue, JsValue> {
    value
        .serialize(&serde_wasm_bindgen::Serializer::json_compatible())
        .map_err(|e| invalid(&format!("could not convert the result: {e}")))
}

/// `{ width, height, rgba }` (as `ImageData` has them) to an image; alpha is ignored.
pub(crate) fn image_from_js(value: &JsValue) -> Result<lina_runtime::image::Image, JsValue> {
    let field = |k: &str| Reflect::get(value, &JsValue::from_str(k)).ok();
    let number = |k: &str| {
        field(k)
            .and_then(|v| v.as_f64())
            .filter(|v| v.fract() == 0.0 && *v >= 1.0 && *v <= 4096.0)
            .map(|v| v as usize)
            .ok_or_else(|| invalid(&format!("image.{k} must be a whole number of pixels")))
    };
    let (width, height) = (number("width")?, number("height")?);
    let rgba = field("rgba")
        .filter(|v| v.is_object())
        .map(|v| Uint8Array::new(&v).to_vec())
        .ok_or_else(|| invalid("image.rgba must be a Uint8ClampedArray or Uint8Array"))?;
    if rgba.len() != width * height * 4 {
        return Err(invalid(&format!(
            "image.rgba has {} bytes, {width}x{height} RGBA needs {}",
            rgba.len(),
            width * height * 4
        )));
    }
    let rgb = rgba
        .chunks_exact(4)
        .flat_map(|p| [p[0], p[1], p[2]])
        .collect();
    Ok(lina_runtime::image::Image { width, height, rgb })
}

/// `{ width, height, rgba: Uint8ClampedArray }`, ready for `new ImageData(rgba, width, height)`.
pub(crate) fn image_object(image: &lina_runtime::image::Image) -> Result<Object, JsValue> {
    let out = Object::new();
    let rgba = Uint8ClampedArray::from(image.to_rgba().as_slice());
    let set = |k: &str, v: &JsValue| Reflect::set(&out, &JsValue::from_str(k), v).map(|_| ());
    set("width", &JsValue::from(image.width as u32))
        .and_then(|_| set("height", &JsValue::from(image.height as u32)))
        .and_then(|_| set("rgba", &rgba))
        .map_err(|_| invalid("could not build an image object"))?;
    Ok(out)
}
