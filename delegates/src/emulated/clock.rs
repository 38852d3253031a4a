//! The emulated device's own clock and its fault generator.
//!
//! The clock only moves when the device works: each execution advances it by the
//! partition's cost under the profile, so device time is a deterministic function of
//! the partitions run, whatever the host's load. Demos may ask for wall time to follow
//! it (scaled), which makes an emulated NPU feel as slow or fast as its profile says.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Nanoseconds of device time since the device was created.
#[derive(Debug, Default)]
pub struct VirtualClock {
    nanos: AtomicU64,
}

impl VirtualClock {
    pub fn now(&self) -> Duration {
        Duration::from_nanos(self.nanos.load(Ordering::Relaxed))
    }

    /// Moves the clock forward by `d` and returns the new time.
    pub fn advance(&self, d: Duration) -> Duration {
        let n = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        let before = self
            .nanos
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
                Some(v.saturating_add(n))
            })
            .unwrap_or_else(|v| v);
        Duration::from_nanos(before.saturating_add(n))
    }
}

/// What the fault generator decided for one execution.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    None,
    WrongResult,
    Hang,
    Error,
}

/// Seeded generator (splitmix64) drawing one fault decision per execution, so a test
/// or a demo with the same seed sees the same faults in the same order.
#[derive(Debug)]
pub struct FaultGen {
    state: Mutex<u64>,
    wrong: f64,
    hang: f64,
    error: f64,
}

impl FaultGen {
    pub fn new(f: &switchyard_config::FaultInjection) -> FaultGen {
        FaultGen {
            state: Mutex::new(f.seed),
            wrong: f.wrong_result_rate,
            hang: f.hang_rate,
            error: f.error_rate,
        }
    }

    pub fn is_off(&self) -> bool {
        self.wrong <= 0.0 && self.hang <= 0.0 && self.error <= 0.0
    }

    /// Next raw 64-bit value.
    pub fn next_u64(&self) -> u64 {
        let mut s = match self.state.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        *s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = *s;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn uniform(&self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Draws the fault of one execution: hang, error, wrong result, in that order of
    /// the cumulative rates (a rate of 1 always fires; 0 never does).
    pub fn draw(&self) -> Fault {
        if self.is_off() {
            return Fault::None;
        }
        let u = self.uniform();
        if u < self.hang {
            Fault::Hang
        } else if u < self.hang + self.error {
            Fault::Error
        } else if u < self.hang + self.error + self.wrong {
            Fault::WrongResult
        } else {
            Fault::None
        }
    }
}

/// Sleeps until `until`, never past `deadline`; returns false when the deadline cut
/// the sleep short.
pub fn sleep_until(until: Instant, deadline: Option<Instant>) -> bool {
    let stop = match deadline {
        Some(d) if d < until => d,
        _ => until,
    };
    let now = Instant::now();
    if stop > now {
        std::thread::sleep(stop - now);
    }
    stop == until
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_config::FaultInjection;

    #[test]
    fn clock_accumulates() {
        let c = VirtualClock::default();
        c.advance(Duration::from_micros(5));
        assert_eq!(
            c.advance(Duration::from_micros(7)),
            Duration::from_micros(12)
        );
        assert_eq!(c.now(), Duration::from_micros(12));
    }

    #[test]
    fn faults_are_reproducible_and_follow_rates() {
        let f = FaultInjection {
            wrong_result_rate: 0.2,
            hang_rate: 0.1,
            error_rate: 0.3,
            seed: 42,
        };
        let a: Vec<Fault> = {
            let g = FaultGen::new(&f);
            (0..2000).map(|_| g.draw()).collect()
        };
        let b: Vec<Fault> = {
            let g = FaultGen::new(&f);
            (0..2000).map(|_| g.draw()).collect()
        };
        assert_eq!(a, b);
        let share = |k: Fault| a.iter().filter(|&&x| x == k).count() as f64 / 2000.0;
        assert!((share(Fault::Hang) - 0.1).abs() < 0.04);
        assert!((share(Fault::Error) - 0.3).abs() < 0.05);
        assert!((share(Fault::WrongResult) - 0.2).abs() < 0.05);
        let other: Vec<Fault> = {
            let g = FaultGen::new(&FaultInjection { seed: 43, ..f });
            (0..2000).map(|_| g.draw()).collect()
        };
        assert_ne!(a, other);
        let always = FaultGen::new(&FaultInjection {
            hang_rate: 1.0,
            ..Default::default()
        });
        assert!((0..100).all(|_| always.draw() == Fault::Hang));
        let never = FaultGen::new(&FaultInjection::default());
        assert!((0..100).all(|_| never.draw() == Fault::None));
    }
}
