//! `modbus-sim`: a Modbus slave for demos and tests — TCP, or RTU on a
//! serial line (answering for one or more unit addresses) — serving a known
//! waveform. Input registers: 0 temperature (i16, 0.1 °C: 20 °C + 5 °C sine,
//! period 60 s), 1 pressure (u16, mbar: 1013 ± 10, period 30 s), 2–3 flow
//! (f32, big word order, l/min: 12.5 + 2.5 sine), 4–5 uptime (u32, s).
//! Holding register 100: write N to add 50 °C to the temperature for N
//! seconds (an injected anomaly); other holding registers 0–127 are plain.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use modbus_adapter::frame::{serve, Frame, FrameError, RegisterTable, Registers};
use modbus_adapter::rtu;
use modbus_adapter::serial::{valid_baud, LineSettings, Parity, Serial};

const USAGE: &str = "usage: modbus-sim [--listen ADDRESS:PORT]
       modbus-sim --serial DEVICE [--baud N] [--parity even|odd|none]
                  [--stop-bits 1|2] [--unit N]... [--noise N]

A Modbus slave serving a known waveform (input registers 0-5) with an anomaly
injected by writing N to holding register 100 (+50 degrees C for N seconds).
TCP on ADDRESS:PORT (default 0.0.0.0:5020), or RTU on a serial DEVICE
(default 19200 8E1, unit 1; --unit again for more slaves on the line;
--noise N corrupts one byte of every Nth answer, to exercise CRC checks).";

/// The registers, and until when the injected anomaly lasts.
struct Table {
    regs: RegisterTable,
    anomaly_until: Option<Instant>,
}

impl Registers for Table {
    fn holding(&self) -> &[u16] {
        self.regs.holding()
    }
    fn input(&self) -> &[u16] {
        self.regs.input()
    }
    fn write_holding(&mut self, address: u16, values: &[u16]) -> bool {
        if !self.regs.write_holding(address, values) {
            return false;
        }
        let a = address as usize;
        if a <= 100 && 100 < a + values.len() {
            let secs = values[100 - a];
            self.anomaly_until = Some(Instant::now() + Duration::from_secs(secs as u64));
            eprintln!("modbus-sim: anomaly for {secs} s");
        }
        true
    }
}

fn update(t: &mut Table, started: Instant) {
    let s = started.elapsed().as_secs_f64();
    let tau = std::f64::consts::TAU;
    let mut temp = 20.0 + 5.0 * (tau * s / 60.0).sin();
    if t.anomaly_until.is_some_and(|u| Instant::now() < u) {
        temp += 50.0;
    }
    t.regs.input[0] = ((temp * 10.0).round() as i16) as u16;
    t.regs.input[1] = (1013.0 + 10.0 * (tau * s / 30.0).sin()).round() as u16;
    let flow = (12.5 + 2.5 * (tau * s / 20.0).sin()) as f32;
    let bits = flow.to_bits();
    t.regs.input[2] = (bits >> 16) as u16;
    t.regs.input[3] = bits as u16;
    let up = s as u32;
    t.regs.input[4] = (up >> 16) as u16;
    t.regs.input[5] = up as u16;
}

fn client(mut s: TcpStream, table: Arc<Mutex<Table>>, started: Instant) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 512];
    loop {
        match Frame::decode(&buf) {
            Ok((req, used)) => {
                buf.drain(..used);
                let pdu = match table.lock() {
                    Ok(mut t) => {
                        update(&mut t, started);
                        serve(&req.pdu, &mut *t)
                    }
                    Err(_) => return,
                };
                let answer = Frame {
                    transaction: req.transaction,
                    unit: req.unit,
                    pdu,
                };
                if s.write_all(&answer.encode()).is_err() {
                    return;
                }
                continue;
            }
            Err(FrameError::Invalid(m)) => {
                eprintln!("modbus-sim: dropping a client: {m}");
                return;
            }
            Err(FrameError::Incomplete) => {}
        }
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// RTU on a serial line: answer requests for `units`; a broadcast (unit 0)
/// write is carried out without an answer.
fn serve_rtu(
    mut line: Serial,
    units: &[u8],
    noise: u64,
    table: Arc<Mutex<Table>>,
    started: Instant,
) -> std::io::Error {
    let gap = Duration::from_micros(rtu::frame_gap_us(line.settings.baud));
    let mut buf = Vec::new();
    let mut answered: u64 = 0;
    loop {
        match rtu::decode(&buf, rtu::From::Master) {
            Ok((unit, pdu, used)) => {
                buf.drain(..used);
                if unit != 0 && !units.contains(&unit) {
                    continue; // another slave's request
                }
                let answer = match table.lock() {
                    Ok(mut t) => {
                        update(&mut t, started);
                        serve(&pdu, &mut *t)
                    }
                    Err(_) => return std::io::Error::other("table lock poisoned"),
                };
                if unit == 0 {
                    continue;
                }
                let mut frame = rtu::encode(unit, &answer);
                answered += 1;
                if noise > 0 && answered % noise == 0 {
                    let last = frame.len() - 3;
                    frame[last] ^= 0x55;
                }
                if let Err(e) = line.send(&frame, gap) {
                    return e;
                }
                continue;
            }
            Err(FrameError::Invalid(m)) => {
                eprintln!("modbus-sim: dropping a frame: {m}");
                let _ = line.drain_until_silent(gap);
                buf.clear();
                continue;
            }
            Err(FrameError::Incomplete) => {}
        }
        let wait = if buf.is_empty() {
            Duration::from_secs(1)
        } else {
            gap * 4
        };
        match line.read_timeout(&mut buf, wait) {
            // Silence inside a frame ends it: what came is a fragment.
            Ok(0) if !buf.is_empty() => buf.clear(),
            Ok(_) => {}
            Err(e) => return e,
        }
    }
}

fn main() -> ExitCode {
    let mut listen = "0.0.0.0:5020".to_string();
    let mut serial: Option<PathBuf> = None;
    let mut line = LineSettings {
        baud: 19_200,
        parity: Parity::Even,
        stop_bits: 1,
    };
    let mut stop_bits = None;
    let mut units: Vec<u8> = Vec::new();
    let mut noise: u64 = 0;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if matches!(a.as_str(), "-h" | "--help") {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        let Some(v) = args.next() else {
            eprintln!("modbus-sim: error: {a} needs a value\n{USAGE}");
            return ExitCode::from(2);
        };
        let bad = |what: &str| {
            eprintln!("modbus-sim: error: {a} {v}: {what}");
            ExitCode::from(2)
        };
        match a.as_str() {
            "--listen" => listen = v.clone(),
            "--serial" => serial = Some(PathBuf::from(&v)),
            "--baud" => match v.parse() {
                Ok(b) if valid_baud(b) => line.baud = b,
                _ => return bad("not a standard baud rate (1200 … 230400)"),
            },
            "--parity" => {
                line.parity = match v.as_str() {
                    "even" => Parity::Even,
                    "odd" => Parity::Odd,
                    "none" => Parity::None,
                    _ => return bad("even, odd or none"),
                }
            }
            "--stop-bits" => match v.as_str() {
                "1" => stop_bits = Some(1),
                "2" => stop_bits = Some(2),
                _ => return bad("1 or 2"),
            },
            "--unit" => match v.parse() {
                Ok(u @ 1..=247) => units.push(u),
                _ => return bad("a unit address is 1 … 247"),
            },
            "--noise" => match v.parse() {
                Ok(n) => noise = n,
                _ => return bad("a count"),
            },
            _ => {
                eprintln!("modbus-sim: error: unexpected argument {a}\n{USAGE}");
                return ExitCode::from(2);
            }
        }
    }
    line.stop_bits = stop_bits.unwrap_or(if line.parity == Parity::None { 2 } else { 1 });
    if units.is_empty() {
        units.push(1);
    }
    let started = Instant::now();
    let table = Arc::new(Mutex::new(Table {
        regs: RegisterTable {
            holding: vec![0; 128],
            input: vec![0; 6],
        },
        anomaly_until: None,
    }));
    if let Some(path) = serial {
        let port = match Serial::open(&path, line) {
            Ok(p) => p,
            Err(e) => {
                eprintln!("modbus-sim: error: {}: {e}", path.display());
                return ExitCode::from(1);
            }
        };
        eprintln!(
            "modbus-sim: serving RTU on {} ({}), units {units:?}",
            path.display(),
            line.describe()
        );
        let e = serve_rtu(port, &units, noise, table, started);
        eprintln!("modbus-sim: error: {}: {e}", path.display());
        return ExitCode::from(1);
    }
    let listener = match TcpListener::bind(&listen) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("modbus-sim: error: {listen}: {e}");
            return ExitCode::from(1);
        }
    };
    eprintln!("modbus-sim: serving on {listen}");
    for conn in listener.incoming().flatten() {
        let t = table.clone();
        std::thread::spawn(move || client(conn, t, started));
    }
    ExitCode::SUCCESS
}
