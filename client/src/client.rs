//! The async client.

use std::path::{Path, PathBuf};

use hyper_util::rt::TokioIo;
use switchyard_proto::v1::{self, switchyard_client::SwitchyardClient, tensor::Data};
use tonic::Request;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint, Uri};

use crate::model::{Model, ModelMeta};
use crate::pool::ShmPool;
use crate::shm::ShmRegion;
use crate::{ClientError, DType, Element};

/// Largest message sent or accepted; the daemon enforces its own limit too.
const MAX_MESSAGE: usize = 256 << 20;
/// Models above this size are sent as a stream of chunks of this size.
const CHUNK: usize = 1 << 20;

/// An owned tensor as the API carries it: little-endian row-major element bytes.
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    pub dtype: DType,
    pub shape: Vec<u64>,
    pub data: Vec<u8>,
}

impl Tensor {
    pub fn new(dtype: DType, shape: Vec<u64>, data: Vec<u8>) -> Result<Tensor, ClientError> {
        let need = dtype
            .byte_len(&shape)
            .ok_or_else(|| ClientError::Invalid(format!("shape {shape:?} overflows")))?;
        if need != data.len() {
            return Err(ClientError::Invalid(format!(
                "{} {shape:?} needs {need} bytes, got {}",
                dtype.short_name(),
                data.len()
            )));
        }
        Ok(Tensor { dtype, shape, data })
    }

    /// A tensor of `shape` holding `values` (row-major); their count must match.
    pub fn from_slice<T: Element>(shape: &[u64], values: &[T]) -> Result<Tensor, ClientError> {
        let mut data = Vec::with_capacity(values.len() * T::DTYPE.size());
        for &v in values {
            v.put(&mut data);
        }
        Tensor::new(T::DTYPE, shape.to_vec(), data)
    }

    /// The elements, when `T` is this tensor's element type.
    pub fn to_vec<T: Element>(&self) -> Result<Vec<T>, ClientError> {
        if T::DTYPE != self.dtype {
            return Err(ClientError::Invalid(format!(
                "the tensor is {}, not {}",
                self.dtype,
                T::DTYPE
            )));
        }
        Ok(self
            .data
            .chunks_exact(self.dtype.size())
            .map(T::get)
            .collect())
    }

    pub fn from_f32(shape: Vec<u64>, values: &[f32]) -> Tensor {
        let data = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        Tensor {
            dtype: DType::Float32,
            shape,
            data,
        }
    }

    /// The elements as f32, if this is a float32 tensor.
    pub fn to_f32(&self) -> Option<Vec<f32>> {
        self.to_vec().ok()
    }

    fn to_wire(&self) -> v1::Tensor {
        v1::Tensor {
            dtype: self.dtype.to_wire() as i32,
            shape: self.shape.clone(),
            data: Some(Data::Inline(self.data.clone())),
        }
    }
}

/// How the daemon's arbiter treats one request.
#[derive(Clone, Copy, Debug, Default)]
pub struct RunOptions {
    pub priority: crate::Priority,
    /// Relative deadline in milliseconds; 0 means none.
    pub deadline_ms: u64,
}

/// Outputs of one run, with the daemon's timings.
#[derive(Clone, Debug)]
pub struct RunOutput {
    /// Inline outputs (for shm runs, read them from the region with [`ShmRegion::read`]).
    pub outputs: Vec<Tensor>,
    /// Where each output landed for shm runs.
    pub shm: Vec<Option<v1::ShmRef>>,
    pub timing: v1::Timing,
    pub request_id: u64,
}

fn from_wire(t: v1::Tensor) -> Result<(Tensor, Option<v1::ShmRef>), ClientError> {
    let dtype = DType::try_from(t.dtype)?;
    match t.data {
        Some(Data::Inline(data)) => Ok((
            Tensor {
                dtype,
                shape: t.shape,
                data,
            },
            None,
        )),
        Some(Data::Shm(r)) => Ok((
            Tensor {
                dtype,
                shape: t.shape,
                data: Vec::new(),
            },
            Some(r),
        )),
        None => Err(ClientError::Invalid(
            "daemon sent a tensor without data".into(),
        )),
    }
}

#[derive(Clone)]
enum Target {
    Unix(PathBuf),
    Tcp,
}

/// Adds `authorization: Bearer <token>` to every request (TCP); a no-op on the Unix
/// socket, where the daemon identifies the caller by its uid.
#[derive(Clone, Debug, Default)]
pub struct BearerAuth {
    header: Option<MetadataValue<Ascii>>,
}

impl BearerAuth {
    pub fn new(token: &str) -> Result<BearerAuth, ClientError> {
        let header = format!("Bearer {token}")
            .parse()
            .map_err(|_| ClientError::Invalid("the token is not a valid header value".into()))?;
        Ok(BearerAuth {
            header: Some(header),
        })
    }
}

impl Interceptor for BearerAuth {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, tonic::Status> {
        if let Some(h) = &self.header {
            req.metadata_mut().insert("authorization", h.clone());
        }
        Ok(req)
    }
}

pub(crate) type Rpc = SwitchyardClient<InterceptedService<Channel, BearerAuth>>;

/// A connection to the daemon. Cheap to clone (one HTTP/2 channel underneath).
#[derive(Clone)]
pub struct Client {
    pub(crate) rpc: Rpc,
    target: Target,
}

impl Client {
    /// Connects over the daemon's Unix socket; the daemon identifies this process by
    /// its uid.
    pub async fn connect_unix(path: impl AsRef<Path>) -> Result<Client, ClientError> {
        let path = path.as_ref().to_path_buf();
        let p = path.clone();
        // The URI is required by the API but unused: the connector dials the socket.
        let channel = Endpoint::from_static("http://switchyard.local")
            .connect_with_connector(tower::service_fn(move |_: Uri| {
                let p = p.clone();
                async move {
                    Ok::<_, std::io::Error>(TokioIo::new(tokio::net::UnixStream::connect(p).await?))
                }
            }))
            .await
            .map_err(|e| ClientError::Connect {
                target: path.display().to_string(),
                why: connect_reason(&e),
            })?;
        Ok(Client {
            rpc: client(channel, BearerAuth::default()),
            target: Target::Unix(path),
        })
    }

    /// Connects over TCP (`host:port`) with a bearer token configured in the daemon.
    pub async fn connect_tcp(addr: &str, token: &str) -> Result<Client, ClientError> {
        let auth = BearerAuth::new(token)?;
        let uri = format!("http://{addr}");
        let endpoint = Endpoint::from_shared(uri).map_err(|e| ClientError::Connect {
            target: addr.to_owned(),
            why: e.to_string(),
        })?;
        let channel = endpoint.connect().await.map_err(|e| ClientError::Connect {
            target: addr.to_owned(),
            why: connect_reason(&e),
        })?;
        Ok(Client {
            rpc: client(channel, auth),
            target: Target::Tcp,
        })
    }

    fn request<T>(&self, msg: T) -> Result<Request<T>, ClientError> {
        Ok(Request::new(msg))
    }

    /// Loads a `.tflite` file, named after the file, and returns its handle.
    pub async fn load(&self, path: impl AsRef<Path>) -> Result<Model, ClientError> {
        #[allow(deprecated)]
        let info = self.clone().load_model_file(path).await?;
        self.model(info)
    }

    /// Loads a model from bytes (streamed in chunks when large). Bytes another app
    /// already loaded reuse the daemon's prepared copy.
    pub async fn load_bytes(&self, name: &str, bytes: Vec<u8>) -> Result<Model, ClientError> {
        #[allow(deprecated)]
        let info = self.clone().load_model(name, bytes).await?;
        self.model(info)
    }

    /// This tenant's loaded models as handles.
    pub async fn models(&self) -> Result<Vec<Model>, ClientError> {
        self.clone()
            .list_models()
            .await?
            .into_iter()
            .map(|m| self.model(m))
            .collect()
    }

    fn model(&self, info: v1::ModelInfo) -> Result<Model, ClientError> {
        Ok(Model {
            client: self.clone(),
            meta: ModelMeta::from_wire(info)?,
        })
    }

    /// A shared-memory pool of `size` bytes registered with the daemon, handing out
    /// slices for inputs and outputs. Only on the Unix socket.
    pub fn shm_pool(&self, size: usize) -> Result<ShmPool, ClientError> {
        self.create_region(size).map(ShmPool::new)
    }

    /// Loads a model from bytes (streamed in chunks when large). Loading bytes another
    /// app already loaded reuses the daemon's prepared copy.
    #[deprecated(note = "use `Client::load_bytes`, which returns a `Model` handle")]
    pub async fn load_model(
        &mut self,
        name: &str,
        bytes: Vec<u8>,
    ) -> Result<v1::ModelInfo, ClientError> {
        let resp = if bytes.len() <= CHUNK {
            let req = self.request(v1::LoadModelRequest {
                name: name.to_owned(),
                model: bytes,
            })?;
            self.rpc.load_model(req).await?
        } else {
            let name = name.to_owned();
            let chunks: Vec<v1::LoadModelChunk> = bytes
                .chunks(CHUNK)
                .enumerate()
                .map(|(i, c)| v1::LoadModelChunk {
                    name: if i == 0 { name.clone() } else { String::new() },
                    data: c.to_vec(),
                })
                .collect();
            let req = self.request(tokio_stream::iter(chunks))?;
            self.rpc.load_model_stream(req).await?
        };
        resp.into_inner()
            .model
            .ok_or_else(|| ClientError::Invalid("daemon sent no model info".into()))
    }

    /// Reads a .tflite file and loads it, named after the file.
    #[deprecated(note = "use `Client::load`, which returns a `Model` handle")]
    #[allow(deprecated)]
    pub async fn load_model_file(
        &mut self,
        path: impl AsRef<Path>,
    ) -> Result<v1::ModelInfo, ClientError> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|source| ClientError::Io {
            what: format!("reading {}", path.display()),
            source,
        })?;
        let name = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        self.load_model(&name, bytes).await
    }

    pub async fn unload(&mut self, id: &str) -> Result<(), ClientError> {
        let req = self.request(v1::UnloadModelRequest { id: id.to_owned() })?;
        self.rpc.unload_model(req).await?;
        Ok(())
    }

    pub async fn list_models(&mut self) -> Result<Vec<v1::ModelInfo>, ClientError> {
        let req = self.request(v1::ListModelsRequest {})?;
        Ok(self.rpc.list_models(req).await?.into_inner().models)
    }

    /// Runs a model with inline inputs; outputs come back inline.
    #[deprecated(note = "use `Model::run` with a `Run`")]
    pub async fn run(
        &mut self,
        model_id: &str,
        inputs: &[Tensor],
    ) -> Result<RunOutput, ClientError> {
        let wire = inputs.iter().map(Tensor::to_wire).collect();
        self.run_wire(model_id, wire, Vec::new(), RunOptions::default())
            .await
    }

    /// Runs a model with a priority class and a deadline for the daemon's arbiter.
    #[deprecated(note = "use `Model::run` with a `Run`")]
    pub async fn run_with(
        &mut self,
        model_id: &str,
        inputs: &[Tensor],
        options: RunOptions,
    ) -> Result<RunOutput, ClientError> {
        let wire = inputs.iter().map(Tensor::to_wire).collect();
        self.run_wire(model_id, wire, Vec::new(), options).await
    }

    /// Opens a session on one of this tenant's models: the state of one stream, which
    /// no other session or tenant ever sees. It is closed by [`Client::close_session`],
    /// by unloading the model, or when this process exits.
    pub async fn open_session(&mut self, model_id: &str) -> Result<v1::SessionInfo, ClientError> {
        let req = self.request(v1::OpenSessionRequest {
            model_id: model_id.to_owned(),
        })?;
        self.rpc
            .open_session(req)
            .await?
            .into_inner()
            .session
            .ok_or_else(|| ClientError::Invalid("daemon sent no session".into()))
    }

    /// Starts the session's stream afresh.
    pub async fn reset_session(&mut self, session_id: u64) -> Result<(), ClientError> {
        let req = self.request(v1::ResetSessionRequest { session_id })?;
        self.rpc.reset_session(req).await?;
        Ok(())
    }

    pub async fn close_session(&mut self, session_id: u64) -> Result<(), ClientError> {
        let req = self.request(v1::CloseSessionRequest { session_id })?;
        self.rpc.close_session(req).await?;
        Ok(())
    }

    /// This tenant's open sessions.
    pub async fn list_sessions(&mut self) -> Result<Vec<v1::SessionInfo>, ClientError> {
        let req = self.request(v1::ListSessionsRequest {})?;
        Ok(self.rpc.list_sessions(req).await?.into_inner().sessions)
    }

    /// Runs a model with inputs already written to shared memory (see
    /// [`ShmRegion::write_tensor`]); outputs are written to `outputs` when given (one per
    /// model output), else returned inline.
    #[deprecated(note = "use `Model::run` with `Run::input_shm` / `Run::output_shm`")]
    pub async fn run_shm(
        &mut self,
        model_id: &str,
        inputs: &[(DType, Vec<u64>, v1::ShmRef)],
        outputs: &[v1::ShmRef],
    ) -> Result<RunOutput, ClientError> {
        self.run_shm_with(model_id, inputs, outputs, RunOptions::default())
            .await
    }

    /// [`Client::run_shm`] with a priority class and a deadline for the daemon's
    /// arbiter (a camera app: frames in shared memory, each due within its period).
    pub async fn run_shm_with(
        &mut self,
        model_id: &str,
        inputs: &[(DType, Vec<u64>, v1::ShmRef)],
        outputs: &[v1::ShmRef],
        options: RunOptions,
    ) -> Result<RunOutput, ClientError> {
        let wire = inputs
            .iter()
            .map(|(dtype, shape, r)| v1::Tensor {
                dtype: dtype.to_wire() as i32,
                shape: shape.clone(),
                data: Some(Data::Shm(*r)),
            })
            .collect();
        self.run_wire(model_id, wire, outputs.to_vec(), options)
            .await
    }

    async fn run_wire(
        &mut self,
        model_id: &str,
        inputs: Vec<v1::Tensor>,
        output_shm: Vec<v1::ShmRef>,
        options: RunOptions,
    ) -> Result<RunOutput, ClientError> {
        let req = self.request(v1::RunRequest {
            model_id: model_id.to_owned(),
            inputs,
            output_shm,
            priority: options.priority.to_wire() as i32,
            deadline_ms: options.deadline_ms,
            allow_resize: false,
            client_request_id: String::new(),
            session_id: 0,
        })?;
        let resp = self.rpc.run(req).await?.into_inner();
        let mut outputs = Vec::with_capacity(resp.outputs.len());
        let mut shm = Vec::with_capacity(resp.outputs.len());
        for t in resp.outputs {
            let (t, r) = from_wire(t)?;
            outputs.push(t);
            shm.push(r);
        }
        Ok(RunOutput {
            outputs,
            shm,
            timing: resp.timing.unwrap_or_default(),
            request_id: resp.request_id,
        })
    }

    /// Creates a sealed memfd of `size` bytes and registers it with the daemon over the
    /// side socket. Only on the Unix socket: fds cannot cross TCP.
    pub fn create_region(&self, size: usize) -> Result<ShmRegion, ClientError> {
        match &self.target {
            Target::Unix(path) => ShmRegion::create(path, size),
            Target::Tcp => Err(ClientError::Shm(
                "shared memory needs the Unix socket; this client is on TCP".into(),
            )),
        }
    }

    pub async fn release_region(&mut self, id: u64) -> Result<(), ClientError> {
        let req = self.request(v1::ReleaseRegionRequest { id })?;
        self.rpc.release_region(req).await?;
        Ok(())
    }

    pub async fn list_regions(&mut self) -> Result<Vec<v1::RegionInfo>, ClientError> {
        let req = self.request(v1::ListRegionsRequest {})?;
        Ok(self.rpc.list_regions(req).await?.into_inner().regions)
    }

    pub async fn tenants(&mut self) -> Result<Vec<v1::TenantInfo>, ClientError> {
        let req = self.request(v1::ListTenantsRequest {})?;
        Ok(self.rpc.list_tenants(req).await?.into_inner().tenants)
    }

    pub async fn status(&mut self) -> Result<v1::StatusResponse, ClientError> {
        let req = self.request(v1::StatusRequest {})?;
        Ok(self.rpc.status(req).await?.into_inner())
    }

    /// The daemon's placement plan (JSON) for one of this tenant's models.
    pub async fn placement(&mut self, model_id: &str) -> Result<String, ClientError> {
        let req = self.request(v1::GetPlacementRequest {
            model_id: model_id.to_owned(),
        })?;
        Ok(self.rpc.get_placement(req).await?.into_inner().plan_json)
    }

    /// The daemon's placement of one of this tenant's models with where validating its
    /// accelerators stands (`validation`: "validating", "done", "none" or "failed").
    pub async fn placement_status(
        &mut self,
        model_id: &str,
    ) -> Result<v1::GetPlacementResponse, ClientError> {
        let req = self.request(v1::GetPlacementRequest {
            model_id: model_id.to_owned(),
        })?;
        Ok(self.rpc.get_placement(req).await?.into_inner())
    }

    /// Polls [`Client::placement_status`] until the model's background validation has
    /// ended or `timeout` passed; returns the last status (still "validating" after a
    /// timeout). A first load answers before validation: this is for callers that need
    /// the final placement.
    pub async fn wait_placed(
        &mut self,
        model_id: &str,
        timeout: std::time::Duration,
    ) -> Result<v1::GetPlacementResponse, ClientError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let status = self.placement_status(model_id).await?;
            if status.validation != "validating" || tokio::time::Instant::now() >= deadline {
                return Ok(status);
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    /// The daemon's metrics in the Prometheus text format (this tenant's series; every
    /// tenant's for an admin).
    pub async fn metrics(&mut self) -> Result<String, ClientError> {
        let req = self.request(v1::GetMetricsRequest {})?;
        Ok(self.rpc.get_metrics(req).await?.into_inner().text)
    }

    /// The daemon's learned allowlist decisions.
    pub async fn allowlist(&mut self) -> Result<v1::ListAllowlistResponse, ClientError> {
        let req = self.request(v1::ListAllowlistRequest {})?;
        Ok(self.rpc.list_allowlist(req).await?.into_inner())
    }
}

fn client(channel: Channel, auth: BearerAuth) -> Rpc {
    SwitchyardClient::with_interceptor(channel, auth)
        .max_decoding_message_size(MAX_MESSAGE)
        .max_encoding_message_size(MAX_MESSAGE)
}

fn connect_reason(e: &tonic::transport::Error) -> String {
    use std::error::Error;
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(cause) = src {
        s.push_str(": ");
        s.push_str(&cause.to_string());
        src = cause.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tensor_length_must_match_dtype_and_shape() {
        assert!(Tensor::new(DType::Float32, vec![2, 3], vec![0; 24]).is_ok());
        assert!(Tensor::new(DType::Float32, vec![2, 3], vec![0; 23]).is_err());
        assert!(Tensor::new(DType::Int8, vec![u64::MAX, 2], vec![]).is_err());
        let t = Tensor::from_f32(vec![2], &[1.5, -2.0]);
        assert_eq!(t.to_f32().unwrap(), vec![1.5, -2.0]);
        assert_eq!(
            Tensor::new(DType::Int32, vec![1], vec![0; 4])
                .unwrap()
                .to_f32(),
            None
        );
        let t = Tensor::from_slice(&[3], &[1i8, -2, 3]).unwrap();
        assert_eq!(t.dtype, DType::Int8);
        assert_eq!(t.to_vec::<i8>().unwrap(), vec![1, -2, 3]);
        assert!(t.to_vec::<u8>().is_err());
        assert!(Tensor::from_slice(&[2, 2], &[1.0f32]).is_err());
    }

    #[test]
    fn bearer_auth_adds_the_header_only_with_a_token() {
        let mut none = BearerAuth::default();
        let r = none.call(Request::new(())).unwrap();
        assert!(r.metadata().get("authorization").is_none());
        let mut auth = BearerAuth::new("secret-token").unwrap();
        let r = auth.call(Request::new(())).unwrap();
        assert_eq!(
            r.metadata().get("authorization").unwrap(),
            "Bearer secret-token"
        );
        assert!(BearerAuth::new("bad\ntoken").is_err());
    }
}
