//! A safetensors file of any bytes, read the two ways the runtime reads weights: streamed in
//! chunks of a size the input chooses (as from a fetch body), with or without a declared
//! length (a Content-Length, which may itself disagree with the bytes), and whole onto the CPU
//! device, where a model then asks for a tensor by name and shape. A header that lies about
//! its tensors' sizes must cost no more memory than the bytes that arrive: libFuzzer's RSS and
//! malloc limits turn any large reservation into a crash.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lina_runtime::weights::{TensorStream, Weights};

fuzz_target!(|data: &[u8]| {
    let [chunk, length, file @ ..] = data else {
        return;
    };
    let chunk = usize::from(*chunk).max(1);
    let true_length = file.len() as u64;
    // 0: unknown; 1: the true length; otherwise a wrong one, near it or far from it.
    let declared = match length {
        0 => None,
        1 => Some(true_length),
        &n if n < 128 => Some(true_length + u64::from(n)),
        &n => Some(true_length.saturating_sub(u64::from(n - 127))),
    };
    let mut stream = TensorStream::new("fuzz.safetensors", declared);
    let mut sink = |tensor: lina_runtime::weights::StreamedTensor| {
        let elements: usize = tensor.shape.iter().product();
        if let Some(values) = &tensor.values {
            assert_eq!(values.len(), elements, "{}: decoded length", tensor.name);
        }
        Ok(())
    };
    let streamed = file
        .chunks(chunk)
        .try_for_each(|c| stream.push(c, &mut sink))
        .and_then(|()| stream.finish());

    let device = lina_runtime::device::cpu();
    let whole = Weights::from_bytes("fuzz.safetensors", file, &device);
    // One parser, two ways in: they must agree on whether the file is good, except that a
    // wrong declared length makes a good file bad.
    if declared.is_none_or(|d| d == true_length) {
        assert_eq!(
            streamed.is_ok(),
            whole.is_ok(),
            "{streamed:?} vs {:?}",
            whole.as_ref().err()
        );
    } else {
        assert!(streamed.is_err(), "a wrong declared length was accepted");
    }
    if let Ok(weights) = whole {
        let _ = weights.root().tensor::<2>("weight", [2, 3]);
        let _ = weights.finish();
    }
});
