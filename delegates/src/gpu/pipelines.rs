//! WGSL sources, how one shader's text is assembled, and the compute-pipeline cache.
//!
//! A shader's text is: the precision header (`alias S = f32;` or `enable f16; alias S =
//! f16;`, the type every buffer holds), the shared prelude, a reduction snippet for the
//! shaders that reduce (subgroup operations or workgroup memory, chosen by the device),
//! the op's body, and the epilogue its dispatch was given by fusion. Shapes travel in
//! each dispatch's parameter buffer, so nodes of one op with the same fused epilogue
//! share one pipeline whatever their shapes: few driver compilations, which are slow on
//! software Vulkan and the bulk of a real GPU's load time. Pipelines are keyed by their
//! full source and override constants, and go through the on-disk pipeline cache when
//! there is one.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::context::{Counters, GpuContext, GpuFailure};
use super::types::Precision;

/// One WGSL source file under `gpu/shaders/`.
#[derive(Debug)]
pub(crate) struct Shader {
    /// `<family>/<op>`, also the pipeline label.
    pub name: &'static str,
    pub source: &'static str,
    /// Needs `wg_sum` / `wg_max` and the `ReduceIds` entry-point struct.
    pub reduces: bool,
}

macro_rules! shaders {
    ($($ident:ident = $path:literal $(, reduces = $r:literal)?);* $(;)?) => {
        $(pub(crate) const $ident: Shader = Shader {
            name: $path,
            source: include_str!(concat!("shaders/", $path, ".wgsl")),
            reduces: false $(|| $r)?,
        };)*
    };
}

shaders! {
    BINARY = "elementwise/binary";
    UNARY = "elementwise/unary";
    CONV2D = "conv/conv2d";
    DEPTHWISE_TILED = "conv/depthwise_tiled";
    DEPTHWISE_DIRECT = "conv/depthwise_direct";
    TRANSPOSE_CONV = "conv/transpose_conv";
    FULLY_CONNECTED = "matmul/fully_connected", reduces = true;
    POOL2D = "pool/pool2d";
    PAD = "layout/pad";
    CONCAT = "layout/concat";
    DEPTH_TO_SPACE = "layout/depth_to_space";
    RESIZE = "resize/resize";
    REDUCE = "reduce/reduce";
    REDUCE_ROWS = "reduce/reduce_rows", reduces = true;
    SOFTMAX = "reduce/softmax", reduces = true;
}

const PRELUDE: &str = include_str!("shaders/prelude.wgsl");
const REDUCE_SUBGROUP: &str = include_str!("shaders/reduce/wg_subgroup.wgsl");
const REDUCE_SHARED: &str = include_str!("shaders/reduce/wg_shared.wgsl");

/// Threads per workgroup; the prelude's `WORKGROUP_SIZE`.
pub(crate) const WORKGROUP_SIZE: u32 = 64;

/// The WebGPU default for `maxComputeWorkgroupsPerDimension`
/// (<https://www.w3.org/TR/webgpu/#dom-supported-limits-maxcomputeworkgroupsperdimension>);
/// larger dispatches are folded into a second dimension.
pub(crate) const MAX_WORKGROUPS_PER_DIMENSION: u32 = 65_535;

/// Pipeline-overridable constants of one pipeline, by name.
pub(crate) type Constants = Vec<(&'static str, u32)>;

/// The full WGSL text of `shader` for one precision, reduction flavour and epilogue.
pub(crate) fn assemble(
    shader: &Shader,
    precision: Precision,
    subgroups: bool,
    epilogue: &str,
) -> String {
    let header = match precision {
        Precision::F32 => "alias S = f32;\n",
        Precision::F16 => "enable f16;\nalias S = f16;\n",
    };
    let reduce = match (shader.reduces, subgroups) {
        (false, _) => "",
        (true, true) => REDUCE_SUBGROUP,
        (true, false) => REDUCE_SHARED,
    };
    let mut s = String::with_capacity(
        header.len() + PRELUDE.len() + reduce.len() + shader.source.len() + epilogue.len() + 8,
    );
    s.push_str(header);
    s.push_str(PRELUDE);
    s.push('\n');
    s.push_str(reduce);
    s.push('\n');
    s.push_str(shader.source);
    s.push('\n');
    s.push_str(epilogue);
    s
}

#[derive(Clone, PartialEq, Eq, Hash)]
struct Key {
    source: Arc<str>,
    constants: Constants,
}

/// Shader modules and pipelines built so far on one device.
#[derive(Default)]
pub(crate) struct PipelineCache {
    modules: Mutex<HashMap<Arc<str>, Arc<wgpu::ShaderModule>>>,
    pipelines: Mutex<HashMap<Key, Arc<wgpu::ComputePipeline>>>,
}

impl PipelineCache {
    /// The pipeline for `source`'s `main` with `constants`, compiling it on first use.
    pub fn get(
        &self,
        ctx: &GpuContext,
        label: &str,
        source: &str,
        constants: &Constants,
    ) -> Result<Arc<wgpu::ComputePipeline>, GpuFailure> {
        let source: Arc<str> = Arc::from(source);
        let key = Key {
            source: source.clone(),
            constants: constants.clone(),
        };
        if let Some(p) = self.pipelines.lock().map_err(poisoned)?.get(&key) {
            return Ok(p.clone());
        }
        let module = self.module(ctx, label, &source)?;
        let values: Vec<(&str, f64)> = constants.iter().map(|&(k, v)| (k, f64::from(v))).collect();
        let cache = ctx.disk_cache.as_ref().map(|d| d.cache());
        let pipeline = ctx
            .checked(|| {
                ctx.device
                    .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                        label: Some(label),
                        layout: None,
                        module: &module,
                        entry_point: Some("main"),
                        compilation_options: wgpu::PipelineCompilationOptions {
                            constants: &values,
                            // Every shader writes its workgroup memory before reading it.
                            zero_initialize_workgroup_memory: false,
                        },
                        cache,
                    })
            })
            .map_err(|e| with_context(e, &format!("pipeline {label} {constants:?}")))?;
        Counters::add(&ctx.counters.pipelines_created, 1);
        if let Some(d) = &ctx.disk_cache {
            d.mark_dirty();
        }
        let pipeline = Arc::new(pipeline);
        self.pipelines
            .lock()
            .map_err(poisoned)?
            .insert(key, pipeline.clone());
        Ok(pipeline)
    }

    /// Number of distinct pipelines compiled so far.
    pub fn len(&self) -> usize {
        self.pipelines.lock().map_or(0, |p| p.len())
    }

    fn module(
        &self,
        ctx: &GpuContext,
        label: &str,
        source: &Arc<str>,
    ) -> Result<Arc<wgpu::ShaderModule>, GpuFailure> {
        if let Some(m) = self.modules.lock().map_err(poisoned)?.get(source) {
            return Ok(m.clone());
        }
        let module = ctx
            .checked(|| {
                ctx.device
                    .create_shader_module(wgpu::ShaderModuleDescriptor {
                        label: Some(label),
                        source: wgpu::ShaderSource::Wgsl(source.to_string().into()),
                    })
            })
            .map_err(|e| with_context(e, &format!("shader {label}")))?;
        Counters::add(&ctx.counters.shader_modules_created, 1);
        let module = Arc::new(module);
        self.modules
            .lock()
            .map_err(poisoned)?
            .insert(source.clone(), module.clone());
        Ok(module)
    }
}

fn with_context(e: GpuFailure, what: &str) -> GpuFailure {
    match e {
        GpuFailure::Validation(m) => GpuFailure::Validation(format!("{what}: {m}")),
        GpuFailure::Internal(m) => GpuFailure::Internal(format!("{what}: {m}")),
        other => other,
    }
}

fn poisoned<T>(_: std::sync::PoisonError<T>) -> GpuFailure {
    GpuFailure::Internal("pipeline cache lock poisoned".into())
}
