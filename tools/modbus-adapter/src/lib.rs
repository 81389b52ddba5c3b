//! The Modbus side of the gateway, free of I/O so it is tested alone:
//! Modbus TCP framing ([`frame`]), decoding registers into typed, scaled
//! values ([`decode`]), and the register map of `adapter.toml` ([`config`]).

pub mod config;
pub mod decode;
pub mod frame;
