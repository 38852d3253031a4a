//! WGSL sources and the compute-pipeline cache.
//!
//! Every shader is compiled with the shared prelude in front. Pipelines are keyed by
//! (shader, entry point, override constants), so two nodes of the same op and fused
//! activation share one pipeline whatever their shapes: shapes travel in a parameter
//! buffer, which keeps the number of driver compilations (slow on software Vulkan) small.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::context::GpuContext;

/// One WGSL source file under `gpu/shaders/`.
#[derive(Debug)]
pub(crate) struct Shader {
    /// `<family>/<op>`, also the pipeline label.
    pub name: &'static str,
    pub source: &'static str,
}

macro_rules! shaders {
    ($($ident:ident = $path:literal),* $(,)?) => {
        $(pub(crate) const $ident: Shader = Shader {
            name: $path,
            source: include_str!(concat!("shaders/", $path, ".wgsl")),
        };)*
    };
}

shaders! {
    BINARY = "elementwise/binary",
    UNARY = "elementwise/unary",
    CONV2D = "conv/conv2d",
    DEPTHWISE_CONV2D = "conv/depthwise_conv2d",
    FULLY_CONNECTED = "matmul/fully_connected",
    POOL2D = "pool/pool2d",
    PAD = "layout/pad",
    CONCAT = "layout/concat",
    REDUCE = "reduce/reduce",
}

const PRELUDE: &str = include_str!("shaders/prelude.wgsl");

/// Threads per workgroup; must equal `WORKGROUP_SIZE` in the prelude.
pub(crate) const WORKGROUP_SIZE: u32 = 64;

/// The WebGPU default for `maxComputeWorkgroupsPerDimension`
/// (<https://www.w3.org/TR/webgpu/#dom-supported-limits-maxcomputeworkgroupsperdimension>);
/// larger dispatches are folded into a second dimension.
pub(crate) const MAX_WORKGROUPS_PER_DIMENSION: u32 = 65_535;

/// Storage bindings one of our shaders uses at most (conv: input, filter, bias, output,
/// parameters); the WebGPU default `maxStorageBuffersPerShaderStage` is 8.
pub(crate) const MAX_STORAGE_BINDINGS: u32 = 5;

/// Pipeline-overridable constants of one pipeline, by name.
pub(crate) type Constants = Vec<(&'static str, u32)>;

#[derive(Clone, PartialEq, Eq, Hash)]
struct Key {
    shader: &'static str,
    entry: &'static str,
    constants: Constants,
}

/// Shader modules and pipelines built so far on one device.
#[derive(Default)]
pub(crate) struct PipelineCache {
    modules: Mutex<HashMap<&'static str, Arc<wgpu::ShaderModule>>>,
    pipelines: Mutex<HashMap<Key, Arc<wgpu::ComputePipeline>>>,
}

impl PipelineCache {
    /// The pipeline for `shader`'s `entry` with `constants`, compiling it on first use.
    pub fn get(
        &self,
        ctx: &GpuContext,
        shader: &Shader,
        entry: &'static str,
        constants: &Constants,
    ) -> Result<Arc<wgpu::ComputePipeline>, String> {
        let key = Key {
            shader: shader.name,
            entry,
            constants: constants.clone(),
        };
        if let Some(p) = self.pipelines.lock().map_err(poisoned)?.get(&key) {
            return Ok(p.clone());
        }
        let module = self.module(ctx, shader)?;
        let values: Vec<(&str, f64)> = constants.iter().map(|&(k, v)| (k, f64::from(v))).collect();
        let pipeline = ctx
            .checked(|| {
                ctx.device
                    .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                        label: Some(shader.name),
                        layout: None,
                        module: &module,
                        entry_point: Some(entry),
                        compilation_options: wgpu::PipelineCompilationOptions {
                            constants: &values,
                            // Our shaders declare no workgroup memory.
                            zero_initialize_workgroup_memory: false,
                        },
                        cache: None,
                    })
            })
            .map_err(|e| format!("pipeline {}:{entry} {constants:?}: {e}", shader.name))?;
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

    fn module(&self, ctx: &GpuContext, shader: &Shader) -> Result<Arc<wgpu::ShaderModule>, String> {
        if let Some(m) = self.modules.lock().map_err(poisoned)?.get(shader.name) {
            return Ok(m.clone());
        }
        let source = format!("{PRELUDE}\n{}", shader.source);
        let module = ctx
            .checked(|| {
                ctx.device
                    .create_shader_module(wgpu::ShaderModuleDescriptor {
                        label: Some(shader.name),
                        source: wgpu::ShaderSource::Wgsl(source.into()),
                    })
            })
            .map_err(|e| format!("shader {}: {e}", shader.name))?;
        let module = Arc::new(module);
        self.modules
            .lock()
            .map_err(poisoned)?
            .insert(shader.name, module.clone());
        Ok(module)
    }
}

fn poisoned<T>(_: std::sync::PoisonError<T>) -> String {
    "pipeline cache lock poisoned".into()
}
