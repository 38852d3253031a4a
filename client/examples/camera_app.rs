//! A camera app: runs a vision model (e.g. face detection) on every frame at 30 fps,
//! passing frames through a shared-memory region (no copy through the socket), using the
//! blocking client. Prints its latencies once a second.
//!
//! `cargo run --example camera_app -- SOCKET MODEL.tflite [SECONDS]`

#[path = "common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use switchyard_client::blocking::Client;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let socket = args
        .next()
        .ok_or("usage: camera_app SOCKET MODEL [SECONDS]")?;
    let model_path = args
        .next()
        .ok_or("usage: camera_app SOCKET MODEL [SECONDS]")?;
    let seconds: u64 = args.next().map(|s| s.parse()).transpose()?.unwrap_or(10);
    let frame = Duration::from_secs_f64(1.0 / 30.0);

    let mut client = Client::connect_unix(&socket)?;
    let model = client.load_model_file(&model_path)?;
    println!(
        "[camera] {} loaded as {} (30 fps, shm frames)",
        model.name, model.id
    );
    let inputs = common::synthetic_inputs(&model, 7);
    let bytes: usize = inputs.iter().map(|t| t.data.len().div_ceil(64) * 64).sum();
    let mut region = client.create_region(bytes.max(64))?;
    let mut refs = Vec::new();
    let mut offset = 0u64;
    for t in &inputs {
        refs.push(region.write_tensor(offset, t)?);
        offset += t.data.len().div_ceil(64) as u64 * 64;
    }

    let start = Instant::now();
    let mut next = start;
    let mut window = Vec::new();
    let mut all = Vec::new();
    let mut last_print = start;
    while start.elapsed() < Duration::from_secs(seconds) {
        let t = Instant::now();
        client.run_shm(&model.id, &refs, &[])?;
        let latency = t.elapsed();
        window.push(latency);
        all.push(latency);
        if last_print.elapsed() >= Duration::from_secs(1) {
            println!("[camera] {}", common::summary(&mut window, frame));
            window.clear();
            last_print = Instant::now();
        }
        next += frame;
        if let Some(wait) = next.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        } else {
            next = Instant::now();
        }
    }
    println!("[camera] total: {}", common::summary(&mut all, frame));
    Ok(())
}
