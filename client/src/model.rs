//! A loaded model as a handle, and one run as a value built up before it is sent.
//!
//! `Run` is plain data (no borrow of a client), so the async [`Model`], the blocking
//! one, and later sessions all take the same builder.

use std::time::Duration;

use switchyard_proto::v1::{self, ShmRef, tensor::Data};

use crate::pool::{ShmSlice, ShmTensor};
use crate::{ClientError, DType, Tensor};

/// Name, type and shape of one model input or output.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorSpec {
    pub name: String,
    pub dtype: DType,
    pub shape: Vec<u64>,
    /// -1 marks a dimension the model accepts at any size; empty when all are fixed.
    pub signature: Vec<i64>,
}

impl TensorSpec {
    pub(crate) fn from_wire(t: &v1::TensorInfo) -> Result<TensorSpec, ClientError> {
        Ok(TensorSpec {
            name: t.name.clone(),
            dtype: DType::try_from(t.dtype)?,
            shape: t.shape.clone(),
            signature: t.shape_signature.clone(),
        })
    }

    /// Bytes of one tensor of this spec.
    pub fn byte_len(&self) -> usize {
        self.dtype.byte_len(&self.shape).unwrap_or(usize::MAX)
    }
}

/// What the daemon says about a loaded model.
#[derive(Clone, Debug)]
pub struct ModelMeta {
    /// This tenant's handle on the model (the first 16 hex digits of its sha256).
    pub id: String,
    pub name: String,
    pub sha256: String,
    pub bytes: u64,
    pub arena_bytes: u64,
    pub inputs: Vec<TensorSpec>,
    pub outputs: Vec<TensorSpec>,
    /// The model keeps state between runs (a streaming model): open a [`Session`] to
    /// stream; a run without one starts from a fresh state.
    pub stateful: bool,
    /// Bytes of the daemon's prepared plan this tenant is charged for.
    pub plan_bytes: u64,
}

impl ModelMeta {
    pub(crate) fn from_wire(m: v1::ModelInfo) -> Result<ModelMeta, ClientError> {
        Ok(ModelMeta {
            inputs: m
                .inputs
                .iter()
                .map(TensorSpec::from_wire)
                .collect::<Result<_, _>>()?,
            outputs: m
                .outputs
                .iter()
                .map(TensorSpec::from_wire)
                .collect::<Result<_, _>>()?,
            id: m.id,
            name: m.name,
            sha256: m.sha256,
            bytes: m.bytes,
            arena_bytes: m.arena_bytes,
            stateful: m.stateful,
            plan_bytes: m.plan_bytes,
        })
    }
}

/// The arbiter's priority classes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Priority {
    /// Frame-rate work that misses its point when late (camera, audio).
    Realtime,
    /// The default: a user is waiting.
    #[default]
    Interactive,
    /// Runs when nothing else waits.
    Background,
}

impl Priority {
    pub(crate) fn to_wire(self) -> v1::Priority {
        match self {
            Priority::Realtime => v1::Priority::Realtime,
            Priority::Interactive => v1::Priority::Interactive,
            Priority::Background => v1::Priority::Background,
        }
    }
}

/// One run, built before it is sent: inputs (inline or in shared memory), where the
/// outputs go, priority, deadline, resize, request id.
///
/// ```no_run
/// # async fn demo(model: switchyard_client::Model) -> Result<(), switchyard_client::ClientError> {
/// use std::time::Duration;
/// use switchyard_client::{Priority, Run, Tensor};
/// let frame = Tensor::from_slice(&[1, 4], &[0.0f32; 4])?;
/// let out = model
///     .run(Run::new().input(frame).priority(Priority::Realtime).deadline(Duration::from_millis(33)))
///     .await?;
/// let scores: Vec<f32> = out.tensors[0].to_vec()?;
/// # Ok(()) }
/// ```
#[derive(Debug, Default)]
pub struct Run {
    pub(crate) inputs: Vec<v1::Tensor>,
    pub(crate) outputs: Vec<ShmRef>,
    pub(crate) priority: Priority,
    pub(crate) deadline: Option<Duration>,
    pub(crate) resize: bool,
    pub(crate) request_id: String,
    pub(crate) session: u64,
}

impl Run {
    pub fn new() -> Run {
        Run::default()
    }

    /// The next input, sent inline.
    pub fn input(mut self, t: Tensor) -> Run {
        self.inputs.push(v1::Tensor {
            dtype: t.dtype.to_wire() as i32,
            shape: t.shape,
            data: Some(Data::Inline(t.data)),
        });
        self
    }

    /// The next input, read by the daemon from shared memory.
    pub fn input_shm(mut self, t: &ShmTensor) -> Run {
        self.inputs.push(v1::Tensor {
            dtype: t.dtype.to_wire() as i32,
            shape: t.shape.clone(),
            data: Some(Data::Shm(t.slice.shm_ref())),
        });
        self
    }

    /// The next input, `dtype` and `shape` read by the daemon from the start of `slice`
    /// (whose bytes the caller wrote).
    pub fn input_slice(mut self, dtype: DType, shape: Vec<u64>, slice: &ShmSlice) -> Run {
        let mut r = slice.shm_ref();
        r.length = dtype.byte_len(&shape).map_or(r.length, |n| n as u64);
        self.inputs.push(v1::Tensor {
            dtype: dtype.to_wire() as i32,
            shape,
            data: Some(Data::Shm(r)),
        });
        self
    }

    /// The next output's destination in shared memory. Give one per model output, or
    /// none for inline outputs.
    pub fn output_shm(mut self, slice: &ShmSlice) -> Run {
        self.outputs.push(slice.shm_ref());
        self
    }

    pub fn priority(mut self, p: Priority) -> Run {
        self.priority = p;
        self
    }

    /// Refused with `DeadlineExceeded` when the daemon cannot finish within `d` of
    /// receiving the request.
    pub fn deadline(mut self, d: Duration) -> Run {
        self.deadline = Some(d);
        self
    }

    /// Lets the daemon resize the model's inputs to the shapes sent (otherwise a shape
    /// that differs from the model's is refused with `InvalidArgument`).
    pub fn resize(mut self, allow: bool) -> Run {
        self.resize = allow;
        self
    }

    /// An id of the caller's choosing, carried by the daemon's tracing spans.
    pub fn request_id(mut self, id: impl Into<String>) -> Run {
        self.request_id = id.into();
        self
    }

    pub(crate) fn into_wire(self, model_id: &str) -> v1::RunRequest {
        v1::RunRequest {
            model_id: model_id.to_owned(),
            inputs: self.inputs,
            output_shm: self.outputs,
            priority: self.priority.to_wire() as i32,
            deadline_ms: self
                .deadline
                .map(|d| (d.as_millis() as u64).max(1))
                .unwrap_or(0),
            allow_resize: self.resize,
            client_request_id: self.request_id,
            session_id: self.session,
        }
    }
}

/// Where an output's bytes are.
#[derive(Clone, Debug, PartialEq)]
pub enum OutputData {
    Inline(Vec<u8>),
    /// Written into the slice given with [`Run::output_shm`]; `length` is the actual size.
    Shm(ShmRef),
}

/// One output of a run.
#[derive(Clone, Debug, PartialEq)]
pub struct Output {
    pub dtype: DType,
    pub shape: Vec<u64>,
    pub data: OutputData,
}

impl Output {
    /// The elements of an inline output.
    pub fn to_vec<T: crate::Element>(&self) -> Result<Vec<T>, ClientError> {
        match &self.data {
            OutputData::Inline(b) => Tensor {
                dtype: self.dtype,
                shape: self.shape.clone(),
                data: b.clone(),
            }
            .to_vec(),
            OutputData::Shm(_) => Err(ClientError::Invalid(
                "this output is in shared memory: read its slice".into(),
            )),
        }
    }

    /// The output as an owned tensor (inline outputs only).
    pub fn into_tensor(self) -> Option<Tensor> {
        match self.data {
            OutputData::Inline(data) => Some(Tensor {
                dtype: self.dtype,
                shape: self.shape,
                data,
            }),
            OutputData::Shm(_) => None,
        }
    }
}

/// The daemon's timings of one run.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Timing {
    /// Waiting for an interpreter and in the arbiter's queue.
    pub queue: Duration,
    /// Setting inputs, invoking, collecting outputs.
    pub run: Duration,
}

/// The result of one run.
#[derive(Clone, Debug)]
pub struct Outputs {
    pub tensors: Vec<Output>,
    pub timing: Timing,
    /// The daemon's id of the request (in its logs and spans).
    pub request_id: u64,
}

impl Outputs {
    pub(crate) fn from_wire(r: v1::RunResponse) -> Result<Outputs, ClientError> {
        let tensors = r
            .outputs
            .into_iter()
            .map(|t| {
                let dtype = DType::try_from(t.dtype)?;
                let data = match t.data {
                    Some(Data::Inline(b)) => OutputData::Inline(b),
                    Some(Data::Shm(r)) => OutputData::Shm(r),
                    None => {
                        return Err(ClientError::Invalid(
                            "daemon sent a tensor without data".into(),
                        ));
                    }
                };
                Ok(Output {
                    dtype,
                    shape: t.shape,
                    data,
                })
            })
            .collect::<Result<_, _>>()?;
        let timing = r.timing.unwrap_or_default();
        Ok(Outputs {
            tensors,
            timing: Timing {
                queue: Duration::from_micros(timing.queue_us),
                run: Duration::from_micros(timing.run_us),
            },
            request_id: r.request_id,
        })
    }
}

/// A model loaded in the daemon for this tenant. Cheap to clone; every clone shares
/// the connection. Dropping it does not unload (other handles may still run it): call
/// [`Model::unload`].
#[derive(Clone)]
pub struct Model {
    pub(crate) client: crate::Client,
    pub(crate) meta: ModelMeta,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.meta.fmt(f)
    }
}

impl Model {
    pub fn id(&self) -> &str {
        &self.meta.id
    }

    pub fn name(&self) -> &str {
        &self.meta.name
    }

    pub fn meta(&self) -> &ModelMeta {
        &self.meta
    }

    pub fn inputs(&self) -> &[TensorSpec] {
        &self.meta.inputs
    }

    pub fn outputs(&self) -> &[TensorSpec] {
        &self.meta.outputs
    }

    /// Sends one run and waits for its outputs.
    pub async fn run(&self, run: Run) -> Result<Outputs, ClientError> {
        let mut c = self.client.clone();
        let resp = c.rpc.run(run.into_wire(&self.meta.id)).await?;
        Outputs::from_wire(resp.into_inner())
    }

    /// Opens a session on this model: the state of one stream, which no other
    /// session or tenant ever sees. The daemon closes it on [`Session::close`], when the
    /// model is unloaded, or when this process exits.
    pub async fn open_session(&self) -> Result<Session, ClientError> {
        let mut c = self.client.clone();
        let info = c
            .rpc
            .open_session(v1::OpenSessionRequest {
                model_id: self.meta.id.clone(),
            })
            .await?
            .into_inner()
            .session
            .ok_or_else(|| ClientError::Invalid("the daemon sent no session".into()))?;
        Ok(Session {
            model: self.clone(),
            id: info.id,
        })
    }

    /// Drops this tenant's handle in the daemon (and closes its sessions on it).
    pub async fn unload(self) -> Result<(), ClientError> {
        let mut c = self.client.clone();
        c.rpc
            .unload_model(v1::UnloadModelRequest {
                id: self.meta.id.clone(),
            })
            .await?;
        Ok(())
    }
}

/// A session on a model in the daemon: one stream's state (resource variables,
/// CALL_ONCE flags, variable tensors, the arena at its shapes). Runs on it continue the
/// stream, one at a time in the order sent. Cheap to clone; dropping it does not close
/// it (the daemon does when this process exits): call [`Session::close`].
#[derive(Clone, Debug)]
pub struct Session {
    model: Model,
    id: u64,
}

impl Session {
    /// The tenant's id for the session.
    pub fn id(&self) -> u64 {
        self.id
    }

    pub fn model(&self) -> &Model {
        &self.model
    }

    /// Sends one run on this session and waits for its outputs.
    pub async fn run(&self, mut run: Run) -> Result<Outputs, ClientError> {
        run.session = self.id;
        self.model.run(run).await
    }

    /// Starts the stream afresh.
    pub async fn reset(&self) -> Result<(), ClientError> {
        let mut c = self.model.client.clone();
        c.rpc
            .reset_session(v1::ResetSessionRequest {
                session_id: self.id,
            })
            .await?;
        Ok(())
    }

    /// Closes the session and frees its memory in the daemon.
    pub async fn close(self) -> Result<(), ClientError> {
        let mut c = self.model.client.clone();
        c.rpc
            .close_session(v1::CloseSessionRequest {
                session_id: self.id,
            })
            .await?;
        Ok(())
    }
}
