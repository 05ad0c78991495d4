//! A component's config.json of any text: parsed, validated, and, where accepted, sized for a
//! 512x512 generation, as the loader does before allocating anything.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lina_runtime::models::clip::ClipTextConfig;
use lina_runtime::models::taesd::TaesdConfig;
use lina_runtime::models::unet::UNetConfig;
use lina_runtime::models::vae::VaeConfig;
use lina_runtime::schedulers::SchedulerConfig;

fuzz_target!(|data: &[u8]| {
    let Ok(json) = std::str::from_utf8(data) else {
        return;
    };
    let _ = SchedulerConfig::from_json(json);
    let _ = TaesdConfig::from_json(json);
    let text = ClipTextConfig::from_json(json);
    let unet = UNetConfig::from_json(json);
    let vae = VaeConfig::from_json(json);
    if let (Ok(unet), Ok(vae)) = (&unet, &vae) {
        let _ = lina_runtime::memory::activations(unet, vae, 512, 512, 2, true, 128 << 20);
    }
    if let Ok(vae) = &vae {
        let _ = vae.decoder_peak(512, 512);
    }
    if let (Ok(text), Ok(unet), Ok(vae)) = (&text, &unet, &vae) {
        let _ = lina_runtime::memory::weight_bytes(text, unet, vae, &lina_runtime::device::cpu());
    }
});
