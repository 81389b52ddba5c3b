//! The field-data path with real parts: modbus-sim (a Modbus TCP slave) →
//! modbus-adapter → Debian's mosquitto → edge-app, watched by an MQTT
//! subscriber: aggregates arrive, an injected anomaly raises an alarm, the
//! adapter's sequence has no gap, and both apps carry on after the broker
//! restarts. ci/test installs mosquitto.

use std::fs;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use modbus_adapter::frame::{Frame, WRITE_SINGLE};
use rumqttc::{Client, Event, MqttOptions, Packet, QoS};
use serde_json::Value;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A binary of another package of the workspace, built if needed.
fn workspace_bin(package: &str, name: &str) -> PathBuf {
    let path = Path::new(env!("CARGO_BIN_EXE_modbus-adapter")).with_file_name(name);
    if !path.exists() {
        let ok = Command::new(env!("CARGO"))
            .args(["build", "-p", package])
            .status()
            .unwrap();
        assert!(ok.success(), "cargo build -p {package}");
    }
    path
}

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(cmd: &mut Command, log: &Path) -> Proc {
    let log = fs::File::create(log).unwrap();
    Proc(
        cmd.stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("{cmd:?}: {e}")),
    )
}

fn mosquitto(dir: &Path, port: u16) -> Proc {
    assert!(
        Path::new("/usr/sbin/mosquitto").exists(),
        "mosquitto is not installed (ci/test installs Debian's mosquitto)"
    );
    let conf = dir.join("mosquitto.conf");
    fs::write(
        &conf,
        format!(
            "listener {port} 127.0.0.1\nlistener 0 {}\nallow_anonymous true\nuser root\n",
            dir.join("mqtt.sock").display()
        ),
    )
    .unwrap();
    let p = spawn(
        Command::new("/usr/sbin/mosquitto").arg("-c").arg(&conf),
        &dir.join("mosquitto.log"),
    );
    wait_port(port);
    p
}

fn wait_port(port: u16) {
    let start = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "nothing listens on {port}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

type Inbox = Arc<Mutex<Vec<(String, Value)>>>;

/// Subscribe to everything; messages land in the inbox. Reconnects.
fn watch(port: u16) -> Inbox {
    let inbox: Inbox = Arc::default();
    let mut opts = MqttOptions::new(format!("watch-{}", std::process::id()), "127.0.0.1", port);
    opts.set_keep_alive(Duration::from_secs(5));
    let (client, mut conn) = Client::new(opts, 100);
    let sink = inbox.clone();
    std::thread::spawn(move || {
        for ev in conn.iter() {
            match ev {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    let _ = client.try_subscribe("#", QoS::AtLeastOnce);
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let v = serde_json::from_slice(&p.payload).unwrap_or(Value::Null);
                    sink.lock().unwrap().push((p.topic.clone(), v));
                }
                Ok(_) => {}
                Err(_) => std::thread::sleep(Duration::from_millis(200)),
            }
        }
    });
    inbox
}

fn wait_for<T>(
    inbox: &Inbox,
    within: Duration,
    what: &str,
    logs: &dyn Fn() -> String,
    f: impl Fn(&[(String, Value)]) -> Option<T>,
) -> T {
    let start = Instant::now();
    loop {
        if let Some(t) = f(&inbox.lock().unwrap()) {
            return t;
        }
        assert!(
            start.elapsed() < within,
            "no {what} within {within:?}\n{}",
            logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn modbus_to_mqtt_to_edge_app() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let (mqtt_port, sim_port) = (free_port(), free_port());
    let mut broker = mosquitto(d, mqtt_port);
    let inbox = watch(mqtt_port);
    let _sim = spawn(
        Command::new(workspace_bin("modbus-adapter", "modbus-sim"))
            .args(["--listen", &format!("127.0.0.1:{sim_port}")]),
        &d.join("sim.log"),
    );
    wait_port(sim_port);
    fs::write(
        d.join("adapter.toml"),
        format!(
            r#"broker = "127.0.0.1:{mqtt_port}"
api = "{}/adapter/api.sock"
[[slave]]
name = "sim"
address = "127.0.0.1:{sim_port}"
poll_ms = 200
[[slave.point]]
name = "temperature"
table = "input"
register = 0
type = "i16"
scale = 0.1
[[slave.point]]
name = "pressure"
table = "input"
register = 1
type = "u16"
[[slave.point]]
name = "flow"
table = "input"
register = 2
type = "f32"
"#,
            d.display()
        ),
    )
    .unwrap();
    // The edge-app on the broker's unix socket, reading the adapter's
    // metrics over HTTP on the adapter's socket.
    fs::write(
        d.join("edge.toml"),
        format!(
            r#"broker = "unix:{}/mqtt.sock"
adapter_api = "{}/adapter/api.sock"
window_s = 2
[[rule]]
topic = "sensors/+/temperature"
min = -40.0
max = 125.0
detector = {{ zscore = {{ window = 20, threshold = 6.0 }} }}
"#,
            d.display(),
            d.display()
        ),
    )
    .unwrap();
    let _adapter = spawn(
        Command::new(env!("CARGO_BIN_EXE_modbus-adapter"))
            .arg("--config")
            .arg(d.join("adapter.toml")),
        &d.join("adapter.log"),
    );
    let _edge = spawn(
        Command::new(workspace_bin("edge-app", "edge-app"))
            .arg("--config")
            .arg(d.join("edge.toml"))
            .arg("--ctrl-socket")
            .arg(d.join("no-pantavisor-here")),
        &d.join("edge.log"),
    );
    let logs = || {
        ["sim", "adapter", "edge", "mosquitto"]
            .map(|n| {
                format!(
                    "--- {n}\n{}",
                    fs::read_to_string(d.join(format!("{n}.log"))).unwrap_or_default()
                )
            })
            .concat()
    };

    // Raw values, typed and scaled, then aggregates of a whole window.
    let flow = wait_for(
        &inbox,
        Duration::from_secs(15),
        "sensors/sim/flow",
        &logs,
        |m| {
            m.iter()
                .find(|(t, _)| t == "sensors/sim/flow")
                .map(|(_, v)| v["v"].as_f64().unwrap())
        },
    );
    assert!((9.9..=15.1).contains(&flow), "flow {flow}");
    let agg = wait_for(
        &inbox,
        Duration::from_secs(15),
        "an aggregate",
        &logs,
        |m| {
            m.iter()
                .find(|(t, v)| {
                    t == "edge/agg/sensors/sim/temperature" && v["count"].as_u64() >= Some(5)
                })
                .map(|(_, v)| v.clone())
        },
    );
    // The adapter's metrics, fetched by the edge-app (no mesh between
    // them here: no caller identity).
    let metrics = wait_for(
        &inbox,
        Duration::from_secs(25),
        "edge/adapter",
        &logs,
        |m| {
            m.iter()
                .find(|(t, _)| t == "edge/adapter")
                .map(|(_, v)| v.clone())
        },
    );
    assert!(metrics["polls"].as_u64() > Some(0), "{metrics}");
    assert_eq!(
        metrics["caller"],
        serde_json::json!({"client": null, "role": null}),
        "{metrics}"
    );
    let mean = agg["mean"].as_f64().unwrap();
    assert!(
        (14.9..=25.1).contains(&mean) && agg["min"].as_f64() <= agg["max"].as_f64(),
        "{agg}\n{}",
        logs()
    );
    assert_eq!(
        agg["end_ms"].as_u64().unwrap() - agg["start_ms"].as_u64().unwrap(),
        2000
    );
    assert!(
        !inbox
            .lock()
            .unwrap()
            .iter()
            .any(|(t, _)| t == "edge/alarms"),
        "no alarm for the plain waveform: {}",
        logs()
    );

    // Inject an anomaly (holding register 100 = seconds) over Modbus, once
    // the edge-app's detector has history (its window is 20 samples): count
    // what the edge-app itself aggregated, not what the adapter published —
    // the edge-app may have started later (it is built on first use).
    wait_for(
        &inbox,
        Duration::from_secs(30),
        "20 aggregated samples",
        &logs,
        |m| {
            (m.iter()
                .filter(|(t, _)| t == "edge/agg/sensors/sim/temperature")
                .filter_map(|(_, v)| v["count"].as_u64())
                .sum::<u64>()
                >= 20)
                .then_some(())
        },
    );
    // Now the anomaly.
    let mut s = TcpStream::connect(("127.0.0.1", sim_port)).unwrap();
    let req = Frame {
        transaction: 1,
        unit: 1,
        pdu: vec![WRITE_SINGLE, 0, 100, 0, 2],
    };
    std::io::Write::write_all(&mut s, &req.encode()).unwrap();
    let inbox_dump = || {
        let m = inbox.lock().unwrap();
        let temps: Vec<String> = m
            .iter()
            .filter(|(t, _)| t.ends_with("temperature"))
            .map(|(t, v)| format!("{t}={v}"))
            .collect();
        format!("{}\n{}", temps.join("\n"), logs())
    };
    let alarm = wait_for(
        &inbox,
        Duration::from_secs(10),
        "an alarm",
        &inbox_dump,
        |m| {
            m.iter()
                .find(|(t, _)| t == "edge/alarms")
                .map(|(_, v)| v.clone())
        },
    );
    assert_eq!(alarm["topic"], "sensors/sim/temperature", "{alarm}");
    assert!(alarm["value"].as_f64().unwrap() > 60.0, "{alarm}");

    // No gap in the adapter's sequence while the broker ran.
    let seqs: Vec<u64> = inbox
        .lock()
        .unwrap()
        .iter()
        .filter(|(t, _)| t == "sensors/sim/temperature")
        .filter_map(|(_, v)| v["seq"].as_u64())
        .collect();
    assert!(seqs.len() >= 10, "{seqs:?}");
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "a gap: {seqs:?}");

    // Broker outage: both apps reconnect and carry on.
    let _ = broker.0.kill();
    let _ = broker.0.wait();
    std::thread::sleep(Duration::from_secs(2));
    let before = inbox.lock().unwrap().len();
    broker = mosquitto(d, mqtt_port);
    wait_for(
        &inbox,
        Duration::from_secs(30),
        "aggregates after the broker restarted",
        &logs,
        |m| {
            m[before..]
                .iter()
                .any(|(t, _)| t == "edge/agg/sensors/sim/temperature")
                .then_some(())
        },
    );
    drop(broker);
}

/// Two linked pseudo-terminals, as a USB RS-485 adapter wired to a meter
/// would be: the adapter opens `a`, the simulator `b`.
fn serial_pair(dir: &Path) -> (Proc, PathBuf, PathBuf) {
    assert!(
        Path::new("/usr/bin/socat").exists(),
        "socat is not installed (ci/test installs it)"
    );
    let (a, b) = (dir.join("ttyA"), dir.join("ttyB"));
    let _ = fs::remove_file(&a);
    let _ = fs::remove_file(&b);
    let p = spawn(
        Command::new("/usr/bin/socat").arg("-d").args([
            format!("pty,raw,echo=0,link={}", a.display()),
            format!("pty,raw,echo=0,link={}", b.display()),
        ]),
        &dir.join("socat.log"),
    );
    let start = Instant::now();
    while !(a.exists() && b.exists()) {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "socat made no ptys"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    (p, a, b)
}

#[test]
fn rtu_slaves_share_a_serial_line_and_survive_it_going_away() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let mqtt_port = free_port();
    let _broker = mosquitto(d, mqtt_port);
    let inbox = watch(mqtt_port);
    let (mut line, a, b) = serial_pair(d);
    let sim_bin = workspace_bin("modbus-adapter", "modbus-sim");
    // Units 1 and 2 on the line, 38400 8N2; every 7th answer corrupted.
    let sim_args = [
        "--serial",
        b.to_str().unwrap(),
        "--baud",
        "38400",
        "--parity",
        "none",
        "--unit",
        "1",
        "--unit",
        "2",
        "--noise",
        "7",
    ];
    let mut sim = spawn(Command::new(&sim_bin).args(sim_args), &d.join("sim.log"));
    // Three slaves on the line (unit 9 is not there), one point each.
    let mut toml = format!("broker = \"127.0.0.1:{mqtt_port}\"\n");
    for (name, unit, poll_ms, point) in [
        (
            "meter1",
            1,
            100,
            r#"name = "temperature"
table = "input"
register = 0
type = "i16"
scale = 0.1"#,
        ),
        (
            "meter2",
            2,
            150,
            r#"name = "pressure"
table = "input"
register = 1
type = "u16""#,
        ),
        (
            "absent",
            9,
            200,
            r#"name = "x"
table = "holding"
register = 0
type = "u16""#,
        ),
    ] {
        toml += &format!(
            "[[slave]]\nname = \"{name}\"\nserial = \"{}\"\nbaud = 38400\nparity = \"none\"\n\
             unit = {unit}\npoll_ms = {poll_ms}\ntimeout_ms = 300\n[[slave.point]]\n{point}\n",
            a.display()
        );
    }
    fs::write(d.join("adapter.toml"), toml).unwrap();
    let _adapter = spawn(
        Command::new(env!("CARGO_BIN_EXE_modbus-adapter"))
            .arg("--config")
            .arg(d.join("adapter.toml")),
        &d.join("adapter.log"),
    );
    let logs = || {
        ["adapter.log", "sim.log", "socat.log"]
            .iter()
            .map(|f| {
                format!(
                    "--- {f}\n{}",
                    fs::read_to_string(d.join(f)).unwrap_or_default()
                )
            })
            .collect::<String>()
    };
    let count =
        |msgs: &[(String, Value)], topic: &str| msgs.iter().filter(|(t, _)| t == topic).count();
    wait_for(
        &inbox,
        Duration::from_secs(20),
        "values from both meters",
        &logs,
        |m| {
            (count(m, "sensors/meter1/temperature") >= 20
                && count(m, "sensors/meter2/pressure") >= 10)
                .then_some(())
        },
    );
    // The line is set up as configured (termios of the adapter's end).
    let stty = Command::new("stty")
        .arg("-F")
        .arg(&a)
        .arg("-a")
        .output()
        .unwrap();
    let stty = String::from_utf8_lossy(&stty.stdout);
    assert!(
        stty.contains("speed 38400")
            && stty.contains("-parenb")
            && stty.contains(" cstopb")
            && stty.contains(" cs8"),
        "{stty}"
    );
    {
        let msgs = inbox.lock().unwrap();
        for (t, v) in msgs.iter() {
            let x = v["v"].as_f64().unwrap_or(f64::NAN);
            match t.as_str() {
                "sensors/meter1/temperature" => assert!((14.9..=25.1).contains(&x), "{t} {v}"),
                "sensors/meter2/pressure" => assert!((1002.0..=1024.0).contains(&x), "{t} {v}"),
                "sensors/absent/x" => panic!("a value from a slave that is not there: {v}"),
                _ => {}
            }
        }
    }
    let log = fs::read_to_string(d.join("adapter.log")).unwrap();
    assert!(
        log.contains("absent Holding 0+1: no answer within 300ms"),
        "{}",
        logs()
    );
    assert!(
        log.contains("CRC"),
        "the corrupted answers were not caught:\n{}",
        logs()
    );
    // The line goes away (the USB adapter is unplugged) and comes back.
    let _ = line.0.kill();
    let _ = line.0.wait();
    let _ = sim.0.kill();
    let _ = sim.0.wait();
    std::thread::sleep(Duration::from_millis(1500));
    let before = count(&inbox.lock().unwrap(), "sensors/meter1/temperature");
    (line, _, _) = serial_pair(d);
    sim = spawn(Command::new(&sim_bin).args(sim_args), &d.join("sim2.log"));
    wait_for(
        &inbox,
        Duration::from_secs(30),
        "values after the line came back",
        &logs,
        |m| (count(m, "sensors/meter1/temperature") >= before + 10).then_some(()),
    );
    let log = fs::read_to_string(d.join("adapter.log")).unwrap();
    assert!(log.contains("reconnecting"), "{}", logs());
    assert!(log.matches(": connected").count() >= 2, "{}", logs());
    drop(sim);
    drop(line);
}
