//! Integration tests of the binary crate.

mod depcheck;
mod slt;
