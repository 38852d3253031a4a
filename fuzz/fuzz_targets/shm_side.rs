//! libFuzzer entry for switchyard_daemon::fuzzing::shm_side (see that module and scripts/fuzz.sh).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| switchyard_daemon::fuzzing::shm_side(data));
