//! A camera app: runs a vision model (e.g. face detection) on every frame at 30 fps,
//! passing frames and outputs through a shared-memory pool (no copy through the
//! socket), as realtime requests with a one-frame deadline, using the blocking client.
//! Prints its latencies once a second.
//!
//! `cargo run --example camera_app -- SOCKET MODEL.tflite [SECONDS]`

#[path = "common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use switchyard_client::blocking::Client;
use switchyard_client::{Priority, Run};

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

    let client = Client::connect_unix(&socket)?;
    let model = client.load(&model_path)?;
    println!(
        "[camera] {} loaded as {} (30 fps, shm frames)",
        model.name(),
        model.id()
    );
    let frames = common::synthetic_inputs(model.inputs(), 7);
    let room: usize = frames
        .iter()
        .map(|t| t.data.len().div_ceil(64) * 64)
        .sum::<usize>()
        + model
            .outputs()
            .iter()
            .map(|t| t.byte_len().div_ceil(64) * 64)
            .sum::<usize>();
    let pool = client.shm_pool(room.max(64))?;
    let inputs = frames
        .iter()
        .map(|t| pool.tensor(t))
        .collect::<Result<Vec<_>, _>>()?;
    let outputs = model
        .outputs()
        .iter()
        .map(|t| pool.alloc(t.byte_len()))
        .collect::<Result<Vec<_>, _>>()?;
    let frame_run = || {
        let run = Run::new().priority(Priority::Realtime).deadline(frame);
        let run = inputs.iter().fold(run, |r, t| r.input_shm(t));
        outputs.iter().fold(run, |r, s| r.output_shm(s))
    };

    let mut dropped = 0u64;
    let start = Instant::now();
    let mut next = start;
    let mut window = Vec::new();
    let mut all = Vec::new();
    let mut last_print = start;
    while start.elapsed() < Duration::from_secs(seconds) {
        let t = Instant::now();
        // A frame the daemon cannot finish within its period is refused up front
        // (DEADLINE_EXCEEDED with the reason); the app drops it, as a camera would.
        match model.run(frame_run()) {
            Ok(_) => {
                let latency = t.elapsed();
                window.push(latency);
                all.push(latency);
            }
            Err(e) if e.code() == Some(tonic::Code::DeadlineExceeded) => dropped += 1,
            Err(e) => return Err(e.into()),
        }
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
    println!(
        "[camera] total: {} dropped(refused)={dropped}",
        common::summary(&mut all, frame)
    );
    Ok(())
}
