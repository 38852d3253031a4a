//! switchyard-config: typed configuration for the daemon and the scheduler.
#![forbid(unsafe_code)]
