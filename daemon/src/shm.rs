//! Shared-memory tensor regions.
//!
//! A client creates a memfd, seals it against shrinking and sends the fd over the side
//! socket with SCM_RIGHTS. The seal is what makes mapping it safe: without it a client
//! could truncate the file under the daemon's mapping and any later access would SIGBUS
//! the whole daemon. Unsealed fds (and anything that is not a sealable memfd) are refused.
//!
//! A region lives as long as the side connection that registered it (or until released):
//! when the client dies its connection closes and its regions go with it. Requests that
//! are still using a region hold an `Arc`, so the mapping outlives the table entry until
//! they finish.
#![allow(unsafe_code)]

use std::collections::HashMap;
use std::ops::Range;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use memmap2::{MmapOptions, MmapRaw};
use nix::fcntl::{FcntlArg, SealFlag, fcntl};
use switchyard_config::daemon::QuotaConfig;
use tokio::io::{AsyncWriteExt, Interest};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::watch;
use tracing::{Instrument, debug, info_span, warn};

use crate::error::DaemonError;
use crate::fastpath::{self, CLAIM_BODY, CLAIM_MAGIC, Channels};
use crate::fdpass;
use crate::limits::{ConnLimiter, PeerKey};
use crate::tenant::{TenantId, lock};

/// First bytes of every registration message on the side socket (protocol version 1).
pub const REGISTER_MAGIC: [u8; 8] = *b"SYSHM\x01\0\0";
/// Reply status bytes.
pub const REPLY_OK: u8 = 0;
pub const REPLY_ERR: u8 = 1;

/// One mapped client region.
pub struct Region {
    pub id: u64,
    pub owner: TenantId,
    pub pid: u32,
    map: MmapRaw,
}

impl std::fmt::Debug for Region {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Region")
            .field("id", &self.id)
            .field("owner", &self.owner)
            .field("len", &self.len())
            .finish()
    }
}

/// Checks that `[offset, offset + length)` lies inside a region of `size` bytes.
pub fn check_range(size: usize, offset: u64, length: u64) -> Result<Range<usize>, DaemonError> {
    let bad = || {
        DaemonError::Shm(format!(
            "range offset {offset} length {length} lies outside the region of {size} bytes"
        ))
    };
    let start = usize::try_from(offset).map_err(|_| bad())?;
    let len = usize::try_from(length).map_err(|_| bad())?;
    let end = start.checked_add(len).ok_or_else(bad)?;
    if end > size {
        return Err(bad());
    }
    Ok(start..end)
}

impl Region {
    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.len() == 0
    }

    /// The bytes of a checked range. The client may write them concurrently (it owns the
    /// other mapping); the contract is that it does not while a request naming them is in
    /// flight, and bytes are plain data, so a violation garbles only its own tensor.
    pub fn bytes(&self, range: Range<usize>) -> Result<&[u8], DaemonError> {
        let r = check_range(self.len(), range.start as u64, range.len() as u64)?;
        // SAFETY: the range is inside the mapping, which lives as long as `self`; the
        // memfd is sealed against shrinking, so the pages stay backed.
        Ok(unsafe { std::slice::from_raw_parts(self.map.as_ptr().add(r.start), r.len()) })
    }

    /// Copies `data` to `offset` after checking the destination range.
    pub fn write(&self, offset: u64, data: &[u8]) -> Result<(), DaemonError> {
        let r = check_range(self.len(), offset, data.len() as u64)?;
        // SAFETY: as in `bytes`; the destination is the client's shared memory and never
        // aliases `data`, which lives in the daemon's own heap or arena.
        unsafe {
            std::ptr::copy_nonoverlapping(
                data.as_ptr(),
                self.map.as_mut_ptr().add(r.start),
                data.len(),
            )
        };
        Ok(())
    }
}

/// Every registered region, by id.
pub struct Regions {
    quota: QuotaConfig,
    next_id: AtomicU64,
    table: Mutex<HashMap<u64, Arc<Region>>>,
    /// Tests widen the window between mapping a region and inserting it, where the
    /// quota race used to be.
    #[cfg(test)]
    map_delay: std::time::Duration,
}

impl Regions {
    pub fn new(quota: QuotaConfig) -> Regions {
        Regions {
            quota,
            next_id: AtomicU64::new(1),
            table: Mutex::new(HashMap::new()),
            #[cfg(test)]
            map_delay: std::time::Duration::ZERO,
        }
    }

    /// Validates and maps a client's memfd.
    pub fn register(
        &self,
        owner: TenantId,
        pid: u32,
        fd: OwnedFd,
    ) -> Result<Arc<Region>, DaemonError> {
        let seals = fcntl(&fd, FcntlArg::F_GET_SEALS)
            .map_err(|e| DaemonError::Shm(format!("the fd is not a sealable memfd ({e})")))?;
        let seals = SealFlag::from_bits_truncate(seals);
        if !seals.contains(SealFlag::F_SEAL_SHRINK) {
            return Err(DaemonError::Shm(
                "the memfd must be sealed with F_SEAL_SHRINK before it is shared".into(),
            ));
        }
        let file = std::fs::File::from(fd);
        let size = file
            .metadata()
            .map_err(|e| DaemonError::Shm(format!("cannot stat the memfd: {e}")))?
            .len();
        if size == 0 {
            return Err(DaemonError::Shm("the memfd is empty".into()));
        }
        let size_usize = usize::try_from(size)
            .ok()
            .filter(|&s| s <= isize::MAX as usize)
            .ok_or_else(|| DaemonError::Shm(format!("the memfd is too large ({size} bytes)")))?;
        if size > self.quota.region_bytes {
            return Err(DaemonError::Quota {
                quota: "region_bytes",
                limit: self.quota.region_bytes,
                detail: format!("the region has {size} bytes"),
            });
        }
        // SAFETY: the memfd is sealed against shrinking (checked above), so the mapped
        // length stays backed for the mapping's whole life.
        let map = MmapOptions::new()
            .len(size_usize)
            .map_raw(&file)
            .map_err(|e| DaemonError::Shm(format!("cannot map the memfd read-write: {e}")))?;
        drop(file);
        #[cfg(test)]
        std::thread::sleep(self.map_delay);
        // The quota check and the insert happen under one lock: checking, unlocking and
        // inserting later let 200 concurrent registrations past a quota of 16 (issue
        // 10, defect 9). A registration refused here unmaps on drop.
        let mut table = lock(&self.table);
        let mine = table.values().filter(|r| r.owner == owner);
        let (count, bytes) = mine.fold((0usize, 0u64), |(c, b), r| (c + 1, b + r.len() as u64));
        if count >= self.quota.regions {
            return Err(DaemonError::Quota {
                quota: "regions",
                limit: self.quota.regions as u64,
                detail: format!("{owner} already has {count} regions"),
            });
        }
        if bytes.saturating_add(size) > self.quota.region_bytes {
            return Err(DaemonError::Quota {
                quota: "region_bytes",
                limit: self.quota.region_bytes,
                detail: format!("{owner} has {bytes} bytes of regions and this one has {size}"),
            });
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let region = Arc::new(Region {
            id,
            owner,
            pid,
            map,
        });
        table.insert(id, region.clone());
        Ok(region)
    }

    /// The caller's region `id`; another tenant's id is reported as unknown.
    pub fn get(&self, owner: &TenantId, id: u64) -> Result<Arc<Region>, DaemonError> {
        lock(&self.table)
            .get(&id)
            .filter(|r| &r.owner == owner)
            .cloned()
            .ok_or_else(|| DaemonError::NotFound {
                kind: "region",
                id: id.to_string(),
            })
    }

    pub fn release(&self, owner: &TenantId, id: u64) -> Result<(), DaemonError> {
        let mut table = lock(&self.table);
        match table.get(&id) {
            Some(r) if &r.owner == owner => {
                table.remove(&id);
                Ok(())
            }
            _ => Err(DaemonError::NotFound {
                kind: "region",
                id: id.to_string(),
            }),
        }
    }

    fn release_ids(&self, ids: &[u64]) {
        let mut table = lock(&self.table);
        for id in ids {
            table.remove(id);
        }
    }

    pub fn of(&self, owner: &TenantId) -> Vec<Arc<Region>> {
        let mut v: Vec<_> = lock(&self.table)
            .values()
            .filter(|r| &r.owner == owner)
            .cloned()
            .collect();
        v.sort_by_key(|r| r.id);
        v
    }

    pub fn count(&self) -> usize {
        lock(&self.table).len()
    }
}

/// Accepts side-socket connections until `stop` turns true. Connections beyond the
/// listener's budget (in total, or for one uid) are closed at once, so one local user
/// cannot hold every descriptor the daemon has.
pub async fn serve(
    listener: UnixListener,
    regions: Arc<Regions>,
    channels: Arc<Channels>,
    limiter: Arc<ConnLimiter>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let uid = match stream.peer_cred() {
                        Ok(c) => c.uid(),
                        Err(e) => {
                            warn!(error = %e, "shm side socket: no peer credentials; closing");
                            continue;
                        }
                    };
                    let permit = match limiter.try_admit(PeerKey::Uid(uid)) {
                        Ok(p) => p,
                        Err(why) => {
                            debug!(uid, %why, "shm side socket: connection refused");
                            continue;
                        }
                    };
                    let regions = regions.clone();
                    let channels = channels.clone();
                    let stop = stop.clone();
                    tokio::spawn(async move {
                        let _permit = permit;
                        serve_connection(stream, regions, channels, stop).await
                    });
                }
                Err(e) => {
                    warn!(error = %e, "shm side socket: accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            },
        }
    }
}

/// Serves one side connection until the client hangs up, sends something that is not a
/// registration or a channel claim, or `stop` turns true; then releases every region it
/// registered and stops every run channel it claimed. Public for the fuzz target, which
/// drives it over a socketpair.
pub async fn serve_connection(
    mut stream: UnixStream,
    regions: Arc<Regions>,
    channels: Arc<Channels>,
    mut stop: watch::Receiver<bool>,
) {
    let cred = match stream.peer_cred() {
        Ok(c) => c,
        Err(e) => {
            warn!(error = %e, "shm side socket: no peer credentials; closing");
            return;
        }
    };
    let owner = TenantId::Uid(cred.uid());
    let pid = cred.pid().and_then(|p| u32::try_from(p).ok()).unwrap_or(0);
    let span = info_span!("shm_connection", tenant = %owner, pid);
    async move {
        let mut mine: Vec<u64> = Vec::new();
        // Dropping a live channel stops it: they all go when this connection does.
        let mut live: Vec<fastpath::Live> = Vec::new();
        loop {
            let msg = tokio::select! {
                _ = stop.changed() => break,
                m = receive(&stream) => m,
            };
            let (bytes, fds, fatal) = match msg {
                Ok(Message::End) => break,
                Ok(Message::Register(fd)) => match regions.register(owner.clone(), pid, fd) {
                    Ok(r) => {
                        debug!(region = r.id, bytes = r.len(), "region registered");
                        mine.push(r.id);
                        (
                            encode_reply(REPLY_OK, r.id, r.len() as u64, ""),
                            None,
                            false,
                        )
                    }
                    Err(e) => (encode_reply(REPLY_ERR, 0, 0, &e.to_string()), None, true),
                },
                Ok(Message::Claim(body)) => {
                    match channels.claim(&owner, &body).and_then(fastpath::start) {
                        Ok((channel, fds)) => {
                            let reply = encode_reply(
                                REPLY_OK,
                                channel.id,
                                switchyard_proto::fastpath::RING_BYTES as u64,
                                "",
                            );
                            live.push(channel);
                            (reply, Some(fds), false)
                        }
                        Err(e) => (encode_reply(REPLY_ERR, 0, 0, &e.to_string()), None, true),
                    }
                }
                Err(e) => (encode_reply(REPLY_ERR, 0, 0, &e.to_string()), None, true),
            };
            let sent = match &fds {
                None => stream.write_all(&bytes).await,
                Some(fds) => {
                    let raw: Vec<_> = fds.iter().map(|f| f.as_raw_fd()).collect();
                    send_with_fds(&mut stream, &bytes, &raw).await
                }
            };
            // The client holds its own copies now; the daemon's go.
            drop(fds);
            if sent.is_err() || fatal {
                break;
            }
        }
        regions.release_ids(&mine);
        debug!(
            released = mine.len(),
            channels = live.len(),
            "side connection closed"
        );
    }
    .instrument(span)
    .await
}

/// Sends a reply with descriptors attached to its first byte.
async fn send_with_fds(
    stream: &mut UnixStream,
    bytes: &[u8],
    fds: &[std::os::fd::RawFd],
) -> std::io::Result<()> {
    let raw = stream.as_raw_fd();
    let sent = loop {
        stream.writable().await?;
        match stream.try_io(Interest::WRITABLE, || fdpass::send(raw, bytes, fds)) {
            Ok(n) => break n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    };
    stream.write_all(bytes.get(sent..).unwrap_or(&[])).await
}

pub fn encode_reply(status: u8, id: u64, size: u64, message: &str) -> Vec<u8> {
    let msg = &message.as_bytes()[..message.len().min(4096)];
    let mut out = Vec::with_capacity(21 + msg.len());
    out.push(status);
    out.extend_from_slice(&id.to_le_bytes());
    out.extend_from_slice(&size.to_le_bytes());
    out.extend_from_slice(&(msg.len() as u32).to_le_bytes());
    out.extend_from_slice(msg);
    out
}

/// One message on the side socket.
enum Message {
    End,
    Register(OwnedFd),
    Claim([u8; CLAIM_BODY]),
}

/// Reads one message: a registration (the magic header and exactly one fd) or a run
/// channel claim (its header and 24 bytes, no fd). Every descriptor that arrives is
/// owned from the moment it is received, so each error below closes all of them.
async fn receive(stream: &UnixStream) -> Result<Message, DaemonError> {
    let raw = stream.as_raw_fd();
    let mut header = [0u8; REGISTER_MAGIC.len()];
    let got = loop {
        stream
            .readable()
            .await
            .map_err(|e| DaemonError::io("shm side socket", e))?;
        match stream.try_io(Interest::READABLE, || fdpass::recv(raw, &mut header)) {
            Ok(v) => break v,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(DaemonError::io("shm side socket", e)),
        }
    };
    let head = &header[..got.bytes.min(header.len())];
    if head == CLAIM_MAGIC {
        if !got.fds.is_empty() || got.truncated {
            return Err(DaemonError::Shm(
                "a run channel claim carries no descriptor".into(),
            ));
        }
        let mut body = [0u8; CLAIM_BODY];
        let mut filled = 0;
        while filled < CLAIM_BODY {
            stream
                .readable()
                .await
                .map_err(|e| DaemonError::io("shm side socket", e))?;
            match stream.try_read(&mut body[filled..]) {
                Ok(0) => return Err(DaemonError::Shm("run channel claim cut short".into())),
                Ok(n) => filled += n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(DaemonError::io("shm side socket", e)),
            }
        }
        return Ok(Message::Claim(body));
    }
    Ok(match parse_registration(head, got.fds, got.truncated)? {
        None => Message::End,
        Some(fd) => Message::Register(fd),
    })
}

/// Checks one received message: exactly the magic header, exactly one descriptor.
/// `None` is the end of the stream. Pure, so the fuzz target and the tests can feed it
/// anything.
pub fn parse_registration(
    bytes: &[u8],
    fds: Vec<OwnedFd>,
    truncated: bool,
) -> Result<Option<OwnedFd>, DaemonError> {
    if bytes.is_empty() && fds.is_empty() {
        return Ok(None);
    }
    if truncated {
        return Err(DaemonError::Shm(
            "control message truncated: send one fd".into(),
        ));
    }
    if bytes != REGISTER_MAGIC {
        return Err(DaemonError::Shm("bad registration header".into()));
    }
    let mut fds = fds.into_iter();
    match (fds.next(), fds.next()) {
        (Some(fd), None) => Ok(Some(fd)),
        (None, _) => Err(DaemonError::Shm("registration carries no fd".into())),
        (Some(_), Some(_)) => Err(DaemonError::Shm(format!(
            "send one fd per registration, not {}",
            2 + fds.len()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::memfd::{MFdFlags, memfd_create};

    fn memfd(size: u64, seal: bool) -> OwnedFd {
        let fd =
            memfd_create(c"test", MFdFlags::MFD_ALLOW_SEALING | MFdFlags::MFD_CLOEXEC).unwrap();
        let f = std::fs::File::from(fd);
        f.set_len(size).unwrap();
        let fd = OwnedFd::from(f);
        if seal {
            fcntl(&fd, FcntlArg::F_ADD_SEALS(SealFlag::F_SEAL_SHRINK)).unwrap();
        }
        fd
    }

    fn quota() -> QuotaConfig {
        QuotaConfig {
            regions: 2,
            region_bytes: 1 << 20,
            ..QuotaConfig::default()
        }
    }

    #[test]
    fn ranges_are_checked_without_overflow() {
        assert_eq!(check_range(100, 0, 100).unwrap(), 0..100);
        assert_eq!(check_range(100, 100, 0).unwrap(), 100..100);
        assert!(check_range(100, 1, 100).is_err());
        assert!(check_range(100, 101, 0).is_err());
        assert!(check_range(100, u64::MAX, 2).is_err());
        assert!(check_range(100, 2, u64::MAX).is_err());
        assert!(check_range(usize::MAX, usize::MAX as u64, 1).is_err());
    }

    #[test]
    fn unsealed_and_non_memfd_fds_are_refused() {
        let regions = Regions::new(quota());
        let e = regions
            .register(TenantId::Uid(1), 1, memfd(4096, false))
            .unwrap_err();
        assert!(e.to_string().contains("F_SEAL_SHRINK"), "{e}");
        let file = tempfile::tempfile().unwrap();
        file.set_len(4096).unwrap();
        let e = regions
            .register(TenantId::Uid(1), 1, file.into())
            .unwrap_err();
        assert!(e.to_string().contains("memfd"), "{e}");
        assert_eq!(regions.count(), 0);
    }

    #[test]
    fn regions_belong_to_their_owner_and_respect_quotas() {
        let regions = Regions::new(quota());
        let a = TenantId::Uid(1);
        let b = TenantId::Uid(2);
        let r = regions.register(a.clone(), 10, memfd(4096, true)).unwrap();
        r.write(4090, &[1, 2, 3, 4, 5, 6]).unwrap();
        assert_eq!(r.bytes(4090..4096).unwrap(), &[1, 2, 3, 4, 5, 6]);
        assert!(r.write(4091, &[0; 6]).is_err());
        assert!(regions.get(&a, r.id).is_ok());
        let other = regions.get(&b, r.id).unwrap_err();
        let unknown = regions.get(&b, 999).unwrap_err();
        assert_eq!(
            tonic::Status::from(other).code(),
            tonic::Status::from(unknown).code()
        );
        assert!(regions.release(&b, r.id).is_err());
        let too_big = regions
            .register(a.clone(), 10, memfd(1 << 20, true))
            .unwrap_err();
        assert!(too_big.to_string().contains("region_bytes"), "{too_big}");
        regions.register(a.clone(), 10, memfd(8, true)).unwrap();
        let too_many = regions.register(a.clone(), 10, memfd(8, true)).unwrap_err();
        assert!(too_many.to_string().contains("`regions`"), "{too_many}");
        regions.release(&a, r.id).unwrap();
        assert_eq!(regions.of(&a).len(), 1);
        // The request holding `r` still reads its mapping after release.
        assert_eq!(r.bytes(4090..4092).unwrap(), &[1, 2]);
    }

    /// Issue 10, defect 9: the quota was checked, the lock released, then the region
    /// inserted, so concurrent registrations got past it.
    #[test]
    fn concurrent_registrations_never_pass_the_quota() {
        let q = QuotaConfig {
            regions: 16,
            region_bytes: 16 * 4096,
            ..QuotaConfig::default()
        };
        let mut regions = Regions::new(q);
        regions.map_delay = std::time::Duration::from_millis(20);
        let regions = Arc::new(regions);
        let barrier = Arc::new(std::sync::Barrier::new(200));
        let threads: Vec<_> = (0..200)
            .map(|_| {
                let (regions, barrier) = (regions.clone(), barrier.clone());
                let fd = memfd(4096, true);
                std::thread::spawn(move || {
                    barrier.wait();
                    regions.register(TenantId::Uid(7), 1, fd).is_ok()
                })
            })
            .collect();
        let ok = threads
            .into_iter()
            .map(|t| t.join().unwrap())
            .filter(|&ok| ok)
            .count();
        assert_eq!(ok, 16);
        assert_eq!(regions.of(&TenantId::Uid(7)).len(), 16);
        let bytes: usize = regions.of(&TenantId::Uid(7)).iter().map(|r| r.len()).sum();
        assert!(bytes <= 16 * 4096);
    }

    /// Issue 10, defect 6: a registration with more than one fd (or more than the old
    /// two-fd control buffer held) leaked the descriptors that did arrive.
    #[tokio::test]
    async fn every_fd_of_a_bad_registration_is_closed() {
        use std::os::fd::AsRawFd;
        let regions = Arc::new(Regions::new(quota()));
        let (_stop_tx, stop) = watch::channel(false);
        let before = fdpass::open_fd_count().unwrap();
        for count in [0usize, 2, 3, 16, 200] {
            let (server, client) = UnixStream::pair().unwrap();
            let fds: Vec<OwnedFd> = (0..count).map(|_| memfd(4096, true)).collect();
            let raw: Vec<_> = fds.iter().map(|f| f.as_raw_fd()).collect();
            let client = client.into_std().unwrap();
            client.set_nonblocking(false).unwrap();
            fdpass::send(client.as_raw_fd(), &REGISTER_MAGIC, &raw).unwrap();
            drop(fds);
            serve_connection(server, regions.clone(), Arc::default(), stop.clone()).await;
            let mut reply = Vec::new();
            use std::io::Read;
            (&client).read_to_end(&mut reply).unwrap();
            assert_eq!(reply.first(), Some(&REPLY_ERR), "{count} fds");
            drop(client);
            assert_eq!(
                fdpass::open_fd_count().unwrap(),
                before,
                "descriptors leaked after a registration with {count} fds"
            );
        }
        assert_eq!(regions.count(), 0);
    }

    #[test]
    fn registrations_are_exactly_the_magic_and_one_fd() {
        assert!(parse_registration(&[], vec![], false).unwrap().is_none());
        assert!(parse_registration(&REGISTER_MAGIC, vec![], false).is_err());
        assert!(parse_registration(&REGISTER_MAGIC[..4], vec![memfd(8, true)], false).is_err());
        assert!(parse_registration(&REGISTER_MAGIC, vec![memfd(8, true)], true).is_err());
        let two = vec![memfd(8, true), memfd(8, true)];
        let e = parse_registration(&REGISTER_MAGIC, two, false).unwrap_err();
        assert!(e.to_string().contains("not 2"), "{e}");
        assert!(
            parse_registration(&REGISTER_MAGIC, vec![memfd(8, true)], false)
                .unwrap()
                .is_some()
        );
    }
}
