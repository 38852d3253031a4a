//! The model registry: one prepared [`Plan`] per distinct model (by sha256) per device,
//! shared by every tenant that loads those bytes, with a small bounded pool of idle
//! sessions for runs that bring no session of their own.
//!
//! Besides its main plan (with its placement, one intra-op thread), a model may get a
//! plan per other form the arbiter chooses for a request: all on the CPU (for a model
//! placed on an accelerator) and with several intra-op threads. Those are prepared when
//! first asked for, once each, and shared like the main one.
//!
//! The registry is a sharded concurrent map from digest to a per-model slot. A load
//! takes a map shard only long enough to find or insert its slot, then waits on that
//! slot alone: loading model A never waits for the verification, placement, validation
//! or prepare of model B, and two tenants loading the same bytes at once prepare them
//! once (the second waits for the first and shares its plan).
//!
//! Tenants hold `Arc<PreparedModel>` handles; slots keep only `Weak` references, so the
//! last unload (or the last in-flight request, whichever ends later) frees the plan.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, Instant};

use dashmap::DashMap;
use sha2::{Digest, Sha256};
use switchyard_delegates::CpuResolver;
use switchyard_interpreter::{
    DType, MemoryPool, Model, OpResolver, Plan, PlanOptions, PrepareLimits, Session, SessionLimits,
};
use switchyard_proto::v1::DataType;
use switchyard_scheduler::serving::Variant;
use tokio::sync::Semaphore;

use crate::error::DaemonError;
use crate::placement::{ModelPlacement, Placer, Validation};
use crate::tenant::lock;

/// Input shape sets one plan keeps prepared: each resize to a new shape prepares the
/// model again for it (kernels, folded constants), shared memory that no session is
/// charged for, so it is kept small.
pub const MAX_SHAPE_SETS: usize = 8;

/// Name, type and shape of one model input or output.
#[derive(Clone, Debug)]
pub struct TensorSpec {
    pub name: String,
    pub dtype: DType,
    pub shape: Vec<usize>,
    /// The model's shape signature (-1: dynamic dimension), when it has one.
    pub signature: Option<Vec<i32>>,
}

/// A form of the model the arbiter may run a request in: placement and threads.
pub type Form = (Variant, usize);

/// The form every model is prepared in at load.
pub const MAIN_FORM: Form = (Variant::Placed, 1);

/// One form's plan: empty until its first user prepared it; others wait on the lock.
#[derive(Default)]
struct PlanSlot {
    ready: Mutex<Option<Arc<Plan>>>,
}

/// One placement of a model with the plans prepared for it. A request takes the model's
/// current one when it arrives and runs on it to the end; background validation
/// replaces it as a whole when it allows an accelerator, for later requests.
pub struct Placed {
    /// Where the scheduler placed the model's partitions; the plans use it.
    pub placement: ModelPlacement,
    /// The main form's plan.
    pub plan: Arc<Plan>,
    plans: Mutex<HashMap<Form, Arc<PlanSlot>>>,
}

impl Placed {
    /// Bytes the plans hold for every session (packed weights, folded constants).
    fn plan_bytes(&self) -> u64 {
        let others: usize = lock(&self.plans)
            .values()
            .filter_map(|s| s.ready.try_lock().ok().and_then(|p| p.clone()))
            .filter(|p| !Arc::ptr_eq(p, &self.plan))
            .map(|p| p.shared_bytes())
            .sum();
        (self.plan.shared_bytes() + others) as u64
    }
}

pub struct PreparedModel {
    pub sha256: [u8; 32],
    pub sha256_hex: String,
    pub bytes: u64,
    /// Bytes one session needs at the stored shapes (arenas, variable tensors).
    pub arena_bytes: u64,
    pub inputs: Vec<TensorSpec>,
    pub outputs: Vec<TensorSpec>,
    /// The placement and plans requests start on now (see [`Placed`]).
    placed: RwLock<Arc<Placed>>,
    /// Where validating the model's accelerators stands.
    validation: Mutex<Validation>,
    resolver: Arc<dyn OpResolver>,
    options: PlanOptions,
    /// Whether a session keeps state between runs (see [`Plan::is_stateful`]).
    pub stateful: bool,
    /// Idle sessions for runs that bring none, per form; at most `pool_size` are kept
    /// per form.
    idle: Mutex<HashMap<Form, Vec<Session>>>,
    pool_size: usize,
    placer: Arc<Placer>,
    /// One permit per run without a session of this model at once (the pool's bound);
    /// waiting here is queue wait.
    pub slots: Arc<Semaphore>,
    /// How long verifying, placing and preparing took: a tenant loading a copy someone
    /// else prepared waits as long, so sharing is not observable through timing.
    pub prepare_time: Duration,
    /// Microseconds the first loader's whole load took to answer (0 until it has):
    /// with validation in the background, preparing is a small part of a fresh load,
    /// so a shared copy answers no sooner than this either.
    pub first_answer_us: std::sync::atomic::AtomicU64,
    /// Whether background validation is still to be started (by the first loader,
    /// once its load has answered: see [`crate::placement::start_validation`]).
    validation_pending: std::sync::atomic::AtomicBool,
}

/// A pooled session lent to one run; it goes back to the pool (or is dropped) through
/// [`PreparedModel::give_back`].
pub struct Lent {
    pub session: Session,
    form: Form,
}

impl PreparedModel {
    /// Bytes the plans hold for every session (packed weights, folded constants).
    pub fn plan_bytes(&self) -> u64 {
        self.placed().plan_bytes()
    }

    /// The placement and plans a request arriving now runs on.
    pub fn placed(&self) -> Arc<Placed> {
        self.placed
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// The current main plan (what a new session starts on).
    pub fn plan(&self) -> Arc<Plan> {
        self.placed().plan.clone()
    }

    /// Where validating the model's accelerators stands.
    pub fn validation(&self) -> Validation {
        lock(&self.validation).clone()
    }

    /// True once, for the caller that is to start the background validation.
    pub(crate) fn take_validation_start(&self) -> bool {
        self.validation_pending
            .swap(false, std::sync::atomic::Ordering::AcqRel)
    }

    pub(crate) fn set_validation(&self, v: Validation) {
        *lock(&self.validation) = v;
    }

    /// A new placement for later requests (background validation decided it): the plans
    /// made for the CPU so far become the new placement's CPU-only forms, and requests
    /// already running keep the placement they started with.
    pub(crate) fn switch(&self, placement: ModelPlacement) -> Result<(), DaemonError> {
        let old = self.placed();
        let next = if placement.placed.is_empty() {
            // Still all on the CPU: the same plans, with the decision's explanations.
            Placed {
                placement,
                plan: old.plan.clone(),
                plans: Mutex::new(lock(&old.plans).clone()),
            }
        } else {
            let plan = Plan::with_placement(
                old.plan.model().clone(),
                self.resolver.clone(),
                PlanOptions {
                    threads: 1,
                    ..self.options.clone()
                },
                placement.placed.clone(),
            )
            .map_err(DaemonError::Prepare)?;
            let mut plans: HashMap<Form, Arc<PlanSlot>> = HashMap::new();
            if old.placement.placed.is_empty() {
                plans.insert(
                    (Variant::CpuOnly, 1),
                    Arc::new(PlanSlot {
                        ready: Mutex::new(Some(old.plan.clone())),
                    }),
                );
                for ((_, threads), slot) in lock(&old.plans).iter() {
                    plans.insert((Variant::CpuOnly, *threads), slot.clone());
                }
            }
            Placed {
                placement,
                plan,
                plans: Mutex::new(plans),
            }
        };
        *self
            .placed
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(next);
        Ok(())
    }

    /// The plan of `form` in `placed` (threads clamped to what the daemon allows),
    /// prepared now if nobody has asked for it before (once, however many ask at the
    /// same time).
    pub fn plan_for(&self, placed: &Placed, form: Form) -> Result<Arc<Plan>, DaemonError> {
        let form = (form.0, form.1.clamp(1, self.options.threads.max(1)));
        // A model placed on nothing has one form on the CPU.
        let form = if placed.placement.placed.is_empty() {
            (Variant::Placed, form.1)
        } else {
            form
        };
        if form == MAIN_FORM {
            return Ok(placed.plan.clone());
        }
        let slot = lock(&placed.plans).entry(form).or_default().clone();
        let mut ready = lock(&slot.ready);
        if let Some(p) = ready.as_ref() {
            return Ok(p.clone());
        }
        let partitions = match form.0 {
            Variant::Placed => placed.placement.placed.clone(),
            Variant::CpuOnly => Vec::new(),
        };
        let options = PlanOptions {
            threads: form.1,
            ..self.options.clone()
        };
        let plan = Plan::with_placement(
            placed.plan.model().clone(),
            self.resolver.clone(),
            options,
            partitions,
        )
        .map_err(DaemonError::Prepare)?;
        *ready = Some(plan.clone());
        Ok(plan)
    }

    /// Moves `session` onto the plan of `form` in `placed` (keeping its stream's state)
    /// unless it is there already.
    pub fn bind(
        &self,
        placed: &Placed,
        session: &mut Session,
        form: Form,
    ) -> Result<(), DaemonError> {
        let plan = self.plan_for(placed, form)?;
        if Arc::ptr_eq(session.plan(), &plan) {
            return Ok(());
        }
        session.rebind(plan).map_err(memory_or_prepare)
    }

    /// An idle pooled session of `form` in `placed`, or a new one (the caller holds a
    /// slot permit, which bounds how many exist), counted in `pool` while lent. A
    /// stateful model's session is reset first, so a run without a session always
    /// starts a fresh stream.
    pub fn lend(
        &self,
        placed: &Placed,
        pool: &MemoryPool,
        form: Form,
    ) -> Result<Lent, DaemonError> {
        let plan = self.plan_for(placed, form)?;
        let form = (form.0, plan.options().threads);
        let idle = lock(&self.idle).get_mut(&form).and_then(Vec::pop);
        // An idle session of an earlier placement moves onto this one's plan.
        let idle = idle.and_then(|mut s| {
            if Arc::ptr_eq(s.plan(), &plan) || s.rebind(plan.clone()).is_ok() {
                Some(s)
            } else {
                None
            }
        });
        let mut session = match idle {
            Some(s) => s,
            None => {
                let limit = pool.limit().saturating_sub(pool.used());
                plan.session(SessionLimits { max_bytes: limit })
                    .map_err(|e| in_pool(e, pool))?
            }
        };
        if self.stateful {
            session.reset();
        }
        // The tenant's pool bounds what the session may grow to during the run, and
        // refuses with the tenant's figures.
        session.set_limits(SessionLimits {
            max_bytes: pool.limit(),
        });
        session
            .set_memory_pool(Some(pool))
            .map_err(memory_or_prepare)?;
        Ok(Lent { session, form })
    }

    /// Returns a lent session to the pool. One that failed, or that grew past what a
    /// session needs at the stored shapes (a resize: that memory would stay with nobody
    /// charged for it), is dropped instead.
    pub fn give_back(&self, mut lent: Lent, ok: bool) {
        if self.stateful {
            lent.session.reset();
        }
        if lent.session.set_memory_pool(None).is_err() {
            return;
        }
        if !ok || lent.session.memory_bytes() as u64 > self.arena_bytes {
            return;
        }
        let mut idle = lock(&self.idle);
        let pool = idle.entry(lent.form).or_default();
        if pool.len() < self.pool_size {
            pool.push(lent.session);
        }
    }

    /// A new session of the caller's own, counted in `pool` (the tenant's).
    pub fn open_session(&self, pool: &MemoryPool) -> Result<Session, DaemonError> {
        let limit = pool.limit().saturating_sub(pool.used());
        let mut s = self
            .plan()
            .session(SessionLimits { max_bytes: limit })
            .map_err(|e| in_pool(e, pool))?;
        s.set_memory_pool(Some(pool)).map_err(memory_or_prepare)?;
        s.set_limits(SessionLimits {
            max_bytes: pool.limit(),
        });
        Ok(s)
    }

    /// Idle pooled sessions and the bytes they hold.
    pub fn pooled(&self) -> (usize, u64) {
        let idle = lock(&self.idle);
        (
            idle.values().map(Vec::len).sum(),
            idle.values()
                .flatten()
                .map(|s| s.memory_bytes() as u64)
                .sum(),
        )
    }

    /// Records one request's delegate failures and timings (`before` is the session's
    /// partition reports from before the request, which ran on `placed`).
    pub fn observe(
        &self,
        placed: &Placed,
        before: &[switchyard_interpreter::PartitionReport],
        s: &Session,
    ) {
        self.placer
            .observe(&placed.placement, before, s.partition_reports());
    }

    pub fn id(&self) -> String {
        self.sha256_hex[..16].to_owned()
    }
}

/// Returns the malloc heap's free pages to the system. A first load leaves megabytes
/// of freed temporaries in the heap (the client's bytes, DENSIFY outputs, dequantized
/// weights that kernels packed and the plan released, packing scratch), spread between
/// live blocks where glibc's own trimming (top of the heap only) never reaches: for
/// pose detection that was ~17 MiB of resident memory nobody used. Called after a load
/// and after an unload; it walks the heap once, well under a millisecond here.
pub fn release_free_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only takes the allocator's own locks and releases pages of
    // free chunks; it has no preconditions on the caller.
    #[allow(unsafe_code)]
    unsafe {
        nix::libc::malloc_trim(0);
    }
}

/// Keeps glibc's large-block thresholds at their start values (128 KiB) for the
/// daemon's lifetime. By default the first free of a mapped block raises them to that
/// block's size: after a model's bytes (megabytes) are freed, request tensors and
/// prepare temporaries come from the heap, and the per-thread heaps keep them resident
/// after they are freed. Measured with pose detection (one model, one session,
/// `cargo bench -p switchyard-daemon --bench memory`): 38.0 MiB of growth with the
/// dynamic thresholds, 35.6 MiB pinned; `MALLOC_ARENA_MAX=2` changed nothing. The cost
/// is one mapping per block of 128 KiB and up (a request tensor of that size), as
/// glibc does anyway until its first such free. Call before any thread starts.
pub fn pin_malloc_thresholds() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets the allocator's parameters; called at start, before
    // other threads allocate.
    #[allow(unsafe_code)]
    unsafe {
        nix::libc::mallopt(nix::libc::M_MMAP_THRESHOLD, 128 * 1024);
        nix::libc::mallopt(nix::libc::M_TRIM_THRESHOLD, 128 * 1024);
    }
}

/// A new session's memory refused under a limit of what the tenant had left, told with
/// the tenant's figures (in use, quota).
fn in_pool(e: switchyard_interpreter::RunError, pool: &MemoryPool) -> DaemonError {
    match e {
        switchyard_interpreter::RunError::Memory {
            what, requested, ..
        } => memory_or_prepare(switchyard_interpreter::RunError::Memory {
            what,
            requested,
            used: pool.used(),
            limit: pool.limit(),
        }),
        e => memory_or_prepare(e),
    }
}

/// A session that cannot get its memory is the tenant's quota speaking; anything else
/// while opening one is the model.
fn memory_or_prepare(e: switchyard_interpreter::RunError) -> DaemonError {
    match e {
        switchyard_interpreter::RunError::Memory { .. } => DaemonError::from_memory(e),
        e => DaemonError::Prepare(e),
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

/// One model's place in the registry: empty until its first loader has prepared it;
/// later loaders of the same bytes wait on this lock alone.
#[derive(Default)]
struct Slot {
    ready: Mutex<Weak<PreparedModel>>,
}

/// What the registry holds, counted once (the admin's view).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Physical {
    pub models: usize,
    pub model_bytes: u64,
    pub plan_bytes: u64,
    pub pooled_sessions: usize,
    pub pooled_bytes: u64,
}

pub struct ModelRegistry {
    pub placer: Arc<Placer>,
    resolver: Arc<dyn OpResolver>,
    options: PlanOptions,
    pool_size: usize,
    models: DashMap<[u8; 32], Arc<Slot>>,
}

impl ModelRegistry {
    pub fn new(kernel_threads: usize, pool_size: usize, placer: Arc<Placer>) -> ModelRegistry {
        ModelRegistry {
            placer,
            resolver: Arc::new(CpuResolver::optimized()),
            options: PlanOptions {
                threads: kernel_threads.max(1),
                // Plans serve requests only; nobody reads their folded values after.
                release_consumed: true,
                prepare: PrepareLimits {
                    max_shape_sets: MAX_SHAPE_SETS,
                    ..PrepareLimits::default()
                },
                ..PlanOptions::default()
            },
            pool_size: pool_size.max(1),
            models: DashMap::new(),
        }
    }

    /// Most work one node of any plan may do ([`PrepareLimits::max_node_work`]).
    pub fn with_node_max_work(mut self, work: f64) -> ModelRegistry {
        self.options.prepare.max_node_work = work;
        self
    }

    pub fn digest(bytes: &[u8]) -> [u8; 32] {
        Sha256::digest(bytes).into()
    }

    /// Returns the shared prepared model for `bytes`, preparing it (verify, place,
    /// plan) if no tenant holds it. Blocking: call from the blocking pool. The flag
    /// tells whether an existing copy was reused. With `validate_in_background` the
    /// model is prepared for the CPU only; its accelerators are validated once the
    /// caller starts it (see [`crate::placement::start_validation`]).
    pub fn load(&self, bytes: &[u8]) -> Result<(Arc<PreparedModel>, bool), DaemonError> {
        self.load_digest(Self::digest(bytes), bytes)
    }

    /// [`ModelRegistry::load`] with the digest already computed.
    pub fn load_digest(
        &self,
        digest: [u8; 32],
        bytes: &[u8],
    ) -> Result<(Arc<PreparedModel>, bool), DaemonError> {
        self.sweep();
        // The shard lock is held only to find or insert the slot.
        let slot = self.models.entry(digest).or_default().clone();
        // Only loaders of these same bytes wait here.
        let mut ready = lock(&slot.ready);
        if let Some(m) = ready.upgrade() {
            return Ok((m, true));
        }
        let prepared = self.prepare(digest, bytes)?;
        *ready = Arc::downgrade(&prepared);
        Ok((prepared, false))
    }

    /// Verify, place (validating unknown partitions), plan: the expensive part of a
    /// first load, run with no lock but this model's slot.
    fn prepare(&self, digest: [u8; 32], bytes: &[u8]) -> Result<Arc<PreparedModel>, DaemonError> {
        let started = Instant::now();
        let sha256_hex = sha256_hex(&digest);
        let _span = tracing::info_span!("prepare", model = &sha256_hex[..16]).entered();
        let model = Arc::new(Model::from_bytes(bytes)?);
        let background = self.placer.validates_in_background();
        let (placement, validation) = if background {
            (self.placer.cpu_placement(&sha256_hex), Validation::Running)
        } else {
            let p = self.placer.place(model.clone(), &sha256_hex)?;
            let v = self.placer.finished(&p);
            (p, v)
        };
        // One thread: requests run side by side on the cores unless the arbiter finds
        // them idle; a plan with more threads is made when first asked for.
        let plan = Plan::with_placement(
            model.clone(),
            self.resolver.clone(),
            PlanOptions {
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
            sha256_hex,
            bytes: bytes.len() as u64,
            arena_bytes: plan.session_bytes_estimate() as u64,
            stateful: plan.is_stateful(),
            inputs,
            outputs,
            placed: RwLock::new(Arc::new(Placed {
                placement,
                plan,
                plans: Mutex::new(HashMap::new()),
            })),
            validation: Mutex::new(validation),
            resolver: self.resolver.clone(),
            options: self.options.clone(),
            idle: Mutex::new(HashMap::new()),
            pool_size: self.pool_size,
            placer: self.placer.clone(),
            slots: Arc::new(Semaphore::new(self.pool_size)),
            prepare_time: started.elapsed(),
            first_answer_us: std::sync::atomic::AtomicU64::new(0),
            validation_pending: std::sync::atomic::AtomicBool::new(background),
        });
        tracing::info!(
            stateful = prepared.stateful,
            plan_bytes = prepared.plan_bytes(),
            session_bytes = prepared.arena_bytes,
            ms = prepared.prepare_time.as_millis() as u64,
            "prepared"
        );
        Ok(prepared)
    }

    /// Forgets slots whose model nobody holds and nobody is loading. A slot is only
    /// removed while the map is its sole owner (checked under the shard's write lock,
    /// where nobody can take a new reference), so a loader never prepares into a slot
    /// that is no longer in the map.
    fn sweep(&self) {
        self.models.retain(|_, slot| {
            Arc::strong_count(slot) > 1
                || slot.ready.try_lock().map_or(true, |w| w.strong_count() > 0)
        });
    }

    /// Prepared models still held by some tenant or request.
    pub fn live(&self) -> usize {
        self.alive().len()
    }

    fn alive(&self) -> Vec<Arc<PreparedModel>> {
        self.sweep();
        let slots: Vec<Arc<Slot>> = self.models.iter().map(|e| e.value().clone()).collect();
        slots
            .iter()
            .filter_map(|s| s.ready.try_lock().ok().and_then(|w| w.upgrade()))
            .collect()
    }

    /// Physical figures, each prepared model counted once.
    pub fn physical(&self) -> Physical {
        let mut p = Physical::default();
        for m in self.alive() {
            p.models += 1;
            p.model_bytes += m.bytes;
            p.plan_bytes += m.plan_bytes();
            let (n, b) = m.pooled();
            p.pooled_sessions += n;
            p.pooled_bytes += b;
        }
        p
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    use switchyard_interpreter::builder::ModelBuilder;
    use switchyard_interpreter::example_models::add_constant;
    use switchyard_interpreter::{Activation, Budget, BuiltinOp, OpKind, OpOptions, Tensor};

    pub(crate) fn cpu_only() -> Arc<Placer> {
        let mut cfg = switchyard_config::Config::default();
        cfg.scheduler.allowlist_path = String::new();
        Arc::new(Placer::in_memory(&cfg, Vec::new()))
    }

    /// `y = x + 1` over [1, 4] with a broadcast constant, so any [1, n] resize is valid.
    fn resizable_model() -> Vec<u8> {
        let mut mb = ModelBuilder::new();
        let sg = mb.main();
        let x = sg.tensor("x", DType::F32, &[1, 4]);
        let k = sg.constant_f32("one", &[1], &[1.0]);
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
        let bytes = add_constant(1.0);
        let (a, shared_a) = reg.load(&bytes).unwrap();
        let (b, shared_b) = reg.load(&bytes).unwrap();
        assert!(!shared_a);
        assert!(shared_b);
        assert!(Arc::ptr_eq(&a, &b));
        assert!(Arc::ptr_eq(&a.plan(), &b.plan()));
        assert_eq!(reg.live(), 1);
        let other = reg.load(&add_constant(2.0)).unwrap().0;
        assert_eq!(reg.live(), 2);
        drop(a);
        assert_eq!(reg.live(), 2);
        drop(b);
        assert_eq!(reg.live(), 1);
        drop(other);
        assert_eq!(reg.live(), 0);
        assert!(reg.models.is_empty(), "dead slots are swept");
    }

    #[test]
    fn concurrent_loads_of_the_same_bytes_prepare_once() {
        let reg = Arc::new(ModelRegistry::new(1, 2, cpu_only()));
        let bytes = Arc::new(add_constant(7.0));
        let results: Vec<(Arc<PreparedModel>, bool)> = (0..8)
            .map(|_| {
                let (reg, bytes) = (reg.clone(), bytes.clone());
                std::thread::spawn(move || reg.load(&bytes).unwrap())
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|t| t.join().unwrap())
            .collect();
        assert_eq!(results.iter().filter(|(_, shared)| !shared).count(), 1);
        assert!(results.iter().all(|(m, _)| Arc::ptr_eq(m, &results[0].0)));
    }

    #[test]
    fn malformed_bytes_are_a_model_error() {
        let reg = ModelRegistry::new(1, 1, cpu_only());
        let mut bytes = add_constant(1.0);
        bytes.truncate(bytes.len() / 3);
        assert!(matches!(reg.load(&bytes), Err(DaemonError::Model(_))));
        assert!(matches!(
            reg.load(b"not a model"),
            Err(DaemonError::Model(_))
        ));
        assert_eq!(reg.live(), 0);
    }

    #[test]
    fn pooled_sessions_come_back_bounded_and_count_in_the_tenant_pool_while_lent() {
        let reg = ModelRegistry::new(1, 2, cpu_only());
        let (m, _) = reg.load(&resizable_model()).unwrap();
        assert!(!m.stateful);
        let pool = MemoryPool::new(1 << 20);
        let a = m.lend(&m.placed(), &pool, MAIN_FORM).unwrap();
        let b = m.lend(&m.placed(), &pool, MAIN_FORM).unwrap();
        let c = m.lend(&m.placed(), &pool, MAIN_FORM).unwrap();
        assert_eq!(pool.used() as u64, 3 * m.arena_bytes);
        m.give_back(a, true);
        m.give_back(b, true);
        m.give_back(c, true);
        assert_eq!(pool.used(), 0);
        assert_eq!(m.pooled().0, 2, "at most pool_size idle sessions");
        assert_eq!(m.inputs.len(), 1);
        assert_eq!(m.inputs[0].dtype, DType::F32);
        // A pooled session grown by a resize is not kept.
        let mut grown = m.lend(&m.placed(), &pool, MAIN_FORM).unwrap();
        grown.session.resize_input(0, &[1, 64]).unwrap();
        let x = Tensor::from_f32(vec![1, 64], &[1.0; 64]).unwrap();
        grown
            .session
            .run(&[x.view()], &mut Budget::nodes(100))
            .unwrap();
        assert!(grown.session.memory_bytes() as u64 > m.arena_bytes);
        m.give_back(grown, true);
        assert_eq!(m.pooled().0, 1);
        assert_eq!(pool.used(), 0);
        // Another form (more threads) gets its own plan, prepared once, and its own pool.
        let reg2 = ModelRegistry::new(2, 2, cpu_only());
        let (m2, _) = reg2.load(&resizable_model()).unwrap();
        let placed = m2.placed();
        let two = m2.plan_for(&placed, (Variant::Placed, 2)).unwrap();
        assert!(!Arc::ptr_eq(&two, &m2.plan()));
        assert!(Arc::ptr_eq(
            &two,
            &m2.plan_for(&placed, (Variant::Placed, 7)).unwrap()
        ));
        let mut s = m2.open_session(&pool).unwrap();
        m2.bind(&placed, &mut s, (Variant::Placed, 2)).unwrap();
        assert!(Arc::ptr_eq(s.plan(), &two));
        let lent = m2.lend(&placed, &pool, (Variant::Placed, 2)).unwrap();
        m2.give_back(lent, true);
        assert_eq!(m2.pooled().0, 1);
    }

    #[test]
    fn a_session_past_the_tenant_pool_is_refused_with_the_figures() {
        let reg = ModelRegistry::new(1, 2, cpu_only());
        let (m, _) = reg.load(&add_constant(1.0)).unwrap();
        let pool = MemoryPool::new(m.arena_bytes as usize);
        let s = m.open_session(&pool).unwrap();
        let e = m.open_session(&pool).err().expect("the pool is full");
        assert!(matches!(e, DaemonError::Quota { .. }), "{e}");
        drop(s);
        assert_eq!(pool.used(), 0);
        m.open_session(&pool).unwrap();
    }
}
