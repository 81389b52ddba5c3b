//! `modbus-sim`: a Modbus TCP slave for demos and tests, serving a known
//! waveform. Input registers: 0 temperature (i16, 0.1 °C: 20 °C + 5 °C sine,
//! period 60 s), 1 pressure (u16, mbar: 1013 ± 10, period 30 s), 2–3 flow
//! (f32, big word order, l/min: 12.5 + 2.5 sine), 4–5 uptime (u32, s).
//! Holding register 100: write N to add 50 °C to the temperature for N
//! seconds (an injected anomaly); other holding registers 0–127 are plain.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use modbus_adapter::frame::{serve, Frame, FrameError, Registers};

struct Table {
    holding: Vec<u16>,
    input: Vec<u16>,
    anomaly_until: Option<Instant>,
}

impl Registers for Table {
    fn holding(&self) -> &[u16] {
        &self.holding
    }
    fn input(&self) -> &[u16] {
        &self.input
    }
    fn write_holding(&mut self, address: u16, values: &[u16]) -> bool {
        let a = address as usize;
        if a + values.len() > self.holding.len() {
            return false;
        }
        self.holding[a..a + values.len()].copy_from_slice(values);
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
    t.input[0] = ((temp * 10.0).round() as i16) as u16;
    t.input[1] = (1013.0 + 10.0 * (tau * s / 30.0).sin()).round() as u16;
    let flow = (12.5 + 2.5 * (tau * s / 20.0).sin()) as f32;
    let bits = flow.to_bits();
    t.input[2] = (bits >> 16) as u16;
    t.input[3] = bits as u16;
    let up = s as u32;
    t.input[4] = (up >> 16) as u16;
    t.input[5] = up as u16;
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

fn main() -> ExitCode {
    let mut listen = "0.0.0.0:5020".to_string();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match (a.as_str(), args.next()) {
            ("--listen", Some(v)) => listen = v,
            ("-h" | "--help", _) => {
                println!("usage: modbus-sim [--listen ADDRESS:PORT]   (default 0.0.0.0:5020)");
                return ExitCode::SUCCESS;
            }
            _ => {
                eprintln!("modbus-sim: error: unexpected argument {a}");
                return ExitCode::from(2);
            }
        }
    }
    let listener = match TcpListener::bind(&listen) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("modbus-sim: error: {listen}: {e}");
            return ExitCode::from(1);
        }
    };
    eprintln!("modbus-sim: serving on {listen}");
    let started = Instant::now();
    let table = Arc::new(Mutex::new(Table {
        holding: vec![0; 128],
        input: vec![0; 6],
        anomaly_until: None,
    }));
    for conn in listener.incoming().flatten() {
        let t = table.clone();
        std::thread::spawn(move || client(conn, t, started));
    }
    ExitCode::SUCCESS
}
