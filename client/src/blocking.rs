//! A blocking wrapper for apps without an async runtime: each client owns a small
//! current-thread runtime and blocks on the async calls.

use std::path::Path;

use switchyard_proto::DataType;
use switchyard_proto::v1;

use crate::{ClientError, RunOutput, ShmRegion, Tensor};

pub struct Client {
    rt: tokio::runtime::Runtime,
    inner: crate::Client,
}

fn runtime() -> Result<tokio::runtime::Runtime, ClientError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
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

    pub fn load_model(&mut self, name: &str, bytes: Vec<u8>) -> Result<v1::ModelInfo, ClientError> {
        self.rt.block_on(self.inner.load_model(name, bytes))
    }

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

    pub fn run(&mut self, model_id: &str, inputs: &[Tensor]) -> Result<RunOutput, ClientError> {
        self.rt.block_on(self.inner.run(model_id, inputs))
    }

    pub fn run_with(
        &mut self,
        model_id: &str,
        inputs: &[Tensor],
        options: crate::client::RunOptions,
    ) -> Result<RunOutput, ClientError> {
        self.rt
            .block_on(self.inner.run_with(model_id, inputs, options))
    }

    /// See [`crate::Client::run_session`].
    pub fn run_session(
        &mut self,
        model_id: &str,
        session_id: u64,
        inputs: &[Tensor],
    ) -> Result<RunOutput, ClientError> {
        self.rt
            .block_on(self.inner.run_session(model_id, session_id, inputs))
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

    pub fn run_shm(
        &mut self,
        model_id: &str,
        inputs: &[(DataType, Vec<u64>, v1::ShmRef)],
        outputs: &[v1::ShmRef],
    ) -> Result<RunOutput, ClientError> {
        self.rt
            .block_on(self.inner.run_shm(model_id, inputs, outputs))
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

    pub fn allowlist(&mut self) -> Result<v1::ListAllowlistResponse, ClientError> {
        self.rt.block_on(self.inner.allowlist())
    }
}
