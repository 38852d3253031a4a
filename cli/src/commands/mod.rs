pub mod bench;
pub mod inspect;
pub mod placement;
pub mod run;
pub mod simulate;
