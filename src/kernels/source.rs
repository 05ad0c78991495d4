//! A kernel's WGSL text: its `shaders/` file after the one its family shares, with the
//! sizes and loops the call needs written in. Each kernel's module adds what writes its own
//! loops out.

use burn::tensor::DType;
use burn_cubecl::cubecl::prelude::KernelId;
use burn_cubecl::template::{KernelSource, SourceTemplate};

use super::attention::CoopAttention;
use super::matmul::CoopShape;

/// One of the `shaders/` kernels, for one storage type (and, for attention, head size and
/// which bound tensor each of q, k and v is read from).
pub(super) struct Wgsl {
    pub(super) name: &'static str,
    pub(super) f16: bool,
    pub(super) head_dim: u32,
    pub(super) sources: [u32; 3],
    /// For the norm kernels: whether a shift is bound.
    pub(super) shifted: bool,
    /// For the tiled attention: keys per block.
    pub(super) key_block: u32,
    /// For attention: whether a score bias is bound (after the output); for the lanes
    /// matmul, whether a bias is.
    pub(super) biased: bool,
    /// For the lanes kernels: the subgroup's invocations; for the lanes matmul, whether b is
    /// stored as [K, N] rows (else as [N, K]), and whether `a` is a convolution's input
    /// rather than a matrix.
    pub(super) lanes: u32,
    pub(super) b_rows: bool,
    pub(super) conv: bool,
    /// For the lanes attention: whether q, k and v are bound as vec4s (every row stride and
    /// column offset a multiple of 4), which lavapipe loads four times faster than four
    /// numbers.
    pub(super) quads: bool,
    /// For the coop matmul: the product it is written for.
    pub(super) coop: Option<CoopShape>,
    /// For the coop attention: its matrices, workgroup and key count (`key_block` holds its
    /// block of keys).
    pub(super) coop_attention: Option<CoopAttention>,
}

impl Wgsl {
    pub(super) fn new(name: &'static str, dtype: DType, head_dim: u32) -> Self {
        Self {
            name,
            f16: dtype == DType::F16,
            head_dim,
            sources: [0, 1, 2],
            shifted: false,
            key_block: 0,
            biased: false,
            lanes: 0,
            b_rows: false,
            conv: false,
            quads: false,
            coop: None,
            coop_attention: None,
        }
    }

    /// The kernel's text, after the text it shares with its family.
    fn template(&self) -> String {
        let own = self.own_template();
        let common = match self.name {
            "geglu" | "bias_residual" => include_str!("../../shaders/rows_common.wgsl"),
            "attention" | "attention_tiled" | "attention_lanes" | "attention_coop" => {
                include_str!("../../shaders/attention_common.wgsl")
            }
            name if name.starts_with("norm_") => include_str!("../../shaders/norm_common.wgsl"),
            _ => return own.to_string(),
        };
        format!("{common}\n{own}")
    }

    fn own_template(&self) -> &'static str {
        match self.name {
            "norm_rows" => include_str!("../../shaders/norm_rows.wgsl"),
            "norm_wide" => include_str!("../../shaders/norm_wide.wgsl"),
            "norm_partials" => include_str!("../../shaders/norm_partials.wgsl"),
            "norm_stats" => include_str!("../../shaders/norm_stats.wgsl"),
            "norm_apply" => include_str!("../../shaders/norm_apply.wgsl"),
            "attention" => include_str!("../../shaders/attention.wgsl"),
            "attention_tiled" => include_str!("../../shaders/attention_tiled.wgsl"),
            "attention_lanes" => include_str!("../../shaders/attention_lanes.wgsl"),
            "attention_coop" => include_str!("../../shaders/attention_coop.wgsl"),
            "geglu" => include_str!("../../shaders/geglu.wgsl"),
            "bias_residual" => include_str!("../../shaders/bias_residual.wgsl"),
            "guided_step" => include_str!("../../shaders/guided_step.wgsl"),
            "im2col" => include_str!("../../shaders/im2col.wgsl"),
            "matmul_lanes" => include_str!("../../shaders/matmul_lanes.wgsl"),
            "matmul_coop" => include_str!("../../shaders/matmul_coop.wgsl"),
            other => unreachable!("no kernel named {other}"),
        }
    }
}

impl KernelSource for Wgsl {
    fn source(&self) -> SourceTemplate {
        let elem = if self.f16 { "f16" } else { "f32" };
        let mut enable = String::new();
        if self.f16 {
            enable.push_str("enable f16;\n");
        }
        if self.coop_attention.is_some() {
            enable.push_str("enable wgpu_cooperative_matrix;\n");
        }
        // Browsers compile subgroup operations only after `enable subgroups`; naga, which
        // translates the kernels natively, does not parse it (and needs none). Their compiler
        // also proves subgroup operations run in uniform control flow, and cannot here: the
        // loops' bounds are read from a read_write buffer. A workgroup of these kernels is one
        // subgroup, and every branch it takes before a broadcast depends only on its
        // workgroup and the parameters, so the check is turned off.
        if self.lanes > 0 && cfg!(target_arch = "wasm32") {
            enable.push_str("enable subgroups;\ndiagnostic(off, subgroup_uniformity);\n");
        }
        let mut text = self.template();
        if self.name == "attention_tiled" {
            text = self.write_out_attention_loops(text);
        }
        if self.name == "attention_lanes" {
            text = self.write_out_attention_lanes(text);
        }
        if self.name == "matmul_lanes" {
            text = self.write_out_matmul(text);
        }
        if self.name == "matmul_coop" {
            text = self.write_out_matmul_coop(text);
        }
        if self.name == "attention_coop" {
            text = self.write_out_attention_coop(text);
        }
        let text = text
            .replace("{{ enable }}", &enable)
            .replace("{{ elem }}", elem)
            .replace("{{ head_dim }}", &self.head_dim.to_string())
            .replace("{{ key_block }}", &self.key_block.to_string())
            .replace(
                "{{ tile_vec4s }}",
                &(self.key_block * self.head_dim / 4).to_string(),
            );
        SourceTemplate::new(self.bind_shift(self.bind_sources(text)))
    }

    fn id(&self) -> KernelId {
        KernelId::new::<Self>().info((
            self.name,
            self.f16,
            self.head_dim,
            self.sources,
            self.shifted,
            self.key_block,
            self.biased,
            (self.lanes, self.b_rows, self.conv, self.quads),
            self.coop,
            self.coop_attention,
        ))
    }

    fn lang(&self) -> &'static str {
        "wgsl"
    }
}
