//! Shared bits of the example apps: input tensors shaped from the model's specs and a
//! latency summary.

use std::time::Duration;

use switchyard_client::{DType, Tensor, TensorSpec};

/// One input tensor per model input, filled with a deterministic pattern (a stand-in
/// for camera frames or audio features).
pub fn synthetic_inputs(inputs: &[TensorSpec], seed: u32) -> Vec<Tensor> {
    inputs
        .iter()
        .map(|t| {
            let mut data = vec![0u8; t.byte_len()];
            if t.dtype == DType::Float32 {
                for (i, c) in data.chunks_exact_mut(4).enumerate() {
                    let v = ((i as u32).wrapping_mul(2654435761).wrapping_add(seed) % 1000) as f32
                        / 1000.0;
                    c.copy_from_slice(&v.to_le_bytes());
                }
            } else {
                for (i, b) in data.iter_mut().enumerate() {
                    *b = (i as u32).wrapping_add(seed) as u8;
                }
            }
            Tensor {
                dtype: t.dtype,
                shape: t.shape.clone(),
                data,
            }
        })
        .collect()
}

/// "n=.. p50=.. p90=.. max=.. missed=.." over end-to-end latencies.
pub fn summary(latencies: &mut [Duration], budget: Duration) -> String {
    if latencies.is_empty() {
        return "no requests".into();
    }
    latencies.sort();
    let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q).round() as usize];
    let missed = latencies.iter().filter(|&&l| l > budget).count();
    format!(
        "n={} p50={:.2}ms p90={:.2}ms max={:.2}ms over-budget({:.0}ms)={}",
        latencies.len(),
        at(0.5).as_secs_f64() * 1e3,
        at(0.9).as_secs_f64() * 1e3,
        at(1.0).as_secs_f64() * 1e3,
        budget.as_secs_f64() * 1e3,
        missed
    )
}
