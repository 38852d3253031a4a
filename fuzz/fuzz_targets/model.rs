//! libFuzzer entry for switchyard_daemon::fuzzing::model (see that module and scripts/fuzz.sh).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| switchyard_daemon::fuzzing::model(data));
