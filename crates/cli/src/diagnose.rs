//! LINA's diagnostics from the command line: step sweeps, CSG-guided re-inpainting, and how
//! far texture and physics edits move the prompt embedding.

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

/// `embed-shift --model DIR (--prompt TEXT | --suite NAME [--count N])`: how far single-word
/// texture edits and physics edits move the text embedding, per edit or as means over a
/// probe suite's prompts.
pub fn embed_shift(args: &[String]) -> Result<()> {
    use lina::intervene::shift::{EditKind, edits, measure};

    let (mut model, mut prompt, mut suite, mut count) = (None, None, None, None);
    for (flag, value) in flags(args)? {
        match flag {
            "--model" => model = Some(value.to_string()),
            "--prompt" => prompt = Some(value.to_string()),
            "--suite" => suite = Some(value.to_string()),
            "--count" => count = Some(parse(flag, value)?),
            other => return Err(unknown_option(other)),
        }
    }
    let model = model.ok_or_else(|| Error::InvalidInput("--model is required".into()))?;
    let prompts: Vec<String> = match (prompt, suite) {
        (Some(p), None) => vec![p],
        (None, Some(name)) => {
            let mut suite = lina::probe::Suite::named(&name)?;
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
        let pipe = StableDiffusion::load(&DirSource::new(&model), &lina::device::cpu())?;
        let mut sums = [(0.0f64, 0.0f64, 0usize); 2];
        if single {
            println!(
                "| kind | edit | relative distance | cosine distance |\n| --- | --- | --- | --- |"
            );
        }
        for prompt in &prompts {
            // Edits whose new word splits into other tokens change the layout: skipped.
            let same_length = |text: &str| -> Result<bool> {
                Ok(pipe.tokenizer().encode(text)?.ids.len()
                    == pipe.tokenizer().encode(prompt)?.ids.len()
                    && pipe.tokenizer().words(text)?.iter().flatten().count()
                        == pipe.tokenizer().words(prompt)?.iter().flatten().count())
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
