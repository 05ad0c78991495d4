//! `lina-cli`: generate images, measure, evaluate and diagnose from the command line. Every
//! subcommand has its own `--help`.

mod bench;
mod common;
mod diagnose;
mod eval;
mod generate;
mod memory;
mod probe;
mod search;
mod soak;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

/// Text-to-image diffusion with LINA's causal interventions, natively (CPU backend or wgpu).
#[derive(Parser)]
#[command(name = "lina-cli", version, about, propagate_version = true)]
struct Cli {
    /// More diagnostics on standard error (repeat for more); `RUST_LOG` overrides it.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Generate an image (txt2img, img2img or inpainting), with or without LINA's plan.
    Generate(Box<generate::Args>),
    /// What a model needs: weights per component and the largest tensor at each size.
    Memory(memory::Args),
    /// Time to first image, UNet call, step and image latency, LINA's overhead.
    Bench(bench::Args),
    /// Time one classifier-free-guidance UNet call of a config with random weights.
    BenchUnet(bench::unet::Args),
    /// Time the UNet's layer kinds at SD 1.5's shapes: burn's kernels beside ours.
    BenchKernels(bench::kernels::Args),
    /// Generate a probe suite's prompts, check each image, write a report.
    Probe(probe::Args),
    /// Render a probe suite's scenes with masks, CSG JSON and the checker's report.
    ProbeRender(probe::RenderArgs),
    /// Write probe scenes as training data (and the second judge's pixel labels).
    ProbeData(probe::DataArgs),
    /// LINA's guidance at one step at a time: how much each step moves the image.
    Sweep(diagnose::SweepArgs),
    /// Regenerate one CSG node's region; the checker's verdicts before and after.
    Reinpaint(diagnose::ReinpaintArgs),
    /// How far texture and physics word swaps move the prompt embedding.
    EmbedShift(diagnose::EmbedShiftArgs),
    /// Every candidate plan on every prompt of a suite, scored by the checker (offline).
    LinaSearch(search::SearchArgs),
    /// LINA's evaluation under two judges: plain sampling, the full plan and its ablation, the
    /// predictor, best-of-N by the checker and the verifier-guided repair.
    Eval(eval::EvalArgs),
    /// An evaluation's tables rendered again from its saved scores (`eval.json`).
    EvalTable(eval::TableArgs),
    /// Fit LINA's per-prompt plan predictor to a search's scores.
    LinaFit(search::FitArgs),
    /// Many images from one loaded model; fails if memory grew.
    Soak(soak::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let level = match cli.verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level)),
        )
        .with_writer(std::io::stderr)
        .init();
    let result = match cli.command {
        Command::Generate(args) => generate::run(*args),
        Command::Memory(args) => memory::run(args),
        Command::Bench(args) => bench::run(args),
        Command::BenchUnet(args) => bench::unet::run(args),
        Command::BenchKernels(args) => bench::kernels::run(args),
        Command::Probe(args) => probe::run(args),
        Command::ProbeRender(args) => probe::render(args),
        Command::ProbeData(args) => probe::data(args),
        Command::Sweep(args) => diagnose::sweep(args),
        Command::Reinpaint(args) => diagnose::reinpaint(args),
        Command::EmbedShift(args) => diagnose::embed_shift(args),
        Command::LinaSearch(args) => search::search(args),
        Command::Eval(args) => eval::eval(args),
        Command::EvalTable(args) => eval::eval_table(args),
        Command::LinaFit(args) => search::fit(args),
        Command::Soak(args) => soak::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // The error's chain of sources, outermost first, then its stable code.
            let mut message = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                let text = s.to_string();
                if !message.contains(&text) {
                    message.push_str(&format!(": {text}"));
                }
                source = s.source();
            }
            eprintln!("error[{}]: {message}", e.code());
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }
}
