//! LINA's diagnostics from the command line: step sweeps, CSG-guided re-inpainting, and how
//! far texture and physics edits move the prompt embedding.

use std::path::PathBuf;

use lina::Plan;
use lina_csg::Csg;
use lina_probe::diagnose::step_sweep;
use lina_runtime::pipeline::{CancelToken, GenerateOptions, StableDiffusion};
use lina_runtime::schedulers::Timesteps;
use lina_runtime::source::DirSource;
use lina_runtime::{Error, Result};

use crate::common::{self, DeviceArg};

/// The options the sweep and re-inpainting share: the model, the prompt and its graph, the
/// sampler, the plan.
#[derive(clap::Args)]
pub struct Common {
    /// A diffusers-layout model folder.
    #[arg(long)]
    model: PathBuf,
    #[arg(long)]
    prompt: String,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[arg(long, default_value_t = 20)]
    steps: usize,
    #[arg(long, default_value_t = 3.0)]
    guidance: f64,
    /// A Causal Scene Graph as JSON; by default the one the prompt describes.
    #[arg(long)]
    csg: Option<PathBuf>,
    #[command(flatten)]
    device: DeviceArg,
}

impl Common {
    fn opts(&self) -> GenerateOptions {
        GenerateOptions {
            prompt: self.prompt.clone(),
            seed: self.seed,
            timesteps: Timesteps::Count(self.steps),
            guidance_scale: self.guidance,
            ..GenerateOptions::default()
        }
    }

    fn graph(&self) -> Result<Csg> {
        match &self.csg {
            Some(path) => Csg::from_json(&common::read_text(path)?),
            None => lina_csg::parse::parse(&self.prompt),
        }
    }

    async fn load(&self) -> Result<StableDiffusion> {
        let device = self.device.open().await?;
        StableDiffusion::load(&DirSource::new(&self.model), &device)
    }
}

#[derive(clap::Args)]
pub struct SweepArgs {
    #[command(flatten)]
    common: Common,
    /// The plan whose guidance is applied one step at a time.
    #[arg(long, default_value = "lina", value_parser = common::plan)]
    plan: Plan,
    /// Write the sweep as JSON here too.
    #[arg(long)]
    out: Option<PathBuf>,
}

#[derive(clap::Args)]
pub struct ReinpaintArgs {
    #[command(flatten)]
    common: Common,
    /// The plan to regenerate under.
    #[arg(long, default_value = "baseline", value_parser = common::plan)]
    plan: Plan,
    /// The image to re-inpaint (PNG).
    #[arg(long)]
    image: PathBuf,
    /// The CSG node whose region is regenerated.
    #[arg(long)]
    node: String,
    /// How much of the schedule runs over the region (1 redraws it from noise).
    #[arg(long, default_value_t = 0.6)]
    strength: f64,
    /// The PNG to write; the verdicts go beside it as OUT.json.
    #[arg(long)]
    out: PathBuf,
}

#[derive(clap::Args)]
#[command(group(clap::ArgGroup::new("prompts").required(true).args(["prompt", "suite"])))]
pub struct EmbedShiftArgs {
    /// A diffusers-layout model folder.
    #[arg(long)]
    model: PathBuf,
    /// One prompt, edit by edit.
    #[arg(long)]
    prompt: Option<String>,
    /// Or a probe suite's prompts (id, ood, train), as means.
    #[arg(long)]
    suite: Option<String>,
    /// Prompts per category of the suite.
    #[arg(long, requires = "suite", value_parser = clap::value_parser!(u64).range(1..))]
    count: Option<u64>,
}

/// `sweep --model DIR --prompt TEXT [--plan P] [--csg FILE] [--out SWEEP.json]`
pub fn sweep(args: SweepArgs) -> Result<()> {
    let SweepArgs {
        common: c,
        plan,
        out,
    } = args;
    let csg = c.graph()?;
    pollster::block_on(async {
        let pipe = c.load().await?;
        let sweep = step_sweep(&pipe, &c.opts(), &csg, &plan, &CancelToken::new()).await?;
        println!(
            "baseline: {}/{} checks pass\nstep  change  checks passed",
            sweep.baseline_passed, sweep.checks
        );
        for p in &sweep.points {
            println!(
                "{:>4}  {:>6.2}  {}/{}",
                p.step, p.change, p.passed, p.checks
            );
        }
        if let Some(out) = &out {
            common::write_json(out, &sweep)?;
        }
        Ok(())
    })
}

/// Regenerates one node's region of an image; prints the checker's verdicts before and after.
pub fn reinpaint(args: ReinpaintArgs) -> Result<()> {
    let ReinpaintArgs {
        common: c,
        plan,
        image,
        node,
        strength,
        out,
    } = args;
    let image = common::read_png(&image)?;
    let csg = c.graph()?;
    pollster::block_on(async {
        let pipe = c.load().await?;
        let done = lina_probe::diagnose::reinpaint(
            &pipe,
            &c.opts(),
            &csg,
            &plan,
            &image,
            &node,
            strength,
            &CancelToken::new(),
        )
        .await?;
        common::write(&out, done.image.to_png()?)?;
        let passed = |v: &[lina_probe::check::Verdict]| v.iter().filter(|v| v.passed).count();
        println!(
            "wrote {}: {}/{} checks pass before, {}/{} after",
            out.display(),
            passed(&done.before),
            done.before.len(),
            passed(&done.after),
            done.after.len()
        );
        common::write_json(&PathBuf::from(format!("{}.json", out.display())), &done)
    })
}

/// `embed-shift --model DIR (--prompt TEXT | --suite NAME [--count N])`: how far single-word
/// texture edits and physics edits move the text embedding, per edit or as means over a
/// probe suite's prompts.
pub fn embed_shift(args: EmbedShiftArgs) -> Result<()> {
    use lina::shift::{EditKind, edits, measure};

    let EmbedShiftArgs {
        model,
        prompt,
        suite,
        count,
    } = args;
    let prompts: Vec<String> = match (prompt, suite) {
        (Some(p), None) => vec![p],
        (None, Some(name)) => {
            let mut suite = lina_probe::Suite::named(&name)?;
            if let Some(n) = count {
                suite.per_category = n;
            }
            suite.ids().iter().map(|id| id.scene().prompt).collect()
        }
        _ => {
            return Err(Error::InvalidInput(
                "give either --prompt or --suite".into(),
            ));
        }
    };
    let single = prompts.len() == 1;
    pollster::block_on(async {
        let pipe = StableDiffusion::load(&DirSource::new(&model), &lina_runtime::device::cpu())?;
        let mut sums = [(0.0f64, 0.0f64, 0usize); 2];
        if single {
            println!(
                "| kind | edit | relative distance | cosine distance |\n| --- | --- | --- | --- |"
            );
        }
        for prompt in &prompts {
            // Edits whose new word splits into other tokens change the layout: skipped.
            let same_length = |text: &str| -> Result<bool> {
                Ok(pipe.context_used(text)? == pipe.context_used(prompt)?)
            };
            let mut found = Vec::new();
            for edit in edits(prompt) {
                if same_length(&edit.1)? {
                    found.push(edit);
                }
            }
            for shift in measure(&pipe, prompt, &found).await? {
                let k = (shift.kind == EditKind::Physics) as usize;
                sums[k].0 += shift.relative as f64;
                sums[k].1 += shift.cosine as f64;
                sums[k].2 += 1;
                if single {
                    println!(
                        "| {:?} | {} | {:.4} | {:.5} |",
                        shift.kind, shift.edited, shift.relative, shift.cosine
                    );
                }
            }
        }
        if !single {
            println!(
                "{} prompts\n\n| kind | edits | mean relative distance | mean cosine distance |\n| --- | --- | --- | --- |",
                prompts.len()
            );
            for (name, (rel, cos, n)) in ["texture", "physics"].iter().zip(sums) {
                let n1 = n.max(1) as f64;
                println!("| {name} | {n} | {:.4} | {:.5} |", rel / n1, cos / n1);
            }
        }
        Ok(())
    })
}
