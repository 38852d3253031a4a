//! A wake-word app: runs an audio model on a new feature window every 80 ms with inline
//! tensors, using the async client. A streaming model (one that keeps state between
//! runs) runs on a session of its own, so its stream continues from window to window.
//! Prints its latencies once a second.
//!
//! `cargo run --example wake_word -- SOCKET MODEL.tflite [SECONDS]`

#[path = "common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use switchyard_client::{Client, Run};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let socket = args
        .next()
        .ok_or("usage: wake_word SOCKET MODEL [SECONDS]")?;
    let model_path = args
        .next()
        .ok_or("usage: wake_word SOCKET MODEL [SECONDS]")?;
    let seconds: u64 = args.next().map(|s| s.parse()).transpose()?.unwrap_or(10);
    let hop = Duration::from_millis(80);

    let client = Client::connect_unix(&socket).await?;
    let model = client.load(&model_path).await?;
    println!(
        "[wake-word] {} loaded as {} (every 80 ms, inline)",
        model.name(),
        model.id()
    );

    // A streaming detector's state lives in the daemon, in this app's session.
    let session = if model.meta().stateful {
        Some(model.open_session().await?)
    } else {
        None
    };
    let mut ticker = tokio::time::interval(hop);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let start = Instant::now();
    let mut window = Vec::new();
    let mut all = Vec::new();
    let mut last_print = start;
    let mut seed = 0;
    while start.elapsed() < Duration::from_secs(seconds) {
        ticker.tick().await;
        seed += 1;
        let inputs = common::synthetic_inputs(model.inputs(), seed);
        let run = inputs.into_iter().fold(Run::new(), Run::input);
        let t = Instant::now();
        match &session {
            Some(s) => s.run(run).await?,
            None => model.run(run).await?,
        };
        let latency = t.elapsed();
        window.push(latency);
        all.push(latency);
        if last_print.elapsed() >= Duration::from_secs(1) {
            println!("[wake-word] {}", common::summary(&mut window, hop));
            window.clear();
            last_print = Instant::now();
        }
    }
    println!("[wake-word] total: {}", common::summary(&mut all, hop));
    if let Some(s) = session {
        s.close().await?;
    }
    Ok(())
}
