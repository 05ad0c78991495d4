//! LINA's diagnostics from the command line: step sweeps and CSG-guided re-inpainting.

use lina::csg::Csg;
use lina::intervene::Plan;
use lina::intervene::diagnose::{reinpaint, step_sweep};
use lina::pipeline::{GenerateOptions, StableDiffusion};
use lina::schedulers::Timesteps;
use lina::source::DirSource;
use lina::{Error, Result};

use super::{flags, parse, read_plan, read_png, unknown_option};

/// The options both commands share.
struct Common {
    model: Option<String>,
    opts: GenerateOptions,
    plan: Plan,
    csg: Option<String>,
    device: String,
    out: Option<String>,
}

impl Common {
    fn new() -> Self {
        Self {
            model: None,
            opts: GenerateOptions {
                guidance_scale: 3.0,
                ..GenerateOptions::default()
            },
            plan: Plan::lina(),
            csg: None,
            device: "cpu".into(),
            out: None,
        }
    }

    /// Takes a shared option; false if `flag` is not one.
    fn take(&mut self, flag: &str, value: &str) -> Result<bool> {
        match flag {
            "--model" => self.model = Some(value.into()),
            "--prompt" => self.opts.prompt = value.into(),
            "--seed" => self.opts.seed = parse(flag, value)?,
            "--steps" => self.opts.timesteps = Timesteps::Count(parse(flag, value)?),
            "--guidance" => self.opts.guidance_scale = parse(flag, value)?,
            "--plan" => self.plan = read_plan(value)?,
            "--csg" => self.csg = Some(value.into()),
            "--device" => self.device = value.into(),
            "--out" => self.out = Some(value.into()),
            _ => return Ok(false),
        }
        Ok(true)
    }

    fn graph(&self) -> Result<Csg> {
        match &self.csg {
            Some(path) => Csg::from_json(
                &std::fs::read_to_string(path).map_err(|e| Error::Io(format!("{path}: {e}")))?,
            ),
            None => lina::csg::parse::parse(&self.opts.prompt),
        }
    }

    fn model(&self) -> Result<String> {
        self.model
            .clone()
            .ok_or_else(|| Error::InvalidInput(format!("--model is required\n{}", super::USAGE)))
    }
}

fn write_json(path: &str, value: &impl serde::Serialize) -> Result<()> {
    let text = serde_json::to_string_pretty(value).expect("serialisable");
    std::fs::write(path, text).map_err(|e| Error::Io(format!("{path}: {e}")))
}

/// `sweep --model DIR --prompt TEXT [--plan P] [--csg FILE] [--out SWEEP.json]`
pub fn sweep(args: &[String]) -> Result<()> {
    let mut c = Common::new();
    for (flag, value) in flags(args)? {
        if !c.take(flag, value)? {
            return Err(unknown_option(flag));
        }
    }
    let csg = c.graph()?;
    pollster::block_on(async {
        let device = lina::device::by_name(&c.device).await?;
        let pipe = StableDiffusion::load(&DirSource::new(c.model()?), &device)?;
        let sweep = step_sweep(&pipe, &c.opts, &csg, &c.plan).await?;
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
        if let Some(out) = &c.out {
            write_json(out, &sweep)?;
        }
        Ok(())
    })
}

/// `reinpaint --model DIR --prompt TEXT --image IN.png --node ID [--strength S] [--plan P]
/// [--csg FILE] --out OUT.png`
pub fn run(args: &[String]) -> Result<()> {
    let mut c = Common::new();
    c.plan = Plan::default();
    let (mut image, mut node, mut strength) = (None, None, 0.6);
    for (flag, value) in flags(args)? {
        if c.take(flag, value)? {
            continue;
        }
        match flag {
            "--image" => image = Some(read_png(value)?),
            "--node" => node = Some(value.to_string()),
            "--strength" => strength = parse(flag, value)?,
            other => return Err(unknown_option(other)),
        }
    }
    let need = |what: &str| Error::InvalidInput(format!("{what} is required\n{}", super::USAGE));
    let (image, node) = (
        image.ok_or_else(|| need("--image"))?,
        node.ok_or_else(|| need("--node"))?,
    );
    let out = c.out.clone().ok_or_else(|| need("--out"))?;
    let csg = c.graph()?;
    pollster::block_on(async {
        let device = lina::device::by_name(&c.device).await?;
        let pipe = StableDiffusion::load(&DirSource::new(c.model()?), &device)?;
        let done = reinpaint(&pipe, &c.opts, &csg, &c.plan, &image, &node, strength).await?;
        std::fs::write(&out, done.image.to_png()?).map_err(|e| Error::Io(format!("{out}: {e}")))?;
        let passed = |v: &[lina::probe::check::Verdict]| v.iter().filter(|v| v.passed).count();
        println!(
            "wrote {out}: {}/{} checks pass before, {}/{} after",
            passed(&done.before),
            done.before.len(),
            passed(&done.after),
            done.after.len()
        );
        write_json(&format!("{out}.json"), &done)
    })
}
