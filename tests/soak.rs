//! A bounded soak of a real `switchyardd` (issue 10): 16 client processes of another uid
//! mix inline and shared-memory runs with model loads and unloads, and are SIGKILLed at
//! random and replaced, while well-behaved clients of a second tenant run a small model
//! continuously. Afterwards the daemon's descriptors and regions are back at the
//! baseline and its RSS within 10% of it, and no well-behaved request was lost or
//! failed.
//!
//! `SWITCHYARD_SOAK_SECS` sets the duration (CI: the default 60 s; `scripts/soak.sh`
//! runs 300 s and prints the figures). It takes a minute because that is what the issue
//! asks of CI: leaks show up over many kill/replace cycles, not over a few.

use std::io::Write;
use std::process::{Child, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use switchyard_client::blocking::Client;
use switchyard_client::{Run, Tensor};
use switchyard_tests::crafted;
use switchyard_tests::spawn::{Daemon, UID_A, helper, raise_fd_limit};

const HOSTILE_CLIENTS: usize = 16;
const GOOD_CLIENTS: usize = 2;

fn soak_secs() -> u64 {
    std::env::var("SWITCHYARD_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60)
}

/// Regions the daemon holds (the test runs as root, an admin, so it sees all).
fn regions(d: &Daemon) -> u32 {
    d.client().status().map(|s| s.regions).unwrap_or(u32::MAX)
}

/// One soak client (uid A): loops until killed over inline runs, shm runs through a
/// registered pool, loads and unloads of its own models, and sessions. Errors are
/// expected (it may hit its quotas, its pool may be gone when it is killed); it only
/// must not bring the daemon down or leak anything after it dies.
#[test]
#[ignore = "helper process of soak_with_hostile_clients_keeps_resources_bounded"]
fn helper_soak_client() {
    let socket = std::env::var("SY_SOCKET").unwrap();
    let seed: u64 = std::env::var("SY_SEED").unwrap().parse().unwrap();
    let mut rng = seed | 1;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    println!("ready");
    std::io::stdout().flush().unwrap();
    loop {
        let Ok(c) = Client::connect_unix(&socket) else {
            std::thread::sleep(Duration::from_millis(20));
            continue;
        };
        let Ok(m) = c.load_bytes("soak", crafted::add_model((next() % 8) as f32)) else {
            continue;
        };
        let pool = c.shm_pool(1 << 16).ok();
        for _ in 0..(next() % 40) {
            let x = Tensor::from_f32(vec![1, 4], &[1.0; 4]);
            let r = match (&pool, next() % 3) {
                (Some(p), 0) => p.tensor(&x).and_then(|t| m.run(Run::new().input_shm(&t))),
                (_, 1) => m
                    .open_session()
                    .and_then(|s| s.run(Run::new().input(x.clone()))),
                _ => m.run(Run::new().input(x)),
            };
            let _ = r;
        }
        // Sometimes unload, sometimes leave it for the daemon to drop at disconnect.
        if next() % 2 == 0 {
            let _ = m.unload();
        }
    }
}

fn spawn_client(d: &Daemon, seed: u64) -> Child {
    let mut c = helper(UID_A, "helper_soak_client")
        .env("SY_SOCKET", &d.socket)
        .env("SY_SEED", seed.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Started; a client killed before it connects is a case too.
    let _ = c.try_wait();
    c
}

#[test]
fn soak_with_hostile_clients_keeps_resources_bounded() {
    raise_fd_limit();
    let secs = soak_secs();
    let mut d = Daemon::start("[daemon.quota]\nregions = 64\n");
    // Warm up: the good tenant's model and pools exist before the baseline.
    let good = d.client();
    let model = good.load_bytes("good", crafted::add_model(1.0)).unwrap();
    for _ in 0..50 {
        model
            .run(Run::new().input(Tensor::from_f32(vec![1, 4], &[1.0; 4])))
            .unwrap();
    }
    let model_id = model.id().to_owned();
    std::thread::sleep(Duration::from_millis(300));
    let (fds0, regions0, rss0) = (d.fd_count(), regions(&d), d.rss_kib());
    eprintln!("baseline: {fds0} fds, {regions0} regions, {rss0} KiB RSS");

    // Well-behaved clients: every request must succeed, none may hang.
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let worst_us = Arc::new(AtomicU64::new(0));
    let mut good_threads = Vec::new();
    for _ in 0..GOOD_CLIENTS {
        let (stop, done, worst_us) = (stop.clone(), done.clone(), worst_us.clone());
        let socket = d.socket.clone();
        let id = model_id.clone();
        good_threads.push(std::thread::spawn(move || -> Result<(), String> {
            let c = Client::connect_unix(&socket).map_err(|e| e.to_string())?;
            let m = c
                .models()
                .map_err(|e| e.to_string())?
                .into_iter()
                .find(|m| m.id() == id)
                .ok_or("the good model is gone")?;
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                let out = m
                    .run(Run::new().input(Tensor::from_f32(vec![1, 4], &[1.0; 4])))
                    .map_err(|e| format!("a well-behaved request failed: {e}"))?;
                let y: Vec<f32> = out.tensors[0].to_vec().map_err(|e| e.to_string())?;
                if y != vec![2.0; 4] {
                    return Err(format!("wrong result {y:?}"));
                }
                worst_us.fetch_max(t.elapsed().as_micros() as u64, Ordering::Relaxed);
                done.fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(10));
            }
            Ok(())
        }));
    }

    let mut clients: Vec<Child> = (0..HOSTILE_CLIENTS)
        .map(|i| spawn_client(&d, i as u64 + 1))
        .collect();
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    let mut kills = 0u64;
    let mut peak_fds = 0;
    let mut peak_rss = 0;
    let end = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < end {
        std::thread::sleep(Duration::from_millis(100));
        d.assert_alive("hostile soak clients");
        peak_fds = peak_fds.max(d.fd_count());
        peak_rss = peak_rss.max(d.rss_kib());
        // About two SIGKILLs a second, each replaced at once.
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        if rng.is_multiple_of(5) {
            let i = (rng >> 8) as usize % clients.len();
            let _ = clients[i].kill();
            let _ = clients[i].wait();
            clients[i] = spawn_client(&d, rng);
            kills += 1;
        }
    }
    for c in &mut clients {
        let _ = c.kill();
        let _ = c.wait();
    }
    stop.store(true, Ordering::Relaxed);
    for t in good_threads {
        if let Err(e) = t.join().unwrap() {
            panic!("{e}\n{}", d.log());
        }
    }
    d.assert_alive("the soak");

    // The dead clients' connections, regions and models go; give the daemon a moment.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (fds, regs, rss) = (d.fd_count(), regions(&d), d.rss_kib());
        let ok = fds <= fds0 && regs <= regions0 && rss <= rss0 + rss0 / 10;
        if ok || Instant::now() > deadline {
            println!(
                "soak {secs} s: {} well-behaved runs (worst {} ms), {kills} client SIGKILLs; \
                 fds {fds0} -> peak {peak_fds} -> {fds}; regions {regions0} -> {regs}; \
                 RSS {rss0} KiB -> peak {peak_rss} KiB -> {rss} KiB",
                done.load(Ordering::Relaxed),
                worst_us.load(Ordering::Relaxed) / 1000,
            );
            assert!(fds <= fds0, "descriptors: {fds} after, {fds0} before");
            assert!(regs <= regions0, "regions: {regs} after, {regions0} before");
            assert!(
                rss <= rss0 + rss0 / 10,
                "RSS: {rss} KiB after, {rss0} KiB before (more than 10% above)"
            );
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        done.load(Ordering::Relaxed) > secs * 10,
        "well-behaved clients got only {} runs in {secs} s",
        done.load(Ordering::Relaxed)
    );
}
