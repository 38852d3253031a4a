//! Who is calling, decided from the connection and the request headers before a single
//! byte of the request body is read, and how much each tenant may have in flight.
//!
//! A tower layer in front of every gRPC service. Before it, the service checked the TCP
//! bearer token inside the handler, after tonic had buffered the whole message (up to
//! 64 MiB): 100 unfinished 60 MiB streams without a token took the daemon to 6 GB
//! (issue 10, defect 8). Now a request without a valid identity is answered at once and
//! its body dropped unread; an identified one carries its [`Caller`] in the request
//! extensions (the service reads it from there), holds one of its tenant's
//! `requests_per_tenant` places until its response is produced, and has the bytes of its
//! body charged to the tenant's `request_bytes_per_tenant` while it is in memory.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use switchyard_config::DaemonConfig;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::Status;
use tonic::body::Body;
use tonic::codegen::http;
use tonic::transport::server::{TcpConnectInfo, UdsConnectInfo};

use crate::limits::{ConnState, PeerInfo};
use crate::tenant::{Caller, TenantId, lock};

/// Per-tenant budgets shared by every connection of both listeners.
struct TenantBudget {
    requests: Arc<Semaphore>,
    bytes: AtomicU64,
}

struct Shared {
    config: DaemonConfig,
    tenants: Mutex<HashMap<TenantId, Arc<TenantBudget>>>,
}

/// The layer; one per daemon, cloned into each listener's server.
#[derive(Clone)]
pub struct AuthLayer {
    shared: Arc<Shared>,
}

impl AuthLayer {
    pub fn new(config: &DaemonConfig) -> AuthLayer {
        AuthLayer {
            shared: Arc::new(Shared {
                config: config.clone(),
                tenants: Mutex::new(HashMap::new()),
            }),
        }
    }

    fn budget(&self, tenant: &TenantId) -> Arc<TenantBudget> {
        let limits = &self.shared.config.limits;
        lock(&self.shared.tenants)
            .entry(tenant.clone())
            .or_insert_with(|| {
                Arc::new(TenantBudget {
                    requests: Arc::new(Semaphore::new(limits.requests_per_tenant)),
                    bytes: AtomicU64::new(0),
                })
            })
            .clone()
    }
}

impl<S> tower::Layer<S> for AuthLayer {
    type Service = Auth<S>;

    fn layer(&self, inner: S) -> Auth<S> {
        Auth {
            inner,
            layer: self.clone(),
        }
    }
}

/// Compares secrets in time independent of where they differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The caller of a request from its connection and headers alone, plus the connection's
/// activity record. Unix sockets: the peer's uid. TCP: the bearer token, compared in
/// constant time against every configured token.
pub fn identify(
    config: &DaemonConfig,
    extensions: &http::Extensions,
    headers: &http::HeaderMap,
) -> Result<(Caller, Option<Arc<ConnState>>), Status> {
    if let Some(p) = extensions.get::<PeerInfo<UdsConnectInfo>>() {
        let cred = p
            .inner
            .peer_cred
            .ok_or_else(|| Status::unauthenticated("the Unix socket gave no peer credentials"))?;
        let uid = cred.uid();
        return Ok((
            Caller {
                tenant: TenantId::Uid(uid),
                pid: cred.pid().and_then(|p| u32::try_from(p).ok()),
                admin: config.admin_uids.contains(&uid),
            },
            Some(p.conn.clone()),
        ));
    }
    let conn = match extensions.get::<PeerInfo<TcpConnectInfo>>() {
        Some(p) => Some(p.conn.clone()),
        None if extensions.get::<TcpConnectInfo>().is_some() => None,
        None => return Err(Status::unauthenticated("unknown transport")),
    };
    let presented = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| {
            Status::unauthenticated("TCP requests need `authorization: Bearer <token>`")
        })?;
    let mut found = None;
    for t in &config.tokens {
        if constant_time_eq(t.token.as_bytes(), presented.as_bytes()) {
            found = Some(t);
        }
    }
    let t = found.ok_or_else(|| Status::unauthenticated("unknown token"))?;
    Ok((
        Caller {
            tenant: TenantId::Token(t.tenant.clone()),
            pid: None,
            admin: t.admin,
        },
        conn,
    ))
}

/// The service behind the layer.
#[derive(Clone)]
pub struct Auth<S> {
    inner: S,
    layer: AuthLayer,
}

/// What one admitted request holds until it is done: its tenant's place, the bytes its
/// body brought in, and its connection's open-request count.
struct Held {
    budget: Arc<TenantBudget>,
    charged: AtomicU64,
    conn: Option<Arc<ConnState>>,
    _permit: OwnedSemaphorePermit,
}

impl Drop for Held {
    fn drop(&mut self) {
        self.budget
            .bytes
            .fetch_sub(self.charged.load(Ordering::Acquire), Ordering::AcqRel);
        if let Some(c) = &self.conn {
            c.end();
        }
    }
}

/// A request body whose bytes are charged to its tenant as they arrive; past the
/// tenant's budget the body ends with RESOURCE_EXHAUSTED.
struct Charged {
    inner: Body,
    held: Arc<Held>,
    limit: u64,
}

impl HttpBody for Charged {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    let n = data.len() as u64;
                    this.held.charged.fetch_add(n, Ordering::AcqRel);
                    let total = this.held.budget.bytes.fetch_add(n, Ordering::AcqRel) + n;
                    if total > this.limit {
                        return Poll::Ready(Some(Err(Status::resource_exhausted(format!(
                            "limit `request_bytes_per_tenant` exceeded (limit {}): the \
                             tenant's requests in progress hold {total} bytes",
                            this.limit
                        )))));
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            other => other,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

type BoxFuture<T> = Pin<Box<dyn std::future::Future<Output = T> + Send>>;

impl<S, ResBody> tower::Service<http::Request<Body>> for Auth<S>
where
    S: tower::Service<http::Request<Body>, Response = http::Response<ResBody>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    ResBody: Default + Send + 'static,
{
    type Response = http::Response<ResBody>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        let refuse = |s: Status| -> Self::Future {
            let resp = s.into_http::<ResBody>();
            Box::pin(async move { Ok(resp) })
        };
        let config = &self.layer.shared.config;
        let (caller, conn) = match identify(config, req.extensions(), req.headers()) {
            Ok(v) => v,
            Err(s) => return refuse(s),
        };
        let budget = self.layer.budget(&caller.tenant);
        let Ok(permit) = budget.requests.clone().try_acquire_owned() else {
            return refuse(Status::resource_exhausted(format!(
                "limit `requests_per_tenant` exceeded (limit {}): {} has that many requests \
                 open",
                config.limits.requests_per_tenant, caller.tenant
            )));
        };
        if let Some(c) = &conn {
            c.begin();
        }
        let held = Arc::new(Held {
            budget,
            charged: AtomicU64::new(0),
            conn,
            _permit: permit,
        });
        let (mut parts, body) = req.into_parts();
        if let Some(p) = parts.extensions.get::<PeerInfo<UdsConnectInfo>>() {
            let inner = p.inner.clone();
            parts.extensions.insert(inner);
        }
        if let Some(p) = parts.extensions.get::<PeerInfo<TcpConnectInfo>>() {
            let inner = p.inner.clone();
            parts.extensions.insert(inner);
        }
        parts.extensions.insert(caller);
        let body = Body::new(Charged {
            inner: body,
            held: held.clone(),
            limit: config.limits.request_bytes_per_tenant,
        });
        let req = http::Request::from_parts(parts, body);
        // The clone that was made ready is the one called (tower's rule).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let fut = inner.call(req);
        Box::pin(async move {
            let out = fut.await;
            drop(held);
            out
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_config::daemon::TokenConfig;

    fn config() -> DaemonConfig {
        DaemonConfig {
            tokens: vec![TokenConfig {
                token: "0123456789abcdef-token".into(),
                tenant: "app".into(),
                admin: false,
            }],
            ..DaemonConfig::default()
        }
    }

    fn tcp_ext() -> http::Extensions {
        let mut e = http::Extensions::new();
        e.insert(TcpConnectInfo {
            local_addr: None,
            remote_addr: None,
        });
        e
    }

    #[test]
    fn tcp_callers_are_named_by_their_token_only() {
        let cfg = config();
        let mut h = http::HeaderMap::new();
        let e = identify(&cfg, &tcp_ext(), &h).err().unwrap();
        assert_eq!(e.code(), tonic::Code::Unauthenticated);
        h.insert(
            "authorization",
            "Bearer wrong-token-wrong-token".parse().unwrap(),
        );
        let e = identify(&cfg, &tcp_ext(), &h).err().unwrap();
        assert_eq!(e.code(), tonic::Code::Unauthenticated);
        h.insert(
            "authorization",
            "Bearer 0123456789abcdef-token".parse().unwrap(),
        );
        let (c, _) = identify(&cfg, &tcp_ext(), &h).unwrap();
        assert_eq!(c.tenant, TenantId::Token("app".into()));
        assert!(!c.admin);
        // No transport at all: refused.
        let e = identify(&cfg, &http::Extensions::new(), &h).err().unwrap();
        assert_eq!(e.code(), tonic::Code::Unauthenticated);
    }

    #[test]
    fn constant_time_eq_compares_whole_secrets() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
    }
}
