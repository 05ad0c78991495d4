#![cfg(not(target_arch = "wasm32"))]
//! Weights stream in: host memory while loading stays within one tensor and a chunk of what
//! the model keeps, whatever the file's size; chunk boundaries and shards change nothing.
//!
//! A counting global allocator measures host memory. Its counters are process-wide, so every
//! test here takes one lock: no other test allocates while one measures.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::fixture;
use lina_runtime::pipeline::{CancelToken, GenerateOptions, NoHook, StableDiffusion};
use lina_runtime::schedulers::Timesteps;
use lina_runtime::source::{DirSource, FileSource, MemorySource, StagedSource};
use lina_runtime::weights::WeightsUpload;
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};

struct Counting;

static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let now = CURRENT.fetch_add(layout.size(), Ordering::SeqCst) + layout.size();
        PEAK.fetch_max(now, Ordering::SeqCst);
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        CURRENT.fetch_sub(layout.size(), Ordering::SeqCst);
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Runs `f`, returning its result, the host memory it still holds at the end and the most
/// it held at any time (both above what was allocated before).
fn measure<T>(f: impl FnOnce() -> T) -> (T, usize, usize) {
    let base = CURRENT.load(Ordering::SeqCst);
    PEAK.store(base, Ordering::SeqCst);
    let out = f();
    let end = CURRENT.load(Ordering::SeqCst).saturating_sub(base);
    let peak = PEAK.load(Ordering::SeqCst).saturating_sub(base);
    (out, end, peak)
}

/// Chunks as a fetch body or a file reader delivers them.
const CHUNK: usize = 16 << 10;
/// Bookkeeping the loader may hold besides the tensor being filled and the chunk: the
/// header, names and shapes, the map of uploaded tensors.
const FIXED: usize = 1 << 20;

fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("lina-streaming-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Streams one weight file from disk through `WeightsUpload` onto `device`.
fn upload_from_disk(
    dir: &std::path::Path,
    file: &str,
    device: &burn::tensor::Device,
) -> lina_runtime::weights::Weights {
    let source = DirSource::new(dir).with_chunk_size(CHUNK);
    let mut upload = WeightsUpload::new(device);
    upload.begin_file(file, source.len(file).unwrap()).unwrap();
    assert!(source.stream(file, &mut |c| upload.push(c)).unwrap());
    upload.end_file().unwrap();
    upload.finish(file).unwrap()
}

fn largest_f32_bytes(bytes: &[u8]) -> usize {
    let st = SafeTensors::deserialize(bytes).unwrap();
    st.tensors()
        .iter()
        .map(|(_, v)| v.shape().iter().product::<usize>() * 4)
        .max()
        .unwrap()
}

#[test]
fn a_large_f16_file_never_sits_in_host_memory() {
    let _guard = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    // 48 f16 tensors of 256 Ki values: a 24 MiB file whose largest tensor is 1 MiB as f32.
    let dir = temp_dir("f16");
    let values: Vec<Vec<u8>> = (0..48)
        .map(|i| {
            (0..256 * 1024)
                .flat_map(|j| {
                    half::f16::from_f32(((i * 7 + j) % 1000) as f32 / 1000.0).to_le_bytes()
                })
                .collect()
        })
        .collect();
    let views: Vec<(String, TensorView)> = values
        .iter()
        .enumerate()
        .map(|(i, v)| {
            (
                format!("t{i}"),
                TensorView::new(Dtype::F16, vec![512, 512], v).unwrap(),
            )
        })
        .collect();
    let bytes = safetensors::serialize(views, None).unwrap();
    std::fs::write(dir.join("big.safetensors"), &bytes).unwrap();
    let largest = largest_f32_bytes(&bytes);
    drop((values, bytes));

    // On the CPU backend the tensors themselves are host memory ("kept"); on a GPU they are
    // not, and the whole load must fit in one tensor, a chunk and bookkeeping.
    for (name, device) in common::test_devices() {
        let (weights, kept, peak) = measure(|| upload_from_disk(&dir, "big.safetensors", &device));
        let bound = kept + largest + CHUNK + FIXED;
        println!(
            "{name}: 24 MiB f16 file: peak host {:.2} MiB, kept {:.2} MiB, bound {:.2} MiB",
            peak as f64 / 1048576.0,
            kept as f64 / 1048576.0,
            bound as f64 / 1048576.0
        );
        assert!(peak <= bound, "{name}: peak {peak} B exceeds {bound} B");
        // The check can fail: reading the file whole would have needed the file on top.
        assert!(kept + 24 * 1048576 > bound);
        // And the values arrived intact.
        let t: burn::tensor::Tensor<2> = weights.root().tensor("t47", [512, 512]).unwrap();
        let v = t.into_data().try_to_vec::<f32>().unwrap();
        let (i, j) = (47, 3);
        let expected = half::f16::from_f32(((i * 7 + j) % 1000) as f32 / 1000.0).to_f32();
        assert_eq!(v[3], expected, "{name}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_model_file_streams_within_one_tensor_of_what_it_keeps() {
    let _guard = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let dir = fixture("sd1_tiny/unet");
    let file = "diffusion_pytorch_model.safetensors";
    let bytes = std::fs::read(dir.join(file)).unwrap();
    let largest = largest_f32_bytes(&bytes);
    let size = bytes.len();
    drop(bytes);
    let (_weights, kept, peak) =
        measure(|| upload_from_disk(&dir, file, &lina_runtime::device::cpu()));
    println!("tiny UNet ({size} B): peak {peak} B, kept {kept} B, largest tensor {largest} B");
    assert!(
        peak <= kept + largest + CHUNK + FIXED,
        "peak {peak} B, kept {kept} B, largest tensor {largest} B"
    );
}

fn source_of(files: &[(String, Vec<u8>)]) -> MemorySource {
    let mut source = MemorySource::new();
    for (k, v) in files {
        source.insert(k.clone(), v.clone());
    }
    source
}

/// Splits the UNet's weights into two shards and an index, as diffusers saves large models.
fn sharded(files: &[(String, Vec<u8>)]) -> Vec<(String, Vec<u8>)> {
    let unet = "unet/diffusion_pytorch_model.safetensors";
    let bytes = &files.iter().find(|(k, _)| k == unet).unwrap().1;
    let st = SafeTensors::deserialize(bytes).unwrap();
    let mut names: Vec<String> = st.names().into_iter().map(String::from).collect();
    names.sort();
    let half = names.len() / 2;
    let mut out: Vec<(String, Vec<u8>)> =
        files.iter().filter(|(k, _)| k != unet).cloned().collect();
    let mut map = serde_json::Map::new();
    for (i, part) in [&names[..half], &names[half..]].into_iter().enumerate() {
        let shard = format!("diffusion_pytorch_model-0000{}-of-00002.safetensors", i + 1);
        let views: Vec<(String, TensorView)> = part
            .iter()
            .map(|n| (n.clone(), st.tensor(n).unwrap()))
            .collect();
        for n in part {
            map.insert(n.clone(), shard.clone().into());
        }
        out.push((
            format!("unet/{shard}"),
            safetensors::serialize(views, None).unwrap(),
        ));
    }
    let index = serde_json::json!({ "metadata": { "total_size": bytes.len() }, "weight_map": map });
    out.push((format!("{unet}.index.json"), index.to_string().into_bytes()));
    out
}

fn image(model: &StableDiffusion) -> Vec<u8> {
    let opts = GenerateOptions {
        prompt: "a red ball on a table".into(),
        seed: 3,
        timesteps: Timesteps::Count(2),
        ..GenerateOptions::default()
    };
    let done = pollster::block_on(model.generate(&opts, &mut NoHook, &CancelToken::new())).unwrap();
    done.image.rgb
}

#[test]
fn chunked_and_sharded_models_give_the_same_image() {
    let _guard = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let device = lina_runtime::device::cpu();
    let files = common::model_files("sd1_tiny");
    let whole = image(&StableDiffusion::load(&source_of(&files), &device).unwrap());
    let from_disk = StableDiffusion::load(
        &DirSource::new(fixture("sd1_tiny")).with_chunk_size(777),
        &device,
    )
    .unwrap();
    assert_eq!(image(&from_disk), whole, "777-byte chunks");
    let shards = sharded(&files);
    assert!(shards.iter().any(|(k, _)| k.ends_with("00002.safetensors")));
    let from_shards = StableDiffusion::load(&source_of(&shards), &device).unwrap();
    assert_eq!(image(&from_shards), whole, "two shards");
}

/// Shards as the browser's ModelLoader stages them: each weight file (each shard) uploaded
/// as its bytes arrive, in chunks, before the model is built.
#[test]
fn shards_staged_as_the_browser_does_give_the_same_image() {
    let _guard = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let device = lina_runtime::device::cpu();
    let files = common::model_files("sd1_tiny");
    let whole = image(&StableDiffusion::load(&source_of(&files), &device).unwrap());
    let shards = sharded(&files);
    let mut staged = StagedSource::default();
    for (path, bytes) in &shards {
        if path.ends_with(".safetensors") {
            let mut upload = WeightsUpload::new(&device);
            upload.begin_file(path, Some(bytes.len() as u64)).unwrap();
            for chunk in bytes.chunks(1000) {
                upload.push(chunk).unwrap();
            }
            upload.end_file().unwrap();
            staged.insert_uploaded(path.clone(), upload);
        } else {
            staged.insert(path.clone(), bytes.clone());
        }
    }
    let from_staged = StableDiffusion::load(&staged, &device).unwrap();
    assert_eq!(image(&from_staged), whole);
}

#[test]
fn a_missing_or_duplicated_shard_is_named() {
    let _guard = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let device = lina_runtime::device::cpu();
    let shards = sharded(&common::model_files("sd1_tiny"));
    let missing: Vec<_> = shards
        .iter()
        .filter(|(k, _)| !k.ends_with("00002-of-00002.safetensors"))
        .cloned()
        .collect();
    let e = StableDiffusion::load(&source_of(&missing), &device)
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("00002-of-00002.safetensors") && e.contains("index.json"),
        "{e}"
    );

    // The second shard repeats a tensor of the first.
    let mut twice = shards.clone();
    let first = twice
        .iter()
        .find(|(k, _)| k.ends_with("00001-of-00002.safetensors"))
        .unwrap()
        .1
        .clone();
    let second = twice
        .iter_mut()
        .find(|(k, _)| k.ends_with("00002-of-00002.safetensors"))
        .unwrap();
    let a = SafeTensors::deserialize(&first).unwrap();
    let b = SafeTensors::deserialize(&second.1).unwrap();
    let mut views: Vec<(String, TensorView)> = b.tensors();
    let (name, view) = a.tensors().into_iter().next().unwrap();
    views.push((name.clone(), view));
    second.1 = safetensors::serialize(views, None).unwrap();
    let e = StableDiffusion::load(&source_of(&twice), &device)
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("more than one shard") && e.contains(&name),
        "{e}"
    );

    // An index that points outside the model folder.
    let mut escaping = shards;
    let index = escaping
        .iter_mut()
        .find(|(k, _)| k.ends_with("index.json"))
        .unwrap();
    index.1 = br#"{"weight_map": {"conv_in.weight": "../../secret.safetensors"}}"#.to_vec();
    let e = StableDiffusion::load(&source_of(&escaping), &device)
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("not a .safetensors file beside the index"),
        "{e}"
    );
}
