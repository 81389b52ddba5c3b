//! `edge-app`: subscribes to the sensor topics on the gateway's broker,
//! filters each value, aggregates per topic over time windows (published on
//! `<output>/agg/<topic>`) and flags anomalies (`<output>/alarms`). Signals
//! READY to Pantavisor once connected; survives broker outages.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use edge_app::aggregate::Window;
use edge_app::anomaly::Detector;
use edge_app::config::Config;
use edge_app::filter::{Filter, Verdict};
use rumqttc::{Client, Event, MqttOptions, Packet, QoS};
use serde_json::json;

const USAGE: &str = "usage: edge-app [--config FILE] [--ctrl-socket PATH]

Aggregates and watches sensor values on MQTT. FILE (default
/etc/edge-app/edge.toml, the container's _config overlay) sets the broker
(HOST:PORT, or unix:/PATH for a unix socket such as an xconnect service),
the input topic filter, the output prefix, the window and per-topic rules;
see the edge-app crate's config module. READY is signalled on PATH (default
/pantavisor/pv-ctrl) once the broker accepted the connection.";

/// `GET /metrics` on the unix socket `path`: the response body.
fn get_metrics(path: &str) -> std::io::Result<String> {
    use std::io::{Read, Write};
    let mut s = std::os::unix::net::UnixStream::connect(path)?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: modbus-adapter\r\nConnection: close\r\n\r\n")?;
    let mut reply = String::new();
    s.read_to_string(&mut reply)?;
    match reply.split_once("\r\n\r\n") {
        Some((head, body)) if head.starts_with("HTTP/1.1 200") => Ok(body.to_string()),
        _ => Err(std::io::Error::other(format!(
            "unexpected reply {:?}",
            reply.lines().next().unwrap_or("")
        ))),
    }
}

struct TopicState {
    filter: Filter,
    window: Window,
    detector: Option<Box<dyn Detector + Send>>,
}

#[derive(Default)]
struct Metrics {
    received: u64,
    unparsable: u64,
    dropped_range: u64,
    dropped_deadband: u64,
    aggregates: u64,
    alarms: u64,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A number, or a JSON object with `v` or `value`.
fn parse_value(payload: &[u8]) -> Option<f64> {
    let text = std::str::from_utf8(payload).ok()?.trim();
    if let Ok(v) = text.parse::<f64>() {
        return Some(v);
    }
    let j: serde_json::Value = serde_json::from_str(text).ok()?;
    j.get("v").or_else(|| j.get("value"))?.as_f64()
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
    let mut config_path = PathBuf::from("/etc/edge-app/edge.toml");
    let mut socket = PathBuf::from(pvctrl::proto::CONTAINER_SOCKET);
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match (a.as_str(), args.next()) {
            ("--config", Some(v)) => config_path = v.into(),
            ("--ctrl-socket", Some(v)) => socket = v.into(),
            ("-h" | "--help", _) => {
                println!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            _ => {
                eprintln!("edge-app: error: unexpected argument {a}\n{USAGE}");
                return ExitCode::from(2);
            }
        }
    }
    let config = match std::fs::read_to_string(&config_path) {
        Ok(text) => match Config::parse(&text) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("edge-app: error: {}: {e}", config_path.display());
                return ExitCode::from(2);
            }
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            eprintln!("edge-app: {} not found; defaults", config_path.display());
            Config::parse("").unwrap_or_else(|_| unreachable!())
        }
        Err(e) => {
            eprintln!("edge-app: error: {}: {e}", config_path.display());
            return ExitCode::from(2);
        }
    };
    let id = format!("edge-app-{}", std::process::id());
    // A unix socket (e.g. the broker's xconnect socket) or HOST:PORT.
    let mut opts = match config.broker.strip_prefix("unix:") {
        Some(path) if path.starts_with('/') => {
            let mut o = MqttOptions::new(id, path, 0);
            o.set_transport(rumqttc::Transport::Unix);
            o
        }
        _ => match config
            .broker
            .rsplit_once(':')
            .map(|(h, p)| (h, p.parse::<u16>()))
        {
            Some((h, Ok(p))) if !h.is_empty() && h != "unix" => MqttOptions::new(id, h, p),
            _ => {
                eprintln!(
                    "edge-app: error: broker {:?} is not HOST:PORT or unix:/PATH",
                    config.broker
                );
                return ExitCode::from(2);
            }
        },
    };
    opts.set_keep_alive(Duration::from_secs(10));
    let (client, mut connection) = Client::new(opts, 1000);
    let mut topics: HashMap<String, TopicState> = HashMap::new();
    let mut metrics = Metrics::default();
    let mut ready = false;
    let mut last_metrics = Instant::now();
    let out = config.output.clone();
    eprintln!(
        "edge-app: {} -> {out}/agg/…, {out}/alarms (window {} s)",
        config.input, config.window_s
    );
    loop {
        match connection.recv_timeout(Duration::from_secs(1)) {
            Ok(Ok(Event::Incoming(Packet::ConnAck(_)))) => {
                eprintln!("edge-app: connected to {}", config.broker);
                if let Err(e) = client.try_subscribe(config.input.clone(), QoS::AtLeastOnce) {
                    eprintln!("edge-app: subscribe: {e}");
                }
                if !ready {
                    match pvctrl::Client::socket(&socket).signal_ready() {
                        Ok(()) => eprintln!("edge-app: READY"),
                        Err(e) => {
                            eprintln!("edge-app: READY not signalled ({}): {e}", socket.display())
                        }
                    }
                    ready = true;
                }
            }
            Ok(Ok(Event::Incoming(Packet::Publish(p)))) => {
                metrics.received += 1;
                let Some(v) = parse_value(&p.payload) else {
                    metrics.unparsable += 1;
                    continue;
                };
                let st = topics.entry(p.topic.clone()).or_insert_with(|| {
                    let rule = config.rule_for(&p.topic);
                    TopicState {
                        filter: config.filter_for(&p.topic),
                        window: Window::new(
                            1000 * rule.and_then(|r| r.window_s).unwrap_or(config.window_s),
                        ),
                        detector: rule.and_then(|r| r.detector.as_ref()).map(|d| d.build()),
                    }
                });
                match st.filter.check(v) {
                    Verdict::OutOfRange => {
                        metrics.dropped_range += 1;
                        continue;
                    }
                    Verdict::WithinDeadband => {
                        metrics.dropped_deadband += 1;
                        // Still part of the window: the value is real.
                    }
                    Verdict::Pass => {
                        if let Some(a) = st.detector.as_mut().and_then(|d| d.observe(v)) {
                            metrics.alarms += 1;
                            let alarm = json!({"topic": p.topic, "value": a.value, "expected": a.expected,
                                "score": a.score, "threshold": a.threshold, "ts_ms": now_ms()});
                            eprintln!("edge-app: ALARM {alarm}");
                            let _ = client.try_publish(
                                format!("{out}/alarms"),
                                QoS::AtLeastOnce,
                                false,
                                alarm.to_string(),
                            );
                        }
                    }
                }
                if let Some(a) = st.window.push(now_ms(), v) {
                    metrics.aggregates += 1;
                    let _ = client.try_publish(
                        format!("{out}/agg/{}", p.topic),
                        QoS::AtLeastOnce,
                        false,
                        serde_json::to_string(&a).unwrap_or_default(),
                    );
                }
            }
            Ok(Ok(_)) | Err(_) => {}
            Ok(Err(e)) => {
                eprintln!("edge-app: broker {}: {e}; retrying", config.broker);
                std::thread::sleep(Duration::from_secs(1));
            }
        }
        let now = now_ms();
        for (topic, st) in topics.iter_mut() {
            if let Some(a) = st.window.flush(now) {
                metrics.aggregates += 1;
                let _ = client.try_publish(
                    format!("{out}/agg/{topic}"),
                    QoS::AtLeastOnce,
                    false,
                    serde_json::to_string(&a).unwrap_or_default(),
                );
            }
        }
        if last_metrics.elapsed() >= Duration::from_secs(10) {
            last_metrics = Instant::now();
            let m = json!({"received": metrics.received, "unparsable": metrics.unparsable,
                "dropped_range": metrics.dropped_range, "dropped_deadband": metrics.dropped_deadband,
                "aggregates": metrics.aggregates, "alarms": metrics.alarms});
            let _ = client.try_publish(
                format!("{out}/metrics"),
                QoS::AtMostOnce,
                false,
                m.to_string(),
            );
            if let Some(api) = &config.adapter_api {
                match get_metrics(api) {
                    Ok(body) => {
                        let _ = client.try_publish(
                            format!("{out}/adapter"),
                            QoS::AtMostOnce,
                            false,
                            body,
                        );
                    }
                    Err(e) => eprintln!("edge-app: {api}: {e}"),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::parse_value;

    #[test]
    fn values() {
        assert_eq!(parse_value(b" 21.5\n"), Some(21.5));
        assert_eq!(parse_value(br#"{"v": 3, "seq": 9}"#), Some(3.0));
        assert_eq!(parse_value(br#"{"value": -1.5}"#), Some(-1.5));
        assert_eq!(parse_value(b"hot"), None);
        assert_eq!(parse_value(&[0xff, 0xfe]), None);
    }
}
