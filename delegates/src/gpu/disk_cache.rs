//! The driver's compiled pipelines, persisted across runs of the process (wgpu's
//! `PipelineCache`, Vulkan only).
//!
//! On a real GPU most of a model's load time is the driver compiling SPIR-V to machine
//! code. The cache hands that work back on the next start. The file lives in the
//! daemon's state directory, named by wgpu's per-adapter key; it holds the data
//! `PipelineCache::get_data` returned behind our own header (magic, length, sha256),
//! so a truncated or corrupted file is refused here before the driver sees it; wgpu and
//! the driver then check adapter, driver version and format themselves and start empty
//! when the data is not theirs.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use sha2::{Digest, Sha256};

const MAGIC: &[u8; 8] = b"SYPCACHE";
const VERSION: u32 = 1;
const HEADER: usize = 8 + 4 + 8 + 32;

/// Files larger than this are not ours (a pipeline cache of a few models is a few MiB).
const MAX_FILE_BYTES: u64 = 256 << 20;

pub(crate) struct DiskCache {
    path: PathBuf,
    cache: wgpu::PipelineCache,
    /// Bytes of driver data loaded at start (0 for a cold start).
    pub loaded_bytes: usize,
    dirty: AtomicBool,
}

/// The cache file's payload when its header checks out.
fn read_payload(path: &Path) -> Result<Option<Vec<u8>>, String> {
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.to_string()),
    };
    if meta.len() > MAX_FILE_BYTES {
        return Err(format!("{} bytes is too large", meta.len()));
    }
    let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
    let (header, payload) = bytes
        .split_at_checked(HEADER)
        .ok_or("shorter than its header")?;
    if &header[..8] != MAGIC {
        return Err("not a switchyard pipeline cache".into());
    }
    let version = u32::from_le_bytes([header[8], header[9], header[10], header[11]]);
    if version != VERSION {
        return Err(format!("version {version}, expected {VERSION}"));
    }
    let mut len = [0u8; 8];
    len.copy_from_slice(&header[12..20]);
    if u64::from_le_bytes(len) != payload.len() as u64 {
        return Err("length does not match".into());
    }
    if Sha256::digest(payload).as_slice() != &header[20..52] {
        return Err("checksum does not match".into());
    }
    Ok(Some(payload.to_vec()))
}

fn encode(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER + payload.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    out.extend_from_slice(&Sha256::digest(payload));
    out.extend_from_slice(payload);
    out
}

/// Creates the wgpu pipeline cache, seeded with `data` when there is some.
#[allow(unsafe_code)]
fn create(device: &wgpu::Device, data: Option<&[u8]>) -> wgpu::PipelineCache {
    // SAFETY: `data` is what `PipelineCache::get_data` returned in an earlier run (we
    // write the file only from it, and its checksum matched), which is the contract of
    // `create_pipeline_cache`; wgpu validates its own header (adapter, driver, format)
    // and, with `fallback`, starts empty when the data does not fit this device.
    unsafe {
        device.create_pipeline_cache(&wgpu::PipelineCacheDescriptor {
            label: Some("switchyard pipelines"),
            data,
            fallback: true,
        })
    }
}

impl DiskCache {
    /// Opens (or starts) the cache for this adapter under `dir`; `None` when wgpu has no
    /// cache key for the backend or the directory cannot be made.
    pub fn open(device: &wgpu::Device, info: &wgpu::AdapterInfo, dir: &Path) -> Option<DiskCache> {
        let key = wgpu::util::pipeline_cache_key(info)?;
        if let Err(e) = std::fs::create_dir_all(dir) {
            tracing::warn!(dir = %dir.display(), error = %e, "no pipeline cache directory");
            return None;
        }
        let path = dir.join(format!("{key}.bin"));
        let payload = match read_payload(&path) {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "ignoring pipeline cache file");
                None
            }
        };
        let loaded_bytes = payload.as_ref().map_or(0, Vec::len);
        let cache = create(device, payload.as_deref());
        tracing::info!(path = %path.display(), loaded_bytes, "pipeline cache");
        Some(DiskCache {
            path,
            cache,
            loaded_bytes,
            dirty: AtomicBool::new(false),
        })
    }

    pub fn cache(&self) -> &wgpu::PipelineCache {
        &self.cache
    }

    /// New pipelines went into the cache since the last save.
    pub fn mark_dirty(&self) {
        self.dirty.store(true, Ordering::Release);
    }

    /// Writes the cache when it changed (temporary file, then rename, so a crash never
    /// leaves half a file); returns the bytes on disk.
    pub fn save(&self) -> Result<usize, String> {
        if !self.dirty.swap(false, Ordering::AcqRel) {
            return std::fs::metadata(&self.path)
                .map(|m| m.len() as usize)
                .or(Ok(0));
        }
        let Some(data) = self.cache.get_data() else {
            return Ok(0);
        };
        let bytes = encode(&data);
        let mut tmp = self.path.clone().into_os_string();
        tmp.push(format!(".tmp.{}", std::process::id()));
        let tmp = PathBuf::from(tmp);
        std::fs::write(&tmp, &bytes).map_err(|e| format!("writing {}: {e}", tmp.display()))?;
        std::fs::rename(&tmp, &self.path)
            .map_err(|e| format!("renaming to {}: {e}", self.path.display()))?;
        Ok(bytes.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_round_trips_and_damage_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.bin");
        std::fs::write(&path, encode(b"driver bytes")).unwrap();
        assert_eq!(read_payload(&path).unwrap().unwrap(), b"driver bytes");

        let mut bytes = encode(b"driver bytes");
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        assert!(read_payload(&path).unwrap_err().contains("checksum"));

        std::fs::write(&path, &encode(b"driver bytes")[..HEADER + 3]).unwrap();
        assert!(read_payload(&path).unwrap_err().contains("length"));

        std::fs::write(&path, b"short").unwrap();
        assert!(read_payload(&path).is_err());
        assert_eq!(read_payload(&dir.path().join("none")).unwrap(), None);
    }
}
