pub mod bench;
pub mod daemon;
pub mod inspect;
pub mod run;
