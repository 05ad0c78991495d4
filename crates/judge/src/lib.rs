//! The second judge of LINA's evaluation.
//!
//! The probe's checker (`lina_probe::check`) labels each pixel by its nearest palette colour
//! and measures each node's largest region with its own thresholds. An intervention tuned
//! against it, or a repair that paints what it looks for, could pass it without drawing the
//! scene. This judge reaches its verdicts another way and shares no code with it:
//!
//! 1. [`segment`]: a small network, trained offline on the probe's exact masks
//!    (`tools/train_judge.py`), labels every pixel from its 5x5 neighbourhood and its height
//!    in the image, with a confidence; it never sees a palette.
//! 2. [`verdict`]: the scene graph's entities and relations are measured on those labels with
//!    this crate's own geometry (bounding boxes, contact bands, cover ratios).
//!
//! An image is *wrecked* when the judge finds no valid scene in it: a named entity missing,
//! or too much of the frame unlike anything the world draws.
//!
//! The design is ours (the LINA paper's evaluation protocol is not public); docs/lina.md
//! reports how often this judge agrees with ground truth and with the checker.

pub mod label;
pub mod segment;
pub mod verdict;

pub use label::Label;
pub use segment::{Segmentation, Segmenter};
pub use verdict::{Judgement, Verdict, judge};
