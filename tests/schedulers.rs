#![cfg(not(target_arch = "wasm32"))]
//! DDIM, Euler (and Euler Karras), Euler ancestral, DPM-Solver++ and LCM against diffusers' own steps: timesteps, sigmas and latents after 10 steps
//! driven by a fake model (formula in tests/fixtures/schedulers.json).

mod common;

use burn::tensor::{Tensor, TensorData};
use common::{max_abs_diff, read_fixture, values};
use lina_runtime::schedulers::{self, Noise, SchedulerConfig, SchedulerKind, Timesteps};

/// The noise diffusers drew at each step of a stochastic case.
struct Recorded(Vec<Option<Vec<f32>>>);

impl Noise for Recorded {
    fn draw(&mut self, step: usize, like: &Tensor<4>) -> Tensor<4> {
        let values = self.0[step]
            .clone()
            .expect("diffusers drew no noise at this step");
        Tensor::from_data(TensorData::new(values, like.dims()), &like.device())
    }
}

fn floats(v: &serde_json::Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

#[test]
fn schedulers_match_diffusers_steps() {
    let doc: serde_json::Value = serde_json::from_slice(&read_fixture("schedulers.json")).unwrap();
    let device = lina_runtime::device::cpu();
    let cases = doc["cases"].as_array().unwrap();
    assert!(cases.len() >= 12);
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let config = SchedulerConfig::from_json(&case["config"].to_string()).unwrap();
        let kind = SchedulerKind::parse(case["scheduler"].as_str().unwrap()).unwrap();
        let request = match case["explicit_timesteps"].as_array() {
            Some(list) => Timesteps::Explicit(list.iter().map(|t| t.as_f64().unwrap()).collect()),
            None => Timesteps::Count(case["num_inference_steps"].as_u64().unwrap() as usize),
        };
        let image_tokens = case["image_tokens"].as_u64().map(|n| n as usize);
        let mut scheduler = schedulers::build(kind, &config, &request, image_tokens).unwrap();

        let expected_t = floats(&case["timesteps"]);
        assert_eq!(scheduler.timesteps().len(), expected_t.len(), "{name}");
        for (a, b) in scheduler.timesteps().iter().zip(&expected_t) {
            // A fractional timestep (Euler Karras) is found from its sigma by interpolating
            // the training log-sigmas, 3e-3 apart near t = 700: a 1e-6 relative difference in
            // those f32 sigmas (torch's cumulative product against ours) moves it by 3e-4.
            // The sigmas are checked through every step's sample below.
            let tolerance = if b.fract() == 0.0 { 1e-5 } else { 1e-3 };
            assert!(
                (a - b).abs() < tolerance,
                "{name}: timesteps {:?} vs {expected_t:?}",
                scheduler.timesteps()
            );
        }
        let sigma = case["init_noise_sigma"].as_f64().unwrap();
        assert!(
            (scheduler.init_noise_sigma() - sigma).abs() < 1e-5 * sigma.max(1.0),
            "{name}: init sigma"
        );

        let shape: [usize; 4] = case["shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as usize)
            .collect::<Vec<_>>()
            .try_into()
            .unwrap();
        let init: Vec<f32> = floats(&case["init_sample"])
            .iter()
            .map(|&x| x as f32)
            .collect();
        let mut sample = Tensor::<4>::from_data(TensorData::new(init, shape), &device)
            .mul_scalar(scheduler.init_noise_sigma());
        let as_tensor = |v: &serde_json::Value| {
            let values: Vec<f32> = floats(v).iter().map(|&x| x as f32).collect();
            Tensor::<4>::from_data(TensorData::new(values, shape), &device)
        };
        let clean = as_tensor(&case["init_sample"]);
        for (k, expected) in case["add_noise_at_step"].as_object().unwrap() {
            let k: usize = k.parse().unwrap();
            let ours = scheduler.add_noise(clean.clone(), as_tensor(&case["add_noise_extra"]), k);
            let expected: Vec<f32> = floats(expected).iter().map(|&x| x as f32).collect();
            let err = max_abs_diff(&values(ours), &expected);
            assert!(err < 1e-4, "{name}: add_noise at step {k}: error {err}");
        }
        let per_step = case["samples_per_step"].as_array().unwrap();
        // At zero terminal SNR the sigma schedulers' first sample is noise times 4096, whose
        // own f32 rounding (about 1e-3) carries into every step after at about 2e-5 of its
        // scale, however the step is computed.
        let sigma_zero_snr = case["config"]["rescale_betas_zero_snr"] == true && sigma > 1.0;
        let tolerance = if sigma_zero_snr { 5e-5 } else { 1e-5 };
        let mut noise = Recorded(match case["noise_per_step"].as_array() {
            Some(steps) => steps
                .iter()
                .map(|s| {
                    s.as_array()
                        .map(|_| floats(s).iter().map(|&x| x as f32).collect())
                })
                .collect(),
            None => vec![None; per_step.len()],
        });
        for (i, &t) in scheduler.timesteps().to_vec().iter().enumerate() {
            let c = ((t / 100.0).cos()) as f32;
            let out = scheduler
                .scale_model_input(sample.clone(), i)
                .mul_scalar(0.5)
                .add_scalar(0.1 * c);
            sample = scheduler.step(out, i, sample, &mut noise).prev_sample;
            let expected: Vec<f32> = floats(&per_step[i]).iter().map(|&x| x as f32).collect();
            let scale = expected.iter().fold(1f32, |m, v| m.max(v.abs()));
            let err = max_abs_diff(&values(sample.clone()), &expected);
            assert!(
                err < tolerance * scale,
                "{name} step {i}: max abs error {err} (scale {scale})"
            );
        }
        let expected: Vec<f32> = floats(&case["final_sample"])
            .iter()
            .map(|&x| x as f32)
            .collect();
        let err = max_abs_diff(&values(sample), &expected);
        assert!(
            err < tolerance * expected.iter().fold(1f32, |m, v| m.max(v.abs())),
            "{name}: final error {err}"
        );
    }
}

#[test]
fn explicit_schedules_are_validated() {
    let config = SchedulerConfig::from_json(
        r#"{"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012}"#,
    )
    .unwrap();
    for bad in [
        vec![],
        vec![500.0, 600.0],
        vec![1000.0, 10.0],
        vec![f64::NAN],
        vec![5.0, 5.0],
    ] {
        for kind in [SchedulerKind::Ddim, SchedulerKind::Euler] {
            assert!(
                schedulers::build(kind, &config, &Timesteps::Explicit(bad.clone()), None).is_err(),
                "{bad:?}"
            );
        }
    }
    let ddim = schedulers::build(
        SchedulerKind::Ddim,
        &config,
        &Timesteps::Explicit(vec![999.0, 500.0, 20.0]),
        None,
    )
    .unwrap();
    assert_eq!(ddim.timesteps(), &[999.0, 500.0, 20.0]);
    assert!(schedulers::build(SchedulerKind::Ddim, &config, &Timesteps::Count(0), None).is_err());
    assert!(
        schedulers::build(SchedulerKind::Ddim, &config, &Timesteps::Count(1001), None).is_err()
    );
}

#[test]
fn unsupported_scheduler_settings_are_refused() {
    for (json, word) in [
        (r#"{"prediction_type": "flow"}"#, "prediction_type"),
        (r#"{"timestep_spacing": "random"}"#, "timestep_spacing"),
        (r#"{"beta_schedule": "cubic"}"#, "beta_schedule"),
        (r#"{"num_train_timesteps": 0}"#, "num_train_timesteps"),
        ("{oops", "scheduler_config.json"),
    ] {
        let err = SchedulerConfig::from_json(json).err().unwrap().to_string();
        assert!(err.contains(word), "{json}: {err}");
    }
}

#[test]
fn settings_a_scheduler_lacks_are_refused_when_it_is_built() {
    let config = |extra: &str| {
        SchedulerConfig::from_json(&format!(
            r#"{{"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012{extra}}}"#
        ))
        .unwrap()
    };
    let dpm = SchedulerKind::parse("dpm++2m").unwrap();
    for (kind, extra, word) in [
        (
            SchedulerKind::Euler,
            r#", "use_exponential_sigmas": true"#,
            "use_exponential_sigmas",
        ),
        (
            dpm,
            r#", "algorithm_type": "sde-dpmsolver++""#,
            "algorithm_type",
        ),
        (dpm, r#", "solver_order": 3"#, "solver_order"),
        (
            dpm,
            r#", "final_sigmas_type": "other""#,
            "final_sigmas_type",
        ),
    ] {
        let err = schedulers::build(kind, &config(extra), &Timesteps::Count(10), None)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains(word), "{extra}: {err}");
    }
    let karras = config(r#", "use_karras_sigmas": true"#);
    for kind in [dpm, SchedulerKind::Euler] {
        let err = schedulers::build(
            kind,
            &karras,
            &Timesteps::Explicit(vec![900.0, 100.0]),
            None,
        )
        .err()
        .unwrap()
        .to_string();
        assert!(err.contains("Karras"), "{kind:?}: {err}");
    }
}

/// A DPM-Solver config as diffusers writes it (Python's JSON, with `-Infinity`, and keys the
/// runtime has no use for) reads, and its -infinity clips nothing, as diffusers' does.
#[test]
fn configs_as_diffusers_writes_them_read_with_their_infinities() {
    let written = r#"{
  "_class_name": "DPMSolverMultistepScheduler",
  "_diffusers_version": "0.42.0",
  "algorithm_type": "dpmsolver++",
  "beta_end": 0.012,
  "beta_schedule": "scaled_linear",
  "beta_start": 0.00085,
  "dynamic_thresholding_ratio": 0.995,
  "euler_at_final": false,
  "final_sigmas_type": "zero",
  "lambda_min_clipped": -Infinity,
  "lower_order_final": true,
  "num_train_timesteps": 1000,
  "prediction_type": "epsilon",
  "rescale_betas_zero_snr": false,
  "sample_max_value": 1.0,
  "solver_order": 2,
  "solver_type": "midpoint",
  "steps_offset": 1,
  "thresholding": false,
  "timestep_spacing": "linspace",
  "trained_betas": null,
  "use_karras_sigmas": false,
  "use_lu_lambdas": false,
  "variance_type": null
}"#;
    let config = SchedulerConfig::from_json(written).unwrap();
    let without =
        SchedulerConfig::from_json(&written.replace("\"lambda_min_clipped\": -Infinity,\n", ""))
            .unwrap();
    let dpm = SchedulerKind::parse("dpm++2m").unwrap();
    let steps = |c: &SchedulerConfig| {
        schedulers::build(dpm, c, &Timesteps::Count(20), None)
            .unwrap()
            .timesteps()
            .to_vec()
    };
    assert_eq!(steps(&config), steps(&without));
    assert_eq!(steps(&config).len(), 20);
}

/// Flow matching's schedules run from sigma 1 (timestep 1000) down; a bad explicit list, a
/// dynamic shift without the image's size, and settings it lacks are refused.
#[test]
fn flow_schedules_are_validated() {
    let config = |json: &str| SchedulerConfig::from_json(json).unwrap();
    let flow = SchedulerKind::parse("FlowMatchEulerDiscreteScheduler").unwrap();
    assert!(flow.is_flow() && !SchedulerKind::Euler.is_flow());
    let plain = config(r#"{"shift": 3.0}"#);
    let full = schedulers::build(
        flow,
        &plain,
        &Timesteps::Explicit(vec![1000.0, 500.0]),
        None,
    );
    assert_eq!(full.unwrap().timesteps(), &[1000.0, 500.0]);
    for bad in [
        vec![],
        vec![500.0, 600.0],
        vec![1001.0, 10.0],
        vec![f64::NAN],
        vec![5.0, 5.0],
    ] {
        let built = schedulers::build(flow, &plain, &Timesteps::Explicit(bad.clone()), None);
        assert!(built.is_err(), "{bad:?}");
    }
    for n in [0, 1001] {
        assert!(schedulers::build(flow, &plain, &Timesteps::Count(n), None).is_err());
    }
    let dynamic = config(r#"{"use_dynamic_shifting": true, "base_shift": null}"#);
    let err = schedulers::build(flow, &dynamic, &Timesteps::Count(4), None)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("image's size"), "{err}");
    assert!(schedulers::build(flow, &dynamic, &Timesteps::Count(4), Some(4096)).is_ok());
    let beta = config(r#"{"use_beta_sigmas": true}"#);
    let err = schedulers::build(flow, &beta, &Timesteps::Count(4), None)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("use_beta_sigmas"), "{err}");
    for (json, key) in [
        (r#"{"time_shift_type": "cubic"}"#, "time_shift_type"),
        (r#"{"shift": -1}"#, "shift"),
        (r#"{"shift_terminal": 1.5}"#, "shift_terminal"),
    ] {
        let err = SchedulerConfig::from_json(json).err().unwrap().to_string();
        assert!(err.contains(key), "{json}: {err}");
    }
}
