//! LINA's sampling-time interventions: they change how the model is sampled, never its
//! weights.

pub mod schedule;
