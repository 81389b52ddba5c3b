//! The Modbus side of the gateway, tested apart from the binaries: Modbus
//! TCP framing ([`frame`]) and RTU framing ([`rtu`]), a serial line in raw
//! mode ([`serial`]), decoding registers into typed, scaled values
//! ([`decode`]), and the register map of `adapter.toml` ([`config`]).

pub mod config;
pub mod decode;
pub mod frame;
pub mod rtu;
pub mod serial;
