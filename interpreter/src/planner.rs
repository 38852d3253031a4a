//! Arena memory planning: every intermediate tensor of a subgraph gets an offset in one
//! block, and tensors whose lifetimes do not overlap share bytes.
//!
//! Greedy by size (as TFLite's arena planner does): place the largest tensors first, each
//! at the lowest offset that does not collide with an already placed tensor alive at the
//! same time. Offsets are 64-byte aligned so every tensor can be read with SIMD loads.

/// Alignment of every tensor in the arena.
pub const ARENA_ALIGN: usize = 64;

/// One tensor to place: its byte size and the steps between which it must stay intact
/// (inclusive).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lifetime {
    pub tensor: usize,
    pub size: usize,
    pub first_step: usize,
    pub last_step: usize,
}

impl Lifetime {
    fn overlaps(&self, other: &Lifetime) -> bool {
        self.first_step <= other.last_step && other.first_step <= self.last_step
    }
}

/// The result: an offset per request (same order) and the arena size.
#[derive(Clone, Debug, Default)]
pub struct ArenaPlan {
    pub offsets: Vec<usize>,
    pub high_water: usize,
    /// Sum of all tensor sizes: what a planner without reuse would need.
    pub unshared_bytes: usize,
}

fn align_up(x: usize) -> usize {
    x.div_ceil(ARENA_ALIGN) * ARENA_ALIGN
}

/// Plans offsets for `requests`.
pub fn plan(requests: &[Lifetime]) -> ArenaPlan {
    let mut order: Vec<usize> = (0..requests.len()).collect();
    // Largest first; ties by earliest start for a stable, dense layout.
    order.sort_by(|&a, &b| {
        requests[b]
            .size
            .cmp(&requests[a].size)
            .then(requests[a].first_step.cmp(&requests[b].first_step))
    });
    let mut offsets = vec![0usize; requests.len()];
    let mut placed: Vec<usize> = Vec::with_capacity(requests.len());
    let mut high_water = 0usize;
    for &i in &order {
        let req = &requests[i];
        let size = align_up(req.size.max(1));
        // Intervals already used by tensors alive at the same time, sorted by offset.
        let mut busy: Vec<(usize, usize)> = placed
            .iter()
            .filter(|&&p| requests[p].overlaps(req))
            .map(|&p| (offsets[p], offsets[p] + align_up(requests[p].size.max(1))))
            .collect();
        busy.sort_unstable();
        let mut candidate = 0usize;
        for (start, end) in busy {
            if candidate + size <= start {
                break;
            }
            candidate = candidate.max(end);
        }
        offsets[i] = candidate;
        high_water = high_water.max(candidate + size);
        placed.push(i);
    }
    ArenaPlan {
        offsets,
        high_water,
        unshared_bytes: requests.iter().map(|r| align_up(r.size.max(1))).sum(),
    }
}

impl ArenaPlan {
    /// Human-readable layout, one tensor per line, for debugging.
    pub fn dump(&self, requests: &[Lifetime]) -> String {
        let mut lines: Vec<(usize, String)> = requests
            .iter()
            .zip(&self.offsets)
            .map(|(r, &o)| {
                (
                    o,
                    format!(
                        "tensor {:>4}: [{:>9}, {:>9}) steps {}..={}",
                        r.tensor,
                        o,
                        o + r.size,
                        r.first_step,
                        r.last_step
                    ),
                )
            })
            .collect();
        lines.sort();
        let mut s = format!(
            "arena: {} bytes (unshared {})\n",
            self.high_water, self.unshared_bytes
        );
        for (_, l) in lines {
            s.push_str(&l);
            s.push('\n');
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lt(tensor: usize, size: usize, first_step: usize, last_step: usize) -> Lifetime {
        Lifetime {
            tensor,
            size,
            first_step,
            last_step,
        }
    }

    #[test]
    fn disjoint_lifetimes_share_memory() {
        let reqs = [lt(0, 1000, 0, 1), lt(1, 1000, 2, 3)];
        let p = plan(&reqs);
        assert_eq!(p.offsets, vec![0, 0]);
        assert_eq!(p.high_water, 1024);
    }

    #[test]
    fn overlapping_lifetimes_never_collide() {
        let reqs: Vec<Lifetime> = (0..50)
            .map(|i| lt(i, 100 + (i * 37) % 500, i % 7, i % 7 + (i % 5)))
            .collect();
        let p = plan(&reqs);
        for a in 0..reqs.len() {
            assert_eq!(p.offsets[a] % ARENA_ALIGN, 0);
            for b in a + 1..reqs.len() {
                if reqs[a].overlaps(&reqs[b]) {
                    let (sa, ea) = (p.offsets[a], p.offsets[a] + reqs[a].size);
                    let (sb, eb) = (p.offsets[b], p.offsets[b] + reqs[b].size);
                    assert!(ea <= sb || eb <= sa, "tensors {a} and {b} collide");
                }
            }
            assert!(p.offsets[a] + reqs[a].size <= p.high_water);
        }
        assert!(p.high_water <= p.unshared_bytes);
    }
}
