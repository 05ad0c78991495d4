//! The causality-aware schedule: for a fixed number of model evaluations, move the timesteps
//! toward the noisy start, where the scene's layout forms, and away from the clean end, where
//! only texture changes.
//!
//! Ours (the paper says only "reallocated"): every timestep `t` of the plain schedule maps to
//! `f(t) = T (1 - (1 - t/T)^warp)`, `T` the largest training timestep. `warp = 1` is the
//! identity, so the plain schedule comes back unchanged; `warp > 1` crowds the steps toward
//! `T` (near 0, `f(t) ≈ warp·t`, so the last step stays close to clean); `warp < 1` does the
//! opposite, for ablations.

use lina_runtime::error::{Error, Result};

/// The largest warp accepted; beyond it nearly every step sits at the noisy end.
pub const MAX_WARP: f64 = 8.0;

/// Warps a plain descending schedule. The result is rounded to whole timesteps and kept
/// strictly descending, as the samplers require.
pub fn warp_timesteps(plain: &[f64], num_train_timesteps: usize, warp: f64) -> Result<Vec<f64>> {
    if !(warp.is_finite() && warp > 0.0 && warp <= MAX_WARP) {
        return Err(Error::InvalidInput(format!(
            "the schedule warp must be in (0, {MAX_WARP}], got {warp}"
        )));
    }
    if plain.windows(2).any(|w| w[1] >= w[0]) {
        return Err(Error::InvalidInput(
            "the plain schedule must be strictly descending".into(),
        ));
    }
    let top = (num_train_timesteps - 1) as f64;
    let mut out: Vec<f64> = Vec::with_capacity(plain.len());
    for &t in plain {
        let u = (t / top).clamp(0.0, 1.0);
        let mut warped = (top * (1.0 - (1.0 - u).powf(warp))).round();
        if let Some(&previous) = out.last() {
            warped = warped.min(previous - 1.0);
        }
        out.push(warped);
    }
    if out.last().is_some_and(|&t| t < 0.0) {
        return Err(Error::InvalidInput(format!(
            "{} steps do not fit under warp {warp}",
            plain.len()
        )));
    }
    Ok(out)
}

/// The share of `timesteps` in the noisiest fifth of the range: how much of the budget goes
/// to layout.
pub fn early_share(timesteps: &[f64], num_train_timesteps: usize) -> f64 {
    let cut = 0.8 * (num_train_timesteps - 1) as f64;
    timesteps.iter().filter(|&&t| t >= cut).count() as f64 / timesteps.len().max(1) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plain(n: usize) -> Vec<f64> {
        // DDIM's "leading" spacing with steps_offset 1, as SD 1.x configures it.
        (0..n).rev().map(|i| (i * (1000 / n) + 1) as f64).collect()
    }

    #[test]
    fn warp_one_is_the_plain_schedule() {
        for n in [1, 4, 20, 50] {
            assert_eq!(warp_timesteps(&plain(n), 1000, 1.0).unwrap(), plain(n));
        }
    }

    #[test]
    fn a_larger_warp_moves_steps_to_the_noisy_start() {
        let base = early_share(&plain(20), 1000);
        let mut last = base;
        for warp in [1.5, 2.0, 3.0] {
            let t = warp_timesteps(&plain(20), 1000, warp).unwrap();
            assert_eq!(t.len(), 20);
            assert!(t.windows(2).all(|w| w[1] < w[0]), "{t:?}");
            assert!(t[0] <= 999.0 && *t.last().unwrap() >= 0.0);
            let share = early_share(&t, 1000);
            assert!(share > last, "warp {warp}: {share} <= {last}");
            last = share;
        }
        let t = warp_timesteps(&plain(20), 1000, 0.5).unwrap();
        assert!(early_share(&t, 1000) < base);
    }

    #[test]
    fn bad_warps_are_refused() {
        for warp in [0.0, -1.0, f64::NAN, 9.0] {
            let e = warp_timesteps(&plain(10), 1000, warp)
                .unwrap_err()
                .to_string();
            assert!(e.contains("warp"), "{e}");
        }
    }
}
