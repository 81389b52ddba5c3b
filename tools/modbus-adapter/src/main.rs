//! `modbus-adapter`: polls the Modbus slaves of its register map — over TCP,
//! or RTU on a serial line shared by the slaves on it — and publishes each
//! point, scaled and typed, to `<prefix>/<slave>/<point>` as
//! `{"v": VALUE, "seq": N, "ts": MS}` (seq counts a slave's polls, so a
//! subscriber sees any loss). A slave, line or broker outage is retried with
//! backoff; `<prefix>/_adapter/metrics` reports polls and errors.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use modbus_adapter::config::{Block, Config, Link, Slave};
use modbus_adapter::decode::{raw, scaled};
use modbus_adapter::frame::{read_request, read_response, Frame, FrameError};
use modbus_adapter::rtu;
use modbus_adapter::serial::{LineSettings, Serial};
use rumqttc::{Client, MqttOptions, QoS};
use serde_json::json;

const USAGE: &str = "usage: modbus-adapter [--config FILE]

Polls Modbus slaves, over TCP or RTU on serial lines, and publishes their
registers to MQTT. FILE (default /etc/modbus-adapter/adapter.toml, the
container's _config overlay) holds the broker, the topic prefix and, per slave,
its TCP address or serial device (baud, parity, stop bits), unit, poll period
and points (table, register, type, scale, offset, byte and word order).";

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

/// Why a request got no usable answer.
enum Failure {
    /// The connection or line broke: open it again.
    Link(String),
    /// This slave did not answer well; the link is fine.
    Slave(String),
}

/// A connection to slaves.
enum Conn {
    Tcp {
        stream: TcpStream,
        transaction: u16,
    },
    Rtu {
        line: Serial,
        gap: Duration,
        timeout: Duration,
    },
}

impl Conn {
    /// One request and its answer's PDU.
    fn transact(&mut self, unit: u8, pdu: Vec<u8>) -> Result<Vec<u8>, Failure> {
        match self {
            Conn::Tcp {
                stream,
                transaction,
            } => {
                *transaction = transaction.wrapping_add(1);
                let req = Frame {
                    transaction: *transaction,
                    unit,
                    pdu,
                };
                tcp_transact(stream, &req)
                    .map(|f| f.pdu)
                    .map_err(|e| Failure::Link(e.to_string()))
            }
            Conn::Rtu { line, gap, timeout } => {
                line.discard_input();
                line.send(&rtu::encode(unit, &pdu), *gap)
                    .map_err(|e| Failure::Link(format!("write: {e}")))?;
                let deadline = Instant::now() + *timeout;
                let mut buf = Vec::new();
                loop {
                    match rtu::decode(&buf, rtu::From::Slave) {
                        Ok((u, answer, _)) if u == unit => return Ok(answer),
                        Ok((u, _, _)) => {
                            return Err(Failure::Slave(format!("an answer from unit {u}")))
                        }
                        Err(FrameError::Invalid(m)) => {
                            // Noise: let the line fall silent, then give up this read.
                            let _ = line.drain_until_silent(*gap);
                            return Err(Failure::Slave(m));
                        }
                        Err(FrameError::Incomplete) => {}
                    }
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Err(Failure::Slave(if buf.is_empty() {
                            format!("no answer within {timeout:?}")
                        } else {
                            format!("{} bytes of an answer within {timeout:?}", buf.len())
                        }));
                    }
                    // Within a frame, a pause longer than the gap ends it.
                    let wait = if buf.is_empty() {
                        left
                    } else {
                        left.min(*gap * 4)
                    };
                    match line.read_timeout(&mut buf, wait) {
                        Ok(_) => {}
                        Err(e) => return Err(Failure::Link(format!("read: {e}"))),
                    }
                }
            }
        }
    }
}

/// One request/answer on a TCP connection.
fn tcp_transact(s: &mut TcpStream, request: &Frame) -> std::io::Result<Frame> {
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

/// A slave's polling: its reads, sequence number and next due time.
struct Poller {
    slave: Slave,
    blocks: Vec<Block>,
    seq: u64,
    next: Instant,
    /// Polls in a row that got no answer at all. A silent slave on a shared
    /// line is polled less often (up to every 30 s), as each costs the
    /// line a whole answer timeout its neighbours then wait for.
    silent: u32,
}

/// Where values go.
#[derive(Clone)]
struct Sink {
    prefix: String,
    client: Client,
    counters: Arc<Counters>,
}

impl Poller {
    fn new(slave: Slave) -> Poller {
        Poller {
            blocks: slave.blocks(8),
            slave,
            seq: 0,
            next: Instant::now(),
            silent: 0,
        }
    }

    /// Read every block once and publish the values. Err when the link broke.
    fn poll(&mut self, conn: &mut Conn, sink: &Sink) -> Result<(), String> {
        let mut values = Vec::new();
        let mut answered = false;
        for b in &self.blocks {
            let function = b.table.function();
            let answer =
                match conn.transact(self.slave.unit, read_request(function, b.start, b.count)) {
                    Ok(a) => a,
                    Err(Failure::Link(e)) => {
                        sink.counters.errors.fetch_add(1, Ordering::Relaxed);
                        return Err(e);
                    }
                    Err(Failure::Slave(e)) => {
                        sink.counters.errors.fetch_add(1, Ordering::Relaxed);
                        eprintln!(
                            "modbus-adapter: {} {:?} {}+{}: {e}",
                            self.slave.name, b.table, b.start, b.count
                        );
                        continue;
                    }
                };
            answered = true;
            match read_response(&answer, function, b.count) {
                Ok(regs) => {
                    for &i in &b.points {
                        let p = &self.slave.points[i];
                        let at = (p.register - b.start) as usize;
                        if let Some(r) = raw(&regs[at..], p.ty, p.byte_order, p.word_order) {
                            values.push((p.name.clone(), scaled(r, p.scale, p.offset)));
                        }
                    }
                }
                Err(e) => {
                    sink.counters.errors.fetch_add(1, Ordering::Relaxed);
                    eprintln!(
                        "modbus-adapter: {} {:?} {}+{}: {e}",
                        self.slave.name, b.table, b.start, b.count
                    );
                }
            }
        }
        sink.counters.polls.fetch_add(1, Ordering::Relaxed);
        self.seq += 1;
        let ts = now_ms();
        for (point, v) in values {
            let payload = json!({"v": v, "seq": self.seq, "ts": ts}).to_string();
            // Blocks while the broker is away and the queue is full: the
            // poll pauses instead of dropping what it read.
            if sink
                .client
                .publish(
                    format!("{}/{}/{point}", sink.prefix, self.slave.name),
                    QoS::AtLeastOnce,
                    false,
                    payload,
                )
                .is_ok()
            {
                sink.counters.published.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.silent = if answered { 0 } else { self.silent + 1 };
        let period = Duration::from_millis(self.slave.poll_ms);
        self.next += if self.silent > 1 {
            (period * 2u32.pow(self.silent.min(8) - 1))
                .clamp(period, Duration::from_secs(30).max(period))
        } else {
            period
        };
        let now = Instant::now();
        if self.next < now {
            self.next = now; // late: no burst to catch up
        }
        Ok(())
    }
}

fn sleep_until(t: Instant) {
    let now = Instant::now();
    if t > now {
        std::thread::sleep(t - now);
    }
}

/// Poll the slaves of one link — a TCP slave, or every slave on one serial
/// line, in turn as they fall due — reopening the link with backoff.
fn run_link(
    mut pollers: Vec<Poller>,
    open: impl Fn() -> Result<Conn, String>,
    what: String,
    sink: Sink,
) {
    let mut backoff = Duration::from_secs(1);
    loop {
        let mut conn = match open() {
            Ok(c) => c,
            Err(e) => {
                sink.counters.errors.fetch_add(1, Ordering::Relaxed);
                eprintln!("modbus-adapter: {what}: {e}; retry in {backoff:?}");
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(Duration::from_secs(30));
                continue;
            }
        };
        eprintln!("modbus-adapter: {what}: connected");
        backoff = Duration::from_secs(1);
        loop {
            let Some(p) = pollers.iter_mut().min_by_key(|p| p.next) else {
                return;
            };
            sleep_until(p.next);
            if let Err(e) = p.poll(&mut conn, &sink) {
                eprintln!("modbus-adapter: {what}: {e}; reconnecting");
                break;
            }
        }
        std::thread::sleep(backoff);
    }
}

fn open_tcp(address: &str) -> Result<Conn, String> {
    let addr = address
        .to_socket_addrs()
        .map_err(|e| format!("unreachable ({e})"))?
        .next()
        .ok_or("unreachable (no address)")?;
    let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(3))
        .map_err(|e| format!("unreachable ({e})"))?;
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let _ = stream.set_nodelay(true);
    Ok(Conn::Tcp {
        stream,
        transaction: 0,
    })
}

fn open_rtu(path: &Path, line: LineSettings, timeout_ms: u64) -> Result<Conn, String> {
    let serial = Serial::open(path, line).map_err(|e| e.to_string())?;
    Ok(Conn::Rtu {
        line: serial,
        gap: Duration::from_micros(rtu::frame_gap_us(line.baud)),
        timeout: Duration::from_millis(timeout_ms),
    })
}

/// Start a thread per TCP slave and per serial line.
fn start_polling(config: &Config, sink: &Sink) {
    let mut lines: BTreeMap<String, (LineSettings, u64, Vec<Poller>)> = BTreeMap::new();
    for slave in config.slaves.clone() {
        let link = slave.link().map(|l| match l {
            Link::Tcp(a) => Err(a.to_string()),
            Link::Rtu {
                path,
                line,
                timeout_ms,
            } => Ok((path.to_string(), line, timeout_ms)),
        });
        match link {
            Ok(Err(address)) => {
                let what = format!("{} ({address})", slave.name);
                let sink = sink.clone();
                std::thread::spawn(move || {
                    run_link(vec![Poller::new(slave)], || open_tcp(&address), what, sink)
                });
            }
            Ok(Ok((path, line, timeout_ms))) => {
                let entry = lines.entry(path).or_insert((line, timeout_ms, Vec::new()));
                entry.1 = entry.1.max(timeout_ms);
                entry.2.push(Poller::new(slave));
            }
            // Config::parse has checked every link already.
            Err(e) => eprintln!("modbus-adapter: {e}; not polled"),
        }
    }
    for (path, (line, timeout_ms, pollers)) in lines {
        let names: Vec<&str> = pollers.iter().map(|p| p.slave.name.as_str()).collect();
        let what = format!("{path} ({}, {})", line.describe(), names.join(", "));
        let sink = sink.clone();
        std::thread::spawn(move || {
            run_link(
                pollers,
                || open_rtu(Path::new(&path), line, timeout_ms),
                what,
                sink,
            )
        });
    }
}

/// As PID 1 of a container, SIGTERM's default action is to be ignored:
/// exit on it (and on SIGINT) so the container stops at once.
/// `GET /metrics` over HTTP on the unix socket `path`: the counters and
/// who asked, as the caller's `X-PV-Client`/`X-PV-Role` headers say (put
/// there by the xconnect mesh, which a consumer cannot forge).
fn serve_api(path: &str, counters: Arc<Counters>) -> std::io::Result<()> {
    use std::os::unix::net::UnixListener;
    if let Some(dir) = Path::new(path).parent() {
        std::fs::create_dir_all(dir)?;
    }
    let _ = std::fs::remove_file(path);
    let listener = UnixListener::bind(path)?;
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
            let mut head = Vec::new();
            let mut b = [0u8; 1024];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16 * 1024 {
                match conn.read(&mut b) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => head.extend_from_slice(&b[..n]),
                }
            }
            let text = String::from_utf8_lossy(&head);
            let mut lines = text.split("\r\n");
            let request = lines.next().unwrap_or("");
            let header = |name: &str| {
                text.split("\r\n")
                    .skip(1)
                    .filter_map(|l| l.split_once(':'))
                    .find(|(k, _)| k.trim().eq_ignore_ascii_case(name))
                    .map(|(_, v)| v.trim().to_string())
            };
            let (status, body) = if request.starts_with("GET /metrics ") {
                (
                    "200 OK",
                    json!({"polls": counters.polls.load(Ordering::Relaxed),
                        "errors": counters.errors.load(Ordering::Relaxed),
                        "published": counters.published.load(Ordering::Relaxed),
                        "caller": {"client": header("X-PV-Client"), "role": header("X-PV-Role")}}),
                )
            } else {
                ("404 Not Found", json!({"error": "only GET /metrics"}))
            };
            let body = body.to_string();
            let _ = write!(
                conn,
                "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    Ok(())
}

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
    start_polling(
        &config,
        &Sink {
            prefix: config.topic_prefix.clone(),
            client: client.clone(),
            counters: counters.clone(),
        },
    );
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
    if let Some(path) = &config.api {
        match serve_api(path, counters.clone()) {
            Ok(()) => eprintln!("modbus-adapter: GET /metrics on {path}"),
            Err(e) => {
                eprintln!("modbus-adapter: error: api socket {path}: {e}");
                return ExitCode::from(2);
            }
        }
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
