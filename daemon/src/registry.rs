//! The model registry: one prepared copy per distinct model (by sha256), shared by every
//! tenant that loads those bytes, with a small pool of interpreters per model and per
//! form the arbiter may choose: with its placement or (for a model placed on an
//! accelerator) all on the CPU, and with one or several intra-op threads.
//!
//! Tenants hold `Arc<PreparedModel>` handles; the registry keeps only `Weak` references,
//! so the last unload (or the last in-flight request, whichever ends later) frees it.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex, Weak};

use sha2::{Digest, Sha256};
use switchyard_delegates::CpuResolver;
use switchyard_interpreter::{DType, Interpreter, InterpreterOptions, Model, OpResolver};
use switchyard_proto::v1::DataType;
use tokio::sync::Semaphore;

use switchyard_scheduler::serving::Variant;

use crate::error::DaemonError;
use crate::placement::{ModelPlacement, Placer};
use crate::tenant::lock;

/// Name, type and shape of one model input or output.
#[derive(Clone, Debug)]
pub struct TensorSpec {
    pub name: String,
    pub dtype: DType,
    pub shape: Vec<usize>,
    /// The model's shape signature (-1: dynamic dimension), when it has one.
    pub signature: Option<Vec<i32>>,
}

pub struct PreparedModel {
    pub sha256: [u8; 32],
    pub sha256_hex: String,
    pub bytes: u64,
    /// Planned arena bytes of one interpreter.
    pub arena_bytes: u64,
    pub inputs: Vec<TensorSpec>,
    pub outputs: Vec<TensorSpec>,
    model: Arc<Model>,
    resolver: Arc<dyn OpResolver>,
    options: InterpreterOptions,
    /// Idle interpreters per (form, intra-op threads).
    idle: Mutex<HashMap<(Variant, usize), Vec<Interpreter>>>,
    /// Idle interpreters kept per form; more are dropped when given back.
    keep_idle: usize,
    /// Where the scheduler placed the model's partitions; interpreters of the placed
    /// form use it.
    pub placement: ModelPlacement,
    placer: Arc<Placer>,
    /// One permit per request of this model running or waiting in the arbiter at once.
    pub slots: Arc<Semaphore>,
    /// How long verifying, placing and preparing took: a tenant loading a copy someone
    /// else prepared waits as long, so sharing is not observable through timing.
    pub prepare_time: std::time::Duration,
}

impl PreparedModel {
    /// An idle interpreter of `variant` with `threads` intra-op threads, or a new one
    /// (the caller holds a slot permit, which bounds how many run at once).
    pub fn take_interpreter(
        &self,
        variant: Variant,
        threads: usize,
    ) -> Result<Interpreter, DaemonError> {
        let threads = threads.clamp(1, self.options.threads.max(1));
        if let Some(it) = lock(&self.idle)
            .get_mut(&(variant, threads))
            .and_then(Vec::pop)
        {
            return Ok(it);
        }
        let options = InterpreterOptions {
            threads,
            ..self.options.clone()
        };
        let placed = match variant {
            Variant::Placed => self.placement.placed.clone(),
            Variant::CpuOnly => Vec::new(),
        };
        Interpreter::with_placement(self.model.clone(), self.resolver.clone(), options, placed)
            .map_err(DaemonError::Prepare)
    }

    /// Records one request's delegate failures and timings (`before` is the
    /// interpreter's partition reports from before the request).
    pub fn observe(&self, before: &[switchyard_interpreter::PartitionReport], it: &Interpreter) {
        self.placer
            .observe(&self.placement, before, it.partition_reports());
    }

    /// Returns an interpreter after a successful run. One that failed is dropped instead,
    /// as a failed invoke may leave it half-resized.
    pub fn give_back(&self, variant: Variant, threads: usize, it: Interpreter) {
        let threads = threads.clamp(1, self.options.threads.max(1));
        let mut idle = lock(&self.idle);
        let pool = idle.entry((variant, threads)).or_default();
        if pool.len() < self.keep_idle {
            pool.push(it);
        }
    }

    pub fn id(&self) -> String {
        self.sha256_hex[..16].to_owned()
    }
}

pub fn sha256_hex(digest: &[u8; 32]) -> String {
    let mut s = String::with_capacity(64);
    for b in digest {
        let _ = write!(s, "{b:02x}");
    }
    s
}

pub fn dtype_to_wire(d: DType) -> Option<DataType> {
    Some(match d {
        DType::F32 => DataType::Float32,
        DType::F16 => DataType::Float16,
        DType::I32 => DataType::Int32,
        DType::U8 => DataType::Uint8,
        DType::I64 => DataType::Int64,
        DType::Bool => DataType::Bool,
        DType::I16 => DataType::Int16,
        DType::I8 => DataType::Int8,
        DType::F64 => DataType::Float64,
        DType::U64 => DataType::Uint64,
        DType::U32 => DataType::Uint32,
        DType::U16 => DataType::Uint16,
        DType::Str | DType::Resource | DType::Variant => return None,
    })
}

pub fn dtype_from_wire(d: DataType) -> Option<DType> {
    Some(match d {
        DataType::Unspecified => return None,
        DataType::Float32 => DType::F32,
        DataType::Float16 => DType::F16,
        DataType::Int32 => DType::I32,
        DataType::Uint8 => DType::U8,
        DataType::Int64 => DType::I64,
        DataType::Bool => DType::Bool,
        DataType::Int16 => DType::I16,
        DataType::Int8 => DType::I8,
        DataType::Float64 => DType::F64,
        DataType::Uint64 => DType::U64,
        DataType::Uint32 => DType::U32,
        DataType::Uint16 => DType::U16,
    })
}

pub struct ModelRegistry {
    pub placer: Arc<Placer>,
    resolver: Arc<dyn OpResolver>,
    options: InterpreterOptions,
    interpreters_per_model: usize,
    models: Mutex<HashMap<[u8; 32], Weak<PreparedModel>>>,
}

impl ModelRegistry {
    pub fn new(
        kernel_threads: usize,
        interpreters_per_model: usize,
        placer: Arc<Placer>,
    ) -> ModelRegistry {
        ModelRegistry {
            placer,
            resolver: Arc::new(CpuResolver::optimized()),
            options: InterpreterOptions {
                threads: kernel_threads.max(1),
                ..Default::default()
            },
            interpreters_per_model: interpreters_per_model.max(1),
            models: Mutex::new(HashMap::new()),
        }
    }

    pub fn digest(bytes: &[u8]) -> [u8; 32] {
        Sha256::digest(bytes).into()
    }

    /// The prepared model for these bytes if one is alive.
    pub fn lookup(&self, digest: &[u8; 32]) -> Option<Arc<PreparedModel>> {
        lock(&self.models).get(digest).and_then(Weak::upgrade)
    }

    /// Returns the shared prepared model for `bytes`, preparing it (verify, plan, one
    /// interpreter) if no tenant holds it. Blocking: call from the blocking pool. The
    /// flag tells whether an existing copy was reused.
    pub fn load(&self, bytes: &[u8]) -> Result<(Arc<PreparedModel>, bool), DaemonError> {
        self.load_digest(Self::digest(bytes), bytes)
    }

    /// [`ModelRegistry::load`] with the digest already computed.
    pub fn load_digest(
        &self,
        digest: [u8; 32],
        bytes: &[u8],
    ) -> Result<(Arc<PreparedModel>, bool), DaemonError> {
        if let Some(m) = self.lookup(&digest) {
            return Ok((m, true));
        }
        let started = std::time::Instant::now();
        let model = Arc::new(Model::from_bytes(bytes)?);
        let placement = self.placer.place(model.clone(), &sha256_hex(&digest))?;
        // One thread: requests run side by side on the cores unless the arbiter finds
        // them idle; an interpreter with more threads is made when first asked for.
        let first = Interpreter::with_placement(
            model.clone(),
            self.resolver.clone(),
            InterpreterOptions {
                threads: 1,
                ..self.options.clone()
            },
            placement.placed.clone(),
        )
        .map_err(DaemonError::Prepare)?;
        let spec = |indices: &[usize]| -> Vec<TensorSpec> {
            let sg = &model.subgraphs[0];
            indices
                .iter()
                .filter_map(|&t| sg.tensors.get(t))
                .map(|t| TensorSpec {
                    name: t.name.clone(),
                    dtype: t.dtype,
                    shape: t.shape.clone(),
                    signature: t.shape_signature.clone(),
                })
                .collect()
        };
        let inputs = spec(&model.subgraphs[0].inputs);
        let outputs = spec(&model.subgraphs[0].outputs);
        for t in inputs.iter().chain(&outputs) {
            if dtype_to_wire(t.dtype).is_none() {
                return Err(DaemonError::invalid(format!(
                    "tensor `{}` has type {}, which the API cannot carry",
                    t.name, t.dtype
                )));
            }
        }
        let prepared = Arc::new(PreparedModel {
            sha256: digest,
            sha256_hex: sha256_hex(&digest),
            bytes: bytes.len() as u64,
            arena_bytes: first.arena_bytes() as u64,
            inputs,
            outputs,
            model,
            resolver: self.resolver.clone(),
            idle: Mutex::new(HashMap::from([((Variant::Placed, 1), vec![first])])),
            options: self.options.clone(),
            keep_idle: self.interpreters_per_model,
            placement,
            placer: self.placer.clone(),
            slots: Arc::new(Semaphore::new(self.interpreters_per_model)),
            prepare_time: started.elapsed(),
        });
        let mut map = lock(&self.models);
        map.retain(|_, w| w.strong_count() > 0);
        // Another load of the same bytes may have finished while this one prepared.
        if let Some(existing) = map.get(&digest).and_then(Weak::upgrade) {
            return Ok((existing, true));
        }
        map.insert(digest, Arc::downgrade(&prepared));
        Ok((prepared, false))
    }

    /// Prepared models still held by some tenant or request.
    pub fn live(&self) -> usize {
        let mut map = lock(&self.models);
        map.retain(|_, w| w.strong_count() > 0);
        map.len()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    use switchyard_interpreter::builder::ModelBuilder;
    use switchyard_interpreter::{Activation, BuiltinOp, OpKind, OpOptions};

    pub(crate) fn cpu_only() -> Arc<Placer> {
        let mut cfg = switchyard_config::Config::default();
        cfg.scheduler.allowlist_path = String::new();
        Arc::new(Placer::in_memory(&cfg, Vec::new()))
    }

    /// A one-op model `y = x + c` over a [1, 4] float tensor; `c` makes distinct bytes.
    pub(crate) fn add_model(c: f32) -> Vec<u8> {
        let mut mb = ModelBuilder::new();
        let sg = mb.main();
        let x = sg.tensor("x", DType::F32, &[1, 4]);
        let k = sg.constant_f32("c", &[1, 4], &[c; 4]);
        let y = sg.tensor("y", DType::F32, &[1, 4]);
        sg.op(
            OpKind::Builtin(BuiltinOp::Add),
            &[Some(x), Some(k)],
            &[y],
            OpOptions::Activation(Activation::None),
        );
        sg.set_inputs(&[x]);
        sg.set_outputs(&[y]);
        mb.finish()
    }

    #[test]
    fn same_bytes_share_one_prepared_copy_until_last_handle_drops() {
        let reg = ModelRegistry::new(1, 2, cpu_only());
        let bytes = add_model(1.0);
        let (a, shared_a) = reg.load(&bytes).unwrap();
        let (b, shared_b) = reg.load(&bytes).unwrap();
        assert!(!shared_a);
        assert!(shared_b);
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(reg.live(), 1);
        let other = reg.load(&add_model(2.0)).unwrap().0;
        assert_eq!(reg.live(), 2);
        drop(a);
        assert_eq!(reg.live(), 2);
        drop(b);
        assert_eq!(reg.live(), 1);
        drop(other);
        assert_eq!(reg.live(), 0);
    }

    #[test]
    fn malformed_bytes_are_a_model_error() {
        let reg = ModelRegistry::new(1, 1, cpu_only());
        let mut bytes = add_model(1.0);
        bytes.truncate(bytes.len() / 3);
        assert!(matches!(reg.load(&bytes), Err(DaemonError::Model(_))));
        assert!(matches!(
            reg.load(b"not a model"),
            Err(DaemonError::Model(_))
        ));
        assert_eq!(reg.live(), 0);
    }

    #[test]
    fn interpreters_come_back_to_the_pool_of_their_form() {
        let reg = ModelRegistry::new(2, 2, cpu_only());
        let (m, _) = reg.load(&add_model(1.0)).unwrap();
        let it = m.take_interpreter(Variant::Placed, 2).unwrap();
        let it2 = m.take_interpreter(Variant::Placed, 2).unwrap();
        let one = m.take_interpreter(Variant::Placed, 1).unwrap();
        m.give_back(Variant::Placed, 2, it);
        m.give_back(Variant::Placed, 2, it2);
        m.give_back(Variant::Placed, 1, one);
        let idle = lock(&m.idle);
        assert_eq!(idle[&(Variant::Placed, 2)].len(), 2);
        assert_eq!(idle[&(Variant::Placed, 1)].len(), 1);
        drop(idle);
        assert_eq!(m.inputs.len(), 1);
        assert_eq!(m.inputs[0].dtype, DType::F32);
    }
}
