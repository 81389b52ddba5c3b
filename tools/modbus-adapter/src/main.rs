//! `modbus-adapter`: polls the Modbus TCP slaves of its register map and
//! publishes each point, scaled and typed, to `<prefix>/<slave>/<point>` as
//! `{"v": VALUE, "seq": N, "ts": MS}` (seq counts a slave's polls, so a
//! subscriber sees any loss). A slave or broker outage is retried with
//! backoff; `<prefix>/_adapter/metrics` reports polls and errors.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use modbus_adapter::config::{Config, Slave};
use modbus_adapter::decode::{raw, scaled};
use modbus_adapter::frame::{read_request, read_response, Frame, FrameError};
use rumqttc::{Client, MqttOptions, QoS};
use serde_json::json;

const USAGE: &str = "usage: modbus-adapter [--config FILE]

Polls Modbus TCP slaves and publishes their registers to MQTT. FILE (default
/etc/modbus-adapter/adapter.toml, the container's _config overlay) holds the
broker, the topic prefix and, per slave, its address, unit, poll period and
points (table, register, type, scale, offset, byte and word order).";

#[derive(Default)]
struct Counters {
    polls: AtomicU64,
    errors: AtomicU64,
    published: AtomicU64,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// One request/answer on the connection.
fn transact(s: &mut TcpStream, request: &Frame) -> std::io::Result<Frame> {
    s.write_all(&request.encode())?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 512];
    loop {
        match Frame::decode(&buf) {
            Ok((f, _)) if f.transaction == request.transaction => return Ok(f),
            Ok((_, used)) => {
                buf.drain(..used); // a late answer to an earlier request
                continue;
            }
            Err(FrameError::Invalid(m)) => return Err(std::io::Error::other(m)),
            Err(FrameError::Incomplete) => {}
        }
        let n = s.read(&mut chunk)?;
        if n == 0 {
            return Err(std::io::Error::other("the slave closed the connection"));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn poll_slave(slave: Slave, prefix: String, client: Client, counters: Arc<Counters>) {
    let blocks = slave.blocks(8);
    let mut backoff = Duration::from_secs(1);
    let mut seq: u64 = 0;
    let mut transaction: u16 = 0;
    loop {
        let addr = slave
            .address
            .to_socket_addrs()
            .ok()
            .and_then(|mut a| a.next());
        let stream = addr.and_then(|a| TcpStream::connect_timeout(&a, Duration::from_secs(3)).ok());
        let Some(mut s) = stream else {
            counters.errors.fetch_add(1, Ordering::Relaxed);
            eprintln!(
                "modbus-adapter: {} ({}): unreachable; retry in {:?}",
                slave.name, slave.address, backoff
            );
            std::thread::sleep(backoff);
            backoff = (backoff * 2).min(Duration::from_secs(30));
            continue;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        let _ = s.set_nodelay(true);
        eprintln!(
            "modbus-adapter: {} ({}): connected",
            slave.name, slave.address
        );
        backoff = Duration::from_secs(1);
        let mut next = Instant::now();
        'poll: loop {
            let mut values = Vec::new();
            for b in &blocks {
                transaction = transaction.wrapping_add(1);
                let req = Frame {
                    transaction,
                    unit: slave.unit,
                    pdu: read_request(b.table.function(), b.start, b.count),
                };
                let answer = match transact(&mut s, &req) {
                    Ok(a) => a,
                    Err(e) => {
                        counters.errors.fetch_add(1, Ordering::Relaxed);
                        eprintln!("modbus-adapter: {}: {e}; reconnecting", slave.name);
                        break 'poll;
                    }
                };
                match read_response(&answer.pdu, b.table.function(), b.count) {
                    Ok(regs) => {
                        for &i in &b.points {
                            let p = &slave.points[i];
                            let at = (p.register - b.start) as usize;
                            if let Some(r) = raw(&regs[at..], p.ty, p.byte_order, p.word_order) {
                                values.push((p.name.clone(), scaled(r, p.scale, p.offset)));
                            }
                        }
                    }
                    Err(e) => {
                        counters.errors.fetch_add(1, Ordering::Relaxed);
                        eprintln!(
                            "modbus-adapter: {} {:?} {}+{}: {e}",
                            slave.name, b.table, b.start, b.count
                        );
                    }
                }
            }
            counters.polls.fetch_add(1, Ordering::Relaxed);
            seq += 1;
            let ts = now_ms();
            for (point, v) in values {
                let payload = json!({"v": v, "seq": seq, "ts": ts}).to_string();
                // Blocks while the broker is away and the queue is full: the
                // poll pauses instead of dropping what it read.
                if client
                    .publish(
                        format!("{prefix}/{}/{point}", slave.name),
                        QoS::AtLeastOnce,
                        false,
                        payload,
                    )
                    .is_ok()
                {
                    counters.published.fetch_add(1, Ordering::Relaxed);
                }
            }
            next += Duration::from_millis(slave.poll_ms);
            let now = Instant::now();
            if next > now {
                std::thread::sleep(next - now);
            } else {
                next = now;
            }
        }
        std::thread::sleep(backoff);
    }
}

/// As PID 1 of a container, SIGTERM's default action is to be ignored:
/// exit on it (and on SIGINT) so the container stops at once.
fn exit_on_term() {
    extern "C" fn bye(_: libc::c_int) {
        unsafe { libc::_exit(0) }
    }
    unsafe {
        libc::signal(libc::SIGTERM, bye as *const () as libc::sighandler_t);
        libc::signal(libc::SIGINT, bye as *const () as libc::sighandler_t);
    }
}

fn main() -> ExitCode {
    exit_on_term();
    let mut config_path = PathBuf::from("/etc/modbus-adapter/adapter.toml");
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match (a.as_str(), args.next()) {
            ("--config", Some(v)) => config_path = v.into(),
            ("-h" | "--help", _) => {
                println!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            _ => {
                eprintln!("modbus-adapter: error: unexpected argument {a}\n{USAGE}");
                return ExitCode::from(2);
            }
        }
    }
    let config = match std::fs::read_to_string(&config_path)
        .map_err(|e| e.to_string())
        .and_then(|t| Config::parse(&t))
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("modbus-adapter: error: {}: {e}", config_path.display());
            return ExitCode::from(2);
        }
    };
    let (host, port) = match config
        .broker
        .rsplit_once(':')
        .map(|(h, p)| (h, p.parse::<u16>()))
    {
        Some((h, Ok(p))) => (h.to_string(), p),
        _ => {
            eprintln!(
                "modbus-adapter: error: broker {:?} is not HOST:PORT",
                config.broker
            );
            return ExitCode::from(2);
        }
    };
    let mut opts = MqttOptions::new(format!("modbus-adapter-{}", std::process::id()), host, port);
    opts.set_keep_alive(Duration::from_secs(10));
    // Persistent session: QoS 1 messages queued during an outage are kept.
    opts.set_clean_session(false);
    let (client, mut connection) = Client::new(opts, 10_000);
    let counters = Arc::new(Counters::default());
    for slave in config.slaves.clone() {
        let (c, k, p) = (
            client.clone(),
            counters.clone(),
            config.topic_prefix.clone(),
        );
        std::thread::spawn(move || poll_slave(slave, p, c, k));
    }
    {
        let (c, k, p) = (
            client.clone(),
            counters.clone(),
            config.topic_prefix.clone(),
        );
        std::thread::spawn(move || loop {
            std::thread::sleep(Duration::from_secs(10));
            let m = json!({"polls": k.polls.load(Ordering::Relaxed), "errors": k.errors.load(Ordering::Relaxed),
                "published": k.published.load(Ordering::Relaxed)});
            let _ = c.try_publish(
                format!("{p}/_adapter/metrics"),
                QoS::AtMostOnce,
                false,
                m.to_string(),
            );
        });
    }
    eprintln!(
        "modbus-adapter: {} slave(s) -> {} ({})",
        config.slaves.len(),
        config.topic_prefix,
        config.broker
    );
    // Drive the MQTT connection; it reconnects on the next iteration after an error.
    for event in connection.iter() {
        if let Err(e) = event {
            eprintln!("modbus-adapter: broker {}: {e}; retrying", config.broker);
            std::thread::sleep(Duration::from_secs(1));
        }
    }
    ExitCode::SUCCESS
}
