//! A blocking wrapper for apps without an async runtime: each client owns a small
//! current-thread runtime and blocks on the async calls; its models share it.

use std::path::Path;
use std::sync::Arc;

use switchyard_proto::v1;

use crate::{ClientError, DType, Outputs, Run, RunOutput, ShmPool, ShmRegion, Tensor, TensorSpec};

pub struct Client {
    rt: Arc<tokio::runtime::Runtime>,
    inner: crate::Client,
}

/// A loaded model; runs block the calling thread.
#[derive(Clone)]
pub struct Model {
    rt: Arc<tokio::runtime::Runtime>,
    inner: crate::Model,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.inner.fmt(f)
    }
}

impl Model {
    pub fn id(&self) -> &str {
        self.inner.id()
    }

    pub fn name(&self) -> &str {
        self.inner.name()
    }

    pub fn meta(&self) -> &crate::ModelMeta {
        self.inner.meta()
    }

    pub fn inputs(&self) -> &[TensorSpec] {
        self.inner.inputs()
    }

    pub fn outputs(&self) -> &[TensorSpec] {
        self.inner.outputs()
    }

    pub fn run(&self, run: Run) -> Result<Outputs, ClientError> {
        self.rt.block_on(self.inner.run(run))
    }

    pub fn unload(self) -> Result<(), ClientError> {
        self.rt.block_on(self.inner.unload())
    }

    /// The async handle underneath.
    pub fn as_async(&self) -> &crate::Model {
        &self.inner
    }

    /// See [`crate::Model::open_session`].
    pub fn open_session(&self) -> Result<Session, ClientError> {
        let inner = self.rt.block_on(self.inner.open_session())?;
        Ok(Session {
            rt: self.rt.clone(),
            inner,
        })
    }
}

/// A session on a model (see [`crate::Session`]); calls block the calling thread.
#[derive(Clone, Debug)]
pub struct Session {
    rt: Arc<tokio::runtime::Runtime>,
    inner: crate::Session,
}

impl Session {
    pub fn id(&self) -> u64 {
        self.inner.id()
    }

    pub fn run(&self, run: Run) -> Result<Outputs, ClientError> {
        self.rt.block_on(self.inner.run(run))
    }

    pub fn reset(&self) -> Result<(), ClientError> {
        self.rt.block_on(self.inner.reset())
    }

    pub fn close(self) -> Result<(), ClientError> {
        self.rt.block_on(self.inner.close())
    }
}

fn runtime() -> Result<Arc<tokio::runtime::Runtime>, ClientError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map(Arc::new)
        .map_err(|source| ClientError::Io {
            what: "starting the client runtime".into(),
            source,
        })
}

impl Client {
    pub fn connect_unix(path: impl AsRef<Path>) -> Result<Client, ClientError> {
        let rt = runtime()?;
        let inner = rt.block_on(crate::Client::connect_unix(path))?;
        Ok(Client { rt, inner })
    }

    pub fn connect_tcp(addr: &str, token: &str) -> Result<Client, ClientError> {
        let rt = runtime()?;
        let inner = rt.block_on(crate::Client::connect_tcp(addr, token))?;
        Ok(Client { rt, inner })
    }

    fn wrap(&self, inner: crate::Model) -> Model {
        Model {
            rt: self.rt.clone(),
            inner,
        }
    }

    /// Loads a `.tflite` file and returns its handle.
    pub fn load(&self, path: impl AsRef<Path>) -> Result<Model, ClientError> {
        let m = self.rt.block_on(self.inner.load(path))?;
        Ok(self.wrap(m))
    }

    pub fn load_bytes(&self, name: &str, bytes: Vec<u8>) -> Result<Model, ClientError> {
        let m = self.rt.block_on(self.inner.load_bytes(name, bytes))?;
        Ok(self.wrap(m))
    }

    pub fn models(&self) -> Result<Vec<Model>, ClientError> {
        let ms = self.rt.block_on(self.inner.models())?;
        Ok(ms.into_iter().map(|m| self.wrap(m)).collect())
    }

    pub fn shm_pool(&self, size: usize) -> Result<ShmPool, ClientError> {
        self.inner.shm_pool(size)
    }

    #[deprecated(note = "use `Client::load_bytes`, which returns a `Model` handle")]
    #[allow(deprecated)]
    pub fn load_model(&mut self, name: &str, bytes: Vec<u8>) -> Result<v1::ModelInfo, ClientError> {
        self.rt.block_on(self.inner.load_model(name, bytes))
    }

    #[deprecated(note = "use `Client::load`, which returns a `Model` handle")]
    #[allow(deprecated)]
    pub fn load_model_file(
        &mut self,
        path: impl AsRef<Path>,
    ) -> Result<v1::ModelInfo, ClientError> {
        self.rt.block_on(self.inner.load_model_file(path))
    }

    pub fn unload(&mut self, id: &str) -> Result<(), ClientError> {
        self.rt.block_on(self.inner.unload(id))
    }

    pub fn list_models(&mut self) -> Result<Vec<v1::ModelInfo>, ClientError> {
        self.rt.block_on(self.inner.list_models())
    }

    #[deprecated(note = "use `Model::run` with a `Run`")]
    #[allow(deprecated)]
    pub fn run(&mut self, model_id: &str, inputs: &[Tensor]) -> Result<RunOutput, ClientError> {
        self.rt.block_on(self.inner.run(model_id, inputs))
    }

    #[deprecated(note = "use `Model::run` with a `Run`")]
    #[allow(deprecated)]
    pub fn run_with(
        &mut self,
        model_id: &str,
        inputs: &[Tensor],
        options: crate::client::RunOptions,
    ) -> Result<RunOutput, ClientError> {
        self.rt
            .block_on(self.inner.run_with(model_id, inputs, options))
    }

    /// See [`crate::Client::open_session`].
    pub fn open_session(&mut self, model_id: &str) -> Result<v1::SessionInfo, ClientError> {
        self.rt.block_on(self.inner.open_session(model_id))
    }

    pub fn reset_session(&mut self, session_id: u64) -> Result<(), ClientError> {
        self.rt.block_on(self.inner.reset_session(session_id))
    }

    pub fn close_session(&mut self, session_id: u64) -> Result<(), ClientError> {
        self.rt.block_on(self.inner.close_session(session_id))
    }

    pub fn list_sessions(&mut self) -> Result<Vec<v1::SessionInfo>, ClientError> {
        self.rt.block_on(self.inner.list_sessions())
    }

    #[deprecated(note = "use `Model::run` with `Run::input_shm` / `Run::output_shm`")]
    #[allow(deprecated)]
    pub fn run_shm(
        &mut self,
        model_id: &str,
        inputs: &[(DType, Vec<u64>, v1::ShmRef)],
        outputs: &[v1::ShmRef],
    ) -> Result<RunOutput, ClientError> {
        self.rt
            .block_on(self.inner.run_shm(model_id, inputs, outputs))
    }

    pub fn run_shm_with(
        &mut self,
        model_id: &str,
        inputs: &[(DType, Vec<u64>, v1::ShmRef)],
        outputs: &[v1::ShmRef],
        options: crate::client::RunOptions,
    ) -> Result<RunOutput, ClientError> {
        self.rt
            .block_on(self.inner.run_shm_with(model_id, inputs, outputs, options))
    }

    pub fn create_region(&self, size: usize) -> Result<ShmRegion, ClientError> {
        self.inner.create_region(size)
    }

    pub fn release_region(&mut self, id: u64) -> Result<(), ClientError> {
        self.rt.block_on(self.inner.release_region(id))
    }

    pub fn list_regions(&mut self) -> Result<Vec<v1::RegionInfo>, ClientError> {
        self.rt.block_on(self.inner.list_regions())
    }

    pub fn tenants(&mut self) -> Result<Vec<v1::TenantInfo>, ClientError> {
        self.rt.block_on(self.inner.tenants())
    }

    pub fn status(&mut self) -> Result<v1::StatusResponse, ClientError> {
        self.rt.block_on(self.inner.status())
    }

    pub fn placement(&mut self, model_id: &str) -> Result<String, ClientError> {
        self.rt.block_on(self.inner.placement(model_id))
    }

    pub fn placement_status(
        &mut self,
        model_id: &str,
    ) -> Result<v1::GetPlacementResponse, ClientError> {
        self.rt.block_on(self.inner.placement_status(model_id))
    }

    pub fn wait_placed(
        &mut self,
        model_id: &str,
        timeout: std::time::Duration,
    ) -> Result<v1::GetPlacementResponse, ClientError> {
        self.rt.block_on(self.inner.wait_placed(model_id, timeout))
    }

    pub fn metrics(&mut self) -> Result<String, ClientError> {
        self.rt.block_on(self.inner.metrics())
    }

    pub fn allowlist(&mut self) -> Result<v1::ListAllowlistResponse, ClientError> {
        self.rt.block_on(self.inner.allowlist())
    }
}
