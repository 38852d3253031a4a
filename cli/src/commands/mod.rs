pub mod bench;
pub mod inspect;
pub mod run;
pub mod placement;
pub mod simulate;
