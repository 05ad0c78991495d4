//! Safetensors read as a byte stream, one tensor at a time.
//!
//! A browser cannot hold a 1.7 GB UNet file in wasm memory next to the model it builds, and a
//! native loader should not need to either. [`TensorStream`] takes the file in chunks of any
//! size (a fetch body, slices of a `File`, reads from disk), validates the header as soon as
//! it has arrived, and hands each tensor to a sink the moment its last byte comes in, decoded
//! to f32. Host memory at any time is the header, the tensor being filled, and the chunk in
//! hand: never the file.
//!
//! The header is untrusted: a hundred bytes may claim a tensor of terabytes. Nothing is
//! reserved from its word alone. A tensor's values grow as its bytes arrive; the header must
//! fit the file's declared length where the source knows it (a file's size, a response's
//! Content-Length); and no tensor may exceed [`MAX_TENSOR_BYTES`].

use safetensors::Dtype;
use safetensors::tensor::{Metadata, TensorInfo};

use crate::error::{Error, Result};

/// The same bound the safetensors crate puts on headers: a larger one is not a weight file.
const MAX_HEADER_BYTES: usize = 100_000_000;

/// The largest tensor accepted, in bytes as stored: 2 GiB, past the largest tensor of any
/// published Stable-Diffusion-class checkpoint (T5-XXL's embedding is 0.5 GiB in f32) and at
/// the size of the largest ArrayBuffer some browsers allow.
pub const MAX_TENSOR_BYTES: u64 = 2 << 30;

/// One tensor, complete.
pub struct StreamedTensor {
    pub name: String,
    pub shape: Vec<usize>,
    pub dtype: Dtype,
    /// The values as f32, or `None` for a dtype this runtime does not decode (integer buffers
    /// such as `position_ids`): only an error if a model asks for the tensor.
    pub values: Option<Vec<f32>>,
}

/// A push parser over one safetensors file.
pub struct TensorStream {
    file: String,
    stage: Stage,
    /// Bytes of the size prefix or the header gathered so far.
    pending: Vec<u8>,
    received: u64,
    /// The file's length as its source declares it, when it knows.
    declared: Option<u64>,
    /// The header's length, once read.
    header_len: u64,
}

enum Stage {
    Size,
    Header {
        len: usize,
    },
    Data {
        /// Tensors in the order of their bytes, and the index of the one being filled.
        order: Vec<(String, TensorInfo)>,
        next: usize,
        filling: Option<Filling>,
    },
    Done,
}

/// The tensor whose bytes are arriving.
struct Filling {
    remaining: usize,
    values: Option<Vec<f32>>,
    /// A value split across two chunks: its first bytes.
    carry: [u8; 4],
    carry_len: usize,
}

impl TensorStream {
    /// `file` names the file in every error; `declared` is its length where the source
    /// knows it, which the header must fit.
    pub fn new(file: &str, declared: Option<u64>) -> Self {
        Self {
            file: file.to_string(),
            stage: Stage::Size,
            pending: Vec::new(),
            received: 0,
            declared,
            header_len: 0,
        }
    }

    fn error(&self, message: impl Into<String>) -> Error {
        Error::WeightFile {
            file: self.file.clone(),
            message: message.into(),
        }
    }

    /// Takes the next bytes of the file; every tensor they complete goes to `sink`.
    pub fn push(
        &mut self,
        mut chunk: &[u8],
        sink: &mut dyn FnMut(StreamedTensor) -> Result<()>,
    ) -> Result<()> {
        self.received += chunk.len() as u64;
        while !chunk.is_empty() || self.has_empty_tensor_next() {
            match &mut self.stage {
                Stage::Size => {
                    let take = (8 - self.pending.len()).min(chunk.len());
                    self.pending.extend_from_slice(&chunk[..take]);
                    chunk = &chunk[take..];
                    if self.pending.len() == 8 {
                        let len = u64::from_le_bytes(self.pending[..8].try_into().unwrap());
                        if len > MAX_HEADER_BYTES as u64 {
                            return Err(self.error(format!(
                                "header of {len} bytes is larger than the {MAX_HEADER_BYTES} a safetensors file may have"
                            )));
                        }
                        if let Some(declared) = self.declared.filter(|&d| 8 + len > d) {
                            return Err(self.error(format!(
                                "header of {len} bytes does not fit in the file's {declared} bytes"
                            )));
                        }
                        self.pending.clear();
                        self.stage = Stage::Header { len: len as usize };
                    }
                }
                Stage::Header { len } => {
                    let len = *len;
                    let take = (len - self.pending.len()).min(chunk.len());
                    self.pending.extend_from_slice(&chunk[..take]);
                    chunk = &chunk[take..];
                    if self.pending.len() == len {
                        self.stage = self.parse_header()?;
                    }
                }
                Stage::Data {
                    order,
                    next,
                    filling,
                } => {
                    let trusted = self.declared.is_some();
                    let fill =
                        filling.get_or_insert_with(|| Filling::start(&order[*next].1, trusted));
                    let take = fill.remaining.min(chunk.len());
                    fill.decode(order[*next].1.dtype, &chunk[..take]);
                    chunk = &chunk[take..];
                    if fill.remaining == 0 {
                        let (name, info) = &order[*next];
                        let done = filling.take().unwrap();
                        sink(StreamedTensor {
                            name: name.clone(),
                            shape: info.shape.clone(),
                            dtype: info.dtype,
                            values: done.values,
                        })?;
                        *next += 1;
                        if *next == order.len() {
                            self.stage = Stage::Done;
                        }
                    }
                }
                Stage::Done => {
                    return Err(self.error(format!(
                        "{} bytes follow the last tensor; the header does not describe this file",
                        chunk.len()
                    )));
                }
            }
        }
        Ok(())
    }

    /// Zero-byte tensors complete without any bytes arriving.
    fn has_empty_tensor_next(&self) -> bool {
        match &self.stage {
            Stage::Data {
                order,
                next,
                filling: None,
            } => order[*next].1.data_offsets.0 == order[*next].1.data_offsets.1,
            _ => false,
        }
    }

    /// Where the data starts: after the size prefix and the header just read.
    fn received_header_end(&self) -> u64 {
        8 + self.header_len
    }

    fn parse_header(&mut self) -> Result<Stage> {
        let metadata: Metadata = serde_json::from_slice(&self.pending)
            .map_err(|e| self.error(format!("invalid header: {e}")))?;
        self.header_len = self.pending.len() as u64;
        self.pending = Vec::new();
        let mut order: Vec<(String, TensorInfo)> = metadata
            .tensors()
            .into_iter()
            .map(|(name, info)| (name, info.clone()))
            .collect();
        order.sort_by_key(|(_, info)| info.data_offsets.0);
        // Validated by the safetensors crate: offsets are contiguous from 0 and each tensor's
        // span matches its shape and dtype. What it cannot know is whether the file is that
        // long, nor whether a tensor is absurdly large.
        if let Some((name, info)) = order
            .iter()
            .find(|(_, info)| (info.data_offsets.1 - info.data_offsets.0) as u64 > MAX_TENSOR_BYTES)
        {
            let bytes = info.data_offsets.1 - info.data_offsets.0;
            return Err(self.error(format!(
                "tensor `{name}` claims {bytes} bytes, over the {MAX_TENSOR_BYTES} a tensor may have"
            )));
        }
        let data = order.last().map_or(0, |(_, info)| info.data_offsets.1) as u64;
        if let Some(declared) = self.declared {
            let expected = self.received_header_end() + data;
            if expected > declared {
                return Err(self.error(format!(
                    "truncated: the header describes a file of {expected} bytes, but it has {declared}"
                )));
            }
            if expected < declared {
                return Err(self.error(format!(
                    "the header describes a file of {expected} bytes, but it has {declared}: bytes follow the last tensor"
                )));
            }
        }
        Ok(if order.is_empty() {
            Stage::Done
        } else {
            Stage::Data {
                order,
                next: 0,
                filling: None,
            }
        })
    }

    /// The end of the file: fails if it came before the last tensor's last byte.
    pub fn finish(self) -> Result<()> {
        let at = match &self.stage {
            Stage::Done => return Ok(()),
            Stage::Size | Stage::Header { .. } => "in the header".to_string(),
            Stage::Data { order, next, .. } => format!("inside tensor `{}`", order[*next].0),
        };
        Err(self.error(format!(
            "truncated: the file ends after {} bytes, {at}",
            self.received
        )))
    }
}

impl Filling {
    /// The tensor `info` describes. Its whole size is reserved at once only where the header
    /// was checked against the file's declared length (`trusted`); otherwise the values grow
    /// with the bytes that actually arrive, so a header that lies costs nothing until then.
    fn start(info: &TensorInfo, trusted: bool) -> Self {
        let (begin, end) = info.data_offsets;
        let decodable = width(info.dtype).is_some();
        let count = if trusted {
            info.shape.iter().product()
        } else {
            0
        };
        Self {
            remaining: end - begin,
            values: decodable.then(|| Vec::with_capacity(count)),
            carry: [0; 4],
            carry_len: 0,
        }
    }

    /// Decodes `bytes`, the next ones of this tensor, keeping a split value for later.
    fn decode(&mut self, dtype: Dtype, mut bytes: &[u8]) {
        self.remaining -= bytes.len();
        let Some(values) = &mut self.values else {
            return;
        };
        let width = width(dtype).expect("only decodable tensors keep values");
        if self.carry_len > 0 {
            let take = (width - self.carry_len).min(bytes.len());
            self.carry[self.carry_len..self.carry_len + take].copy_from_slice(&bytes[..take]);
            self.carry_len += take;
            bytes = &bytes[take..];
            if self.carry_len < width {
                return;
            }
            values.push(decode_one(dtype, &self.carry[..width]));
            self.carry_len = 0;
        }
        let whole = bytes.len() / width * width;
        values.extend(
            bytes[..whole]
                .chunks_exact(width)
                .map(|b| decode_one(dtype, b)),
        );
        let rest = &bytes[whole..];
        self.carry[..rest.len()].copy_from_slice(rest);
        self.carry_len = rest.len();
    }
}

/// The bytes of one value of a float type this runtime reads: f32, f16, bf16, and the two
/// 8-bit floats that FLUX's and SD 3's fp8 files store (e4m3fn, e5m2); `None` for another.
fn width(dtype: Dtype) -> Option<usize> {
    match dtype {
        Dtype::F32 => Some(4),
        Dtype::F16 | Dtype::BF16 => Some(2),
        Dtype::F8_E4M3 | Dtype::F8_E5M2 => Some(1),
        _ => None,
    }
}

/// A whole buffer of little-endian values of a float type [`width`] knows; `None` for
/// another dtype. What a small file read whole (a LoRA, an embedding) needs; weight files
/// stream through [`TensorStream`] instead.
pub(crate) fn decode_all(dtype: Dtype, bytes: &[u8]) -> Option<Vec<f32>> {
    let width = width(dtype)?;
    Some(
        bytes
            .chunks_exact(width)
            .map(|b| decode_one(dtype, b))
            .collect(),
    )
}

/// One little-endian value of a float type [`width`] knows.
fn decode_one(dtype: Dtype, b: &[u8]) -> f32 {
    match dtype {
        Dtype::F32 => f32::from_le_bytes([b[0], b[1], b[2], b[3]]),
        Dtype::F16 => half::f16::from_le_bytes([b[0], b[1]]).to_f32(),
        // e5m2 is f16 with its low byte dropped.
        Dtype::F8_E5M2 => half::f16::from_bits(u16::from(b[0]) << 8).to_f32(),
        Dtype::F8_E4M3 => e4m3fn(b[0]),
        _ => half::bf16::from_le_bytes([b[0], b[1]]).to_f32(),
    }
}

/// An 8-bit float of 1 sign, 4 exponent (bias 7) and 3 mantissa bits, "fn": no infinities,
/// and only the all-ones exponent and mantissa is NaN (so its largest value is 448).
fn e4m3fn(byte: u8) -> f32 {
    let sign = if byte & 0x80 != 0 { -1.0 } else { 1.0 };
    let (exponent, mantissa) = (i32::from((byte >> 3) & 0x0f), f32::from(byte & 0x07));
    sign * match (exponent, byte & 0x7f) {
        (_, 0x7f) => f32::NAN,
        // Subnormal: no implicit 1, the smallest exponent.
        (0, _) => mantissa / 8.0 * 2f32.powi(-6),
        _ => (1.0 + mantissa / 8.0) * 2f32.powi(exponent - 7),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The 8-bit floats decode as PyTorch's `float8_e4m3fn` and `float8_e5m2` do (their
    /// bytes for these values, `torch.tensor(v).to(dtype).view(torch.uint8)`).
    #[test]
    fn fp8_values_decode_as_pytorch_writes_them() {
        let e4m3 = [
            (0x00, 0.0),
            (0x38, 1.0),
            (0xc0, -2.0),
            (0x7e, 448.0),
            (0x01, 2f32.powi(-9)),
            (0x3c, 1.5),
            (0x33, 0.6875),
        ];
        for (byte, value) in e4m3 {
            assert_eq!(
                decode_one(Dtype::F8_E4M3, &[byte]),
                value,
                "e4m3 {byte:#04x}"
            );
        }
        assert!(decode_one(Dtype::F8_E4M3, &[0xff]).is_nan());
        for (byte, value) in [(0x3c, 1.0), (0xc0, -2.0), (0x7b, 57344.0), (0x3e, 1.5)] {
            assert_eq!(
                decode_one(Dtype::F8_E5M2, &[byte]),
                value,
                "e5m2 {byte:#04x}"
            );
        }
        assert_eq!(
            decode_all(Dtype::F8_E4M3, &[0x38, 0xc0]),
            Some(vec![1.0, -2.0])
        );
        assert_eq!(decode_all(Dtype::I8, &[1]), None);
    }

    /// A small file with every decodable dtype, an integer buffer and an empty tensor.
    fn sample() -> Vec<u8> {
        use safetensors::tensor::TensorView;
        let f32s: Vec<u8> = [1.5f32, -2.0, 3.25]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let f16s: Vec<u8> = [0.5f32, 4.0]
            .iter()
            .flat_map(|v| half::f16::from_f32(*v).to_le_bytes())
            .collect();
        let bf16s: Vec<u8> = [-1.0f32, 8.0, 0.25, 2.0]
            .iter()
            .flat_map(|v| half::bf16::from_f32(*v).to_le_bytes())
            .collect();
        let ints: Vec<u8> = [7i64, 9].iter().flat_map(|v| v.to_le_bytes()).collect();
        let views = [
            ("a", TensorView::new(Dtype::F32, vec![3], &f32s).unwrap()),
            ("b", TensorView::new(Dtype::F16, vec![2, 1], &f16s).unwrap()),
            (
                "c",
                TensorView::new(Dtype::BF16, vec![2, 2], &bf16s).unwrap(),
            ),
            (
                "d.position_ids",
                TensorView::new(Dtype::I64, vec![2], &ints).unwrap(),
            ),
            ("e", TensorView::new(Dtype::F32, vec![0], &[]).unwrap()),
        ];
        safetensors::serialize(views, None).unwrap()
    }

    fn read_all(bytes: &[u8], chunk: usize) -> Result<Vec<StreamedTensor>> {
        read_declared(bytes, chunk, None)
    }

    fn read_declared(
        bytes: &[u8],
        chunk: usize,
        declared: Option<u64>,
    ) -> Result<Vec<StreamedTensor>> {
        let mut stream = TensorStream::new("sample.safetensors", declared);
        let mut got = Vec::new();
        for part in bytes.chunks(chunk) {
            stream.push(part, &mut |t| {
                got.push(t);
                Ok(())
            })?;
        }
        stream.finish()?;
        got.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(got)
    }

    #[test]
    fn any_chunk_size_gives_the_same_tensors() {
        let bytes = sample();
        for chunk in [1, 3, 7, 64, bytes.len()] {
            let got = read_all(&bytes, chunk).unwrap();
            let names: Vec<&str> = got.iter().map(|t| t.name.as_str()).collect();
            assert_eq!(
                names,
                ["a", "b", "c", "d.position_ids", "e"],
                "chunk {chunk}"
            );
            assert_eq!(got[0].values.as_deref(), Some(&[1.5, -2.0, 3.25][..]));
            assert_eq!(got[1].values.as_deref(), Some(&[0.5, 4.0][..]));
            assert_eq!(got[1].shape, [2, 1]);
            assert_eq!(got[2].values.as_deref(), Some(&[-1.0, 8.0, 0.25, 2.0][..]));
            assert!(got[3].values.is_none(), "integers are not decoded");
            assert_eq!(got[4].values.as_deref(), Some(&[][..]));
        }
    }

    #[test]
    fn a_truncated_file_names_where_it_ends() {
        let bytes = sample();
        let e = read_all(&bytes[..bytes.len() - 3], 5)
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains("sample.safetensors") && e.contains("truncated"),
            "{e}"
        );
        assert!(e.contains("inside tensor"), "{e}");
        let e = read_all(&bytes[..20], 5).err().unwrap().to_string();
        assert!(e.contains("in the header"), "{e}");
    }

    #[test]
    fn bytes_past_the_last_tensor_are_an_error() {
        let mut bytes = sample();
        bytes.extend_from_slice(&[0; 4]);
        let e = read_all(&bytes, 16).err().unwrap().to_string();
        assert!(e.contains("follow the last tensor"), "{e}");
    }

    #[test]
    fn bad_headers_are_refused_before_any_data() {
        let e = read_all(&u64::MAX.to_le_bytes(), 8)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("larger than"), "{e}");
        let mut bad = 5u64.to_le_bytes().to_vec();
        bad.extend_from_slice(b"{oops");
        let e = read_all(&bad, 4).err().unwrap().to_string();
        assert!(e.contains("invalid header"), "{e}");
        // Offsets that leave a gap between tensors.
        let header = br#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#;
        let mut gap = (header.len() as u64).to_le_bytes().to_vec();
        gap.extend_from_slice(header);
        gap.extend_from_slice(&[0; 8]);
        let e = read_all(&gap, 4).err().unwrap().to_string();
        assert!(e.contains("invalid header"), "{e}");
        // A shape that disagrees with its byte count.
        let header = br#"{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}"#;
        let mut short = (header.len() as u64).to_le_bytes().to_vec();
        short.extend_from_slice(header);
        short.extend_from_slice(&[0; 8]);
        let e = read_all(&short, 4).err().unwrap().to_string();
        assert!(e.contains("invalid header"), "{e}");
    }

    /// A safetensors prefix and header claiming one f32 tensor of `count` values.
    fn lying_header(count: u64) -> Vec<u8> {
        let header = format!(
            r#"{{"a":{{"dtype":"F32","shape":[{count}],"data_offsets":[0,{}]}}}}"#,
            count * 4
        );
        let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
        bytes.extend_from_slice(header.as_bytes());
        bytes
    }

    #[test]
    fn a_header_must_fit_the_declared_length() {
        // 100 bytes that claim a 1.5 GiB tensor, from a source that knows the file's length.
        let mut bytes = lying_header(400 << 20);
        bytes.extend_from_slice(&[0; 16]);
        let e = read_declared(&bytes, 64, Some(bytes.len() as u64))
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains("describes a file of") && e.contains("but it has"),
            "{e}"
        );
        // A header longer than the whole file.
        let e = read_declared(&bytes[..12], 4, Some(12))
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("does not fit in the file's 12 bytes"), "{e}");
        // The honest file, with its length, reads as before.
        let honest = sample();
        assert_eq!(
            read_declared(&honest, 7, Some(honest.len() as u64))
                .unwrap()
                .len(),
            5
        );
    }

    #[test]
    fn a_lying_header_without_a_length_costs_only_what_arrives() {
        // Without a declared length the claim cannot be checked up front: the values grow
        // with the bytes, and the end of the file says it was cut short.
        let mut bytes = lying_header(400 << 20);
        bytes.extend_from_slice(&1.0f32.to_le_bytes().repeat(4));
        let e = read_all(&bytes, 8).err().unwrap().to_string();
        assert!(
            e.contains("truncated") && e.contains("inside tensor `a`"),
            "{e}"
        );
        // Past the hard cap, refused as soon as the header is read.
        let e = read_all(&lying_header(MAX_TENSOR_BYTES / 4 + 1), 8)
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains("over the") && e.contains("a tensor may have"),
            "{e}"
        );
    }
}
