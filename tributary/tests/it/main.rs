//! Integration tests of the binary crate.

mod depcheck;
mod flight_sql;
mod server;
mod slt;
