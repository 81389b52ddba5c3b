//! The reference gateway under QEMU (ci/lib/gateway.sh): os, Debian's
//! mosquitto, our modbus-adapter and edge-app, booted by our daemon as PID 1
//! from Debian's kernel. The Modbus simulator runs on the host (the guest
//! reaches it at 10.0.2.2); MQTT and the device's remote API are forwarded.
//! A second simulator is a Modbus RTU slave on the guest's second serial
//! line (ttyS1, wired to a host pty through socat), which the adapter's
//! container gets as a device.
//! Shown: every goal reached, aggregated values and an injected anomaly's
//! alarm on MQTT, failure isolation, an over-the-air update of the edge-app
//! with pvr (no reboot, only it restarts, bytes sent = its changed object +
//! JSON), and a bad edge-app update rolled back on its own. Needs root.

use std::fs;
use std::io::Write;
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

mod guest;

use guest::*;
use rumqttc::{Client, Event, MqttOptions, Packet, QoS};
use serde_json::Value;

struct Kill(Child);
impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn until<T>(within: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let start = Instant::now();
    while start.elapsed() < within {
        if let Some(t) = f() {
            return Some(t);
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    None
}

fn pids(port: u16) -> Vec<(String, i64, String)> {
    api(port, "GET", "/containers", "")
        .1
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|c| {
            (
                c["name"].as_str().unwrap_or("").to_string(),
                c["pid"].as_i64().unwrap_or(-1),
                c["status"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

fn pid_of(p: &[(String, i64, String)], name: &str) -> i64 {
    p.iter().find(|c| c.0 == name).map(|c| c.1).unwrap_or(-1)
}

type Inbox = Arc<Mutex<Vec<(Instant, String, Value)>>>;

fn watch(port: u16) -> Inbox {
    let inbox: Inbox = Arc::default();
    let mut opts = MqttOptions::new("test-watch", "127.0.0.1", port);
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
                    sink.lock()
                        .unwrap()
                        .push((Instant::now(), p.topic.clone(), v));
                }
                Ok(_) => {}
                Err(_) => std::thread::sleep(Duration::from_millis(500)),
            }
        }
    });
    inbox
}

#[test]
fn the_reference_gateway_under_qemu() {
    let uid = run(Command::new("id").arg("-u"));
    assert_eq!(uid.trim(), "0", "needs root (ci/test runs it as root)");
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let sim_port = free_port();
    let _sim = Kill(
        Command::new(workspace_bin("modbus-adapter", "modbus-sim"))
            .args(["--listen", &format!("127.0.0.1:{sim_port}")])
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    run(Command::new("bash")
        .arg(root().join("ci/mkimage"))
        .arg("bsp")
        .arg(d));
    run(Command::new("bash")
        .arg(root().join("ci/lib/gateway.sh"))
        .arg(d)
        .arg(format!("10.0.2.2:{sim_port}"))
        .arg("/dev/ttyS1"));
    let disk = d.join("disk.img");
    compose_disk(d, &disk, "768");
    let (mqtt, apip) = (free_port(), free_port());
    let fwd = format!(
        "user,id=n0,hostfwd=tcp:127.0.0.1:{mqtt}-:1883,hostfwd=tcp:127.0.0.1:{apip}-:12368"
    );
    let rtu_sock = d.join("rtu.sock");
    let rtu_chardev = format!(
        "socket,id=rtu,path={},server=on,wait=off",
        rtu_sock.display()
    );
    let mut guest = Guest::boot_with(
        d,
        &disk,
        false,
        &[
            "-no-reboot",
            "-netdev",
            &fwd,
            "-device",
            "virtio-net-pci,netdev=n0",
            "-chardev",
            &rtu_chardev,
            "-device",
            "isa-serial,chardev=rtu",
        ],
    );
    // The guest's ttyS1 ends in QEMU's socket; socat makes a pty of it for
    // the RTU simulator (unit 7, 38400 8N2, as gateway.sh configures).
    until(Duration::from_secs(10), || rtu_sock.exists().then_some(()))
        .expect("QEMU made no socket for ttyS1");
    let tty = d.join("ttyRTU");
    let _line = Kill(
        Command::new("socat")
            .arg(format!("pty,raw,echo=0,link={}", tty.display()))
            .arg(format!(
                "unix-connect:{},retry=50,interval=0.2",
                rtu_sock.display()
            ))
            .stderr(Stdio::null())
            .spawn()
            .expect("socat (ci/test installs it)"),
    );
    until(Duration::from_secs(10), || tty.exists().then_some(())).expect("socat made no pty");
    let _rtu_sim = Kill(
        Command::new(workspace_bin("modbus-adapter", "modbus-sim"))
            .arg("--serial")
            .arg(&tty)
            .args(["--baud", "38400", "--parity", "none", "--unit", "7"])
            .stderr(fs::File::create(d.join("rtu-sim.log")).unwrap())
            .spawn()
            .unwrap(),
    );
    let serial = guest.serial.clone();
    let console = || fs::read_to_string(&serial).unwrap_or_default();
    let mut fail = |what: &str| -> ! {
        let c = console();
        guest.kill();
        panic!("{what}\n--- guest console:\n{c}");
    };

    // Every container at its goal, reported over the forwarded API.
    let booted = Instant::now();
    let Some(first) = until(Duration::from_secs(180), || {
        let p = pids(apip);
        (p.len() == 4
            && p.iter().all(|c| c.2 == "STARTED" || c.2 == "READY")
            && p.iter().any(|c| c.0 == "edge-app" && c.2 == "READY"))
        .then_some(p)
    }) else {
        fail("the gateway did not reach its goals")
    };
    eprintln!(
        "all goals {:.1} s after QEMU started: {first:?}",
        booted.elapsed().as_secs_f64()
    );
    // The edge-app has no network: it reaches the broker through the
    // xconnect socket the daemon put in its namespace.
    let (code, graph) = api(apip, "GET", "/xconnect-graph", "");
    assert_eq!(code, 200, "{graph}");
    assert_eq!(
        graph,
        serde_json::json!([{"consumer": "edge-app", "consumer_pid": pid_of(&first, "edge-app"),
            "provider": "mqtt-broker", "provider_pid": pid_of(&first, "mqtt-broker"),
            "name": "mqtt", "type": "unix", "role": "any", "interface": "unix",
            "target": "/run/pv/mqtt.sock", "socket": "/run/mqtt.sock"},
            {"consumer": "edge-app", "consumer_pid": pid_of(&first, "edge-app"),
            "provider": "modbus-adapter", "provider_pid": pid_of(&first, "modbus-adapter"),
            "name": "metrics", "type": "rest", "role": "metrics-reader", "interface": "rest",
            "target": "/run/pv/adapter.sock", "socket": "/run/modbus-adapter/api.sock"}])
    );

    // Values from the simulator arrive aggregated; an anomaly raises an alarm.
    let inbox = watch(mqtt);
    // The edge-app reads the adapter's metrics over REST through xconnect:
    // the adapter sees who calls, as the daemon says.
    let Some(adapter) = until(Duration::from_secs(40), || {
        inbox
            .lock()
            .unwrap()
            .iter()
            .find(|(_, t, _)| t == "edge/adapter")
            .map(|(_, _, v)| v.clone())
    }) else {
        fail("no edge/adapter message (the adapter's metrics through xconnect rest)")
    };
    assert_eq!(
        adapter["caller"],
        serde_json::json!({"client": "edge-app", "role": "metrics-reader"}),
        "{adapter}"
    );
    assert!(adapter["polls"].as_u64() > Some(0), "{adapter}");
    if until(Duration::from_secs(60), || {
        inbox
            .lock()
            .unwrap()
            .iter()
            .any(|(_, t, v)| {
                t == "edge/agg/sensors/plc1/temperature" && v["count"].as_u64() >= Some(5)
            })
            .then_some(())
    })
    .is_none()
    {
        fail("no aggregate on edge/agg/sensors/plc1/temperature");
    }
    // The RTU slave's values, through the guest's serial line.
    if until(Duration::from_secs(60), || {
        let msgs = inbox.lock().unwrap();
        let v: Vec<f64> = msgs
            .iter()
            .filter(|(_, t, _)| t == "sensors/meter1/pressure")
            .filter_map(|(_, _, v)| v["v"].as_f64())
            .collect();
        (v.len() >= 5).then_some(v)
    })
    .is_none_or(|v| !v.iter().all(|x| (1002.0..=1024.0).contains(x)))
    {
        let rtu = fs::read_to_string(d.join("rtu-sim.log")).unwrap_or_default();
        fail(&format!(
            "no plausible values from the RTU slave on ttyS1\n--- rtu sim:\n{rtu}"
        ));
    }
    // Enough history for the detector (20 samples at 2 a second), then inject.
    until(Duration::from_secs(30), || {
        (inbox
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, t, _)| t == "sensors/plc1/temperature")
            .count()
            >= 25)
            .then_some(())
    });
    let mut s = TcpStream::connect(("127.0.0.1", sim_port)).unwrap();
    let req = modbus_adapter::frame::Frame {
        transaction: 1,
        unit: 1,
        pdu: vec![6, 0, 100, 0, 3],
    };
    s.write_all(&req.encode()).unwrap();
    let Some(alarm) = until(Duration::from_secs(30), || {
        inbox
            .lock()
            .unwrap()
            .iter()
            .find(|(_, t, _)| t == "edge/alarms")
            .map(|(_, _, v)| v.clone())
    }) else {
        fail("no alarm for the injected anomaly")
    };
    assert_eq!(alarm["topic"], "sensors/plc1/temperature", "{alarm}");

    // Failure isolation: the edge-app's process killed (SIGKILL, as a crash)
    // comes back per its auto_recovery; the others untouched, and no message
    // of the adapter lost meanwhile.
    let before = pids(apip);
    let mark = Instant::now();
    let (code, body) = api(
        apip,
        "PUT",
        "/containers/edge-app",
        r#"{"action":"kill","signal":9}"#,
    );
    assert_eq!(code, 200, "{body}");
    let Some(after) = until(Duration::from_secs(60), || {
        let p = pids(apip);
        (pid_of(&p, "edge-app") != pid_of(&before, "edge-app")
            && p.iter().any(|c| c.0 == "edge-app" && c.2 == "READY"))
        .then_some(p)
    }) else {
        fail("the edge-app did not come back READY")
    };
    for other in ["os", "mqtt-broker", "modbus-adapter"] {
        assert_eq!(
            pid_of(&after, other),
            pid_of(&before, other),
            "{other} restarted"
        );
    }
    std::thread::sleep(Duration::from_secs(3));
    let seqs: Vec<u64> = inbox
        .lock()
        .unwrap()
        .iter()
        .filter(|(at, t, _)| *at >= mark && t == "sensors/plc1/temperature")
        .filter_map(|(_, _, v)| v["seq"].as_u64())
        .collect();
    assert!(
        seqs.len() >= 4 && seqs.windows(2).all(|w| w[1] == w[0] + 1),
        "{seqs:?}"
    );

    // OTA: a new edge-app configuration (its window) with pvr.
    let ws = d.join("ws");
    pvr(
        d,
        &[
            "--token",
            "tok",
            "clone",
            &format!("http://127.0.0.1:{apip}"),
            ws.to_str().unwrap(),
        ],
    );
    let conf = ws.join("_config/edge-app/etc/edge-app/edge.toml");
    fs::write(
        &conf,
        fs::read_to_string(&conf)
            .unwrap()
            .replace("window_s = 5", "window_s = 3"),
    )
    .unwrap();
    let before = pids(apip);
    let posted = commit_post_run(&ws, apip, "edge-app: 3 s windows", "locals/ota");
    let json_len = fs::metadata(ws.join(".pvr/json")).unwrap().len();
    let conf_len = fs::metadata(&conf).unwrap().len();
    assert!(
        posted.contains(&format!("sent {} bytes (1 of ", conf_len + json_len)),
        "only the changed object and the JSON: {posted}"
    );
    if until(Duration::from_secs(120), || {
        let (_, v) = api(apip, "GET", "/steps/locals/ota/progress", "");
        (v["status"] == "UPDATED" || v["status"] == "DONE").then_some(())
    })
    .is_none()
    {
        fail("locals/ota did not finish");
    }
    let after = pids(apip);
    assert_ne!(
        pid_of(&after, "edge-app"),
        pid_of(&before, "edge-app"),
        "edge-app restarted"
    );
    for other in ["os", "mqtt-broker", "modbus-adapter"] {
        assert_eq!(
            pid_of(&after, other),
            pid_of(&before, other),
            "{other} kept running"
        );
    }
    assert!(!console().contains("rebooting"), "no reboot");
    let mark = Instant::now();
    if until(Duration::from_secs(30), || {
        inbox
            .lock()
            .unwrap()
            .iter()
            .find(|(at, t, v)| {
                *at >= mark
                    && t == "edge/agg/sensors/plc1/temperature"
                    && v["end_ms"]
                        .as_u64()
                        .zip(v["start_ms"].as_u64())
                        .map(|(e, s)| e - s)
                        == Some(3000)
            })
            .map(|_| ())
    })
    .is_none()
    {
        fail("no 3 s aggregate after the update");
    }

    // A bad edge-app (never READY: it cannot reach the control socket) rolls back.
    fs::write(
        d.join("bad.json"),
        r#"{"Entrypoint": ["/usr/bin/edge-app", "--ctrl-socket", "/nowhere"]}"#,
    )
    .unwrap();
    pvr(
        &ws,
        &[
            "app",
            "update",
            "edge-app",
            "--from",
            d.join("rootfs/edge-app").to_str().unwrap(),
            "--arg-json",
            d.join("bad.json").to_str().unwrap(),
        ],
    );
    commit_post_run(&ws, apip, "never ready", "locals/bad");
    if until(Duration::from_secs(150), || {
        let (_, v) = api(apip, "GET", "/steps/locals/bad/progress", "");
        (v["status"] == "ERROR").then_some(())
    })
    .is_none()
    {
        fail("locals/bad was not rolled back");
    }
    if until(Duration::from_secs(60), || {
        let (_, v) = api(apip, "GET", "/device-meta", "");
        (v["pantavisor.revision"] == "locals/ota"
            && pids(apip)
                .iter()
                .any(|c| c.0 == "edge-app" && c.2 == "READY"))
        .then_some(())
    })
    .is_none()
    {
        fail("not back on locals/ota with a READY edge-app");
    }
    let mark = Instant::now();
    if until(Duration::from_secs(30), || {
        inbox
            .lock()
            .unwrap()
            .iter()
            .any(|(at, t, _)| *at >= mark && t == "edge/agg/sensors/plc1/temperature")
            .then_some(())
    })
    .is_none()
    {
        fail("the gateway stopped working after the rollback");
    }
}
