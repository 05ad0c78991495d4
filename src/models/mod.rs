//! Model components, one file each, built from their diffusers/transformers config.json.

pub mod attention_control;
pub mod clip;
pub mod config;
pub mod controlnet;
pub mod denoiser;
mod dit;
pub mod flux;
pub mod mmdit;
pub mod resnet;
pub mod t2i_adapter;
pub mod t5;
pub mod taesd;
pub mod transformer;
pub mod unet;
pub mod vae;
