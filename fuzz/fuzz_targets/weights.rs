//! A safetensors file of any bytes, read the two ways the runtime reads weights: streamed in
//! chunks of a size the input chooses (as from a fetch body), and whole onto the CPU device,
//! where a model then asks for a tensor by name and shape.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lina::weights::{TensorStream, Weights};

fuzz_target!(|data: &[u8]| {
    let Some((&chunk, file)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(chunk).max(1);
    let mut stream = TensorStream::new("fuzz.safetensors");
    let mut sink = |tensor: lina::weights::StreamedTensor| {
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

    let device = lina::device::cpu();
    let whole = Weights::from_bytes("fuzz.safetensors", file, &device);
    // One parser, two ways in: they must agree on whether the file is good.
    assert_eq!(
        streamed.is_ok(),
        whole.is_ok(),
        "{streamed:?} vs {:?}",
        whole.as_ref().err()
    );
    if let Ok(weights) = whole {
        let _ = weights.root().tensor::<2>("weight", [2, 3]);
        let _ = weights.finish();
    }
});
