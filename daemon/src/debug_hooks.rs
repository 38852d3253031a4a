//! Hooks for end-to-end tests that need to hold the daemon at a precise point. They are
//! compiled into debug builds only (`cfg(debug_assertions)`); release builds, the only
//! ones deployed, contain none of this, whatever the environment says.

/// Holds the placement and prepare of the model whose sha256 is `sha256_hex` while the
/// file `$SWITCHYARD_DEBUG_HOLD_DIR/<sha256>.hold` exists (at most two minutes), after
/// creating `<sha256>.held` to say the load has got there. The concurrent-load test
/// uses it to keep one tenant's first load in flight while another tenant loads.
pub fn hold_prepare(sha256_hex: &str) {
    #[cfg(debug_assertions)]
    {
        use std::time::{Duration, Instant};
        let Some(dir) = std::env::var_os("SWITCHYARD_DEBUG_HOLD_DIR") else {
            return;
        };
        let dir = std::path::PathBuf::from(dir);
        let hold = dir.join(format!("{sha256_hex}.hold"));
        if !hold.exists() {
            return;
        }
        tracing::warn!(model = sha256_hex, "debug hook: holding this prepare");
        let _ = std::fs::write(dir.join(format!("{sha256_hex}.held")), b"");
        let deadline = Instant::now() + Duration::from_secs(120);
        while hold.exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    #[cfg(not(debug_assertions))]
    let _ = sha256_hex;
}
