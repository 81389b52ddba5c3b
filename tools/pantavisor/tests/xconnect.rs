//! xconnect with real containers in appengine mode: the daemon plants each
//! required service's socket in the consumer's own namespace and proxies
//! to the provider's socket in the provider's namespace. The test plays
//! the programs on either end through those namespaces (its server binds
//! inside the provider's root, its client connects inside the consumer's),
//! except for D-Bus, where Debian's dbus-daemon runs in the provider and
//! dbus-send in the consumers. Needs root.

mod common;

use std::fs;
use std::io::{IoSlice, IoSliceMut, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::process::Command;
use std::time::Duration;

use common::*;
use nix::sys::socket::{recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags};
use pantavisor::xconnect::proxy::{connect_in, listen_in};
use serde_json::{json, Value};

/// A server socket at `path` inside container `pid`'s root.
fn serve_in(pid: i64, path: &str) -> UnixListener {
    let fd = listen_in(pid as i32, path).unwrap_or_else(|e| panic!("listen at {path}: {e}"));
    let l = UnixListener::from(fd);
    l.set_nonblocking(false).unwrap();
    l
}

/// A connection to `path` inside container `pid`'s root.
fn dial_in(pid: i64, path: &str) -> UnixStream {
    let fd = connect_in(pid as i32, path, None).unwrap_or_else(|e| panic!("connect {path}: {e}"));
    let s = UnixStream::from(fd);
    s.set_nonblocking(false).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

fn mesh_gateway() -> Gateway {
    let manifest = r#"
containers:
  broker: {rootfs: rootfs/broker, group: app, status_goal: READY, args: [/bin/sh, -c, "sleep 2; /usr/bin/pvcontrol signal ready; exec sleep 1000"]}
  app: {rootfs: rootfs/app, group: app, args: [/bin/sh, -c, "exec sleep 1000"]}
core: [broker, app]
"#;
    let g = gateway(manifest, &["broker", "app"]);
    g.edit_state(|m, _| {
        m.insert(
            "broker/services.json".into(),
            json!({"#spec": "service-manifest-xconnect@1", "services": [
                {"name": "raw", "type": "unix", "socket": "/run/prov/raw.sock"},
                {"name": "metrics", "type": "rest", "socket": "/run/prov/api.sock"}]}),
        );
        m["app/run.json"]["services"] = json!({"required": [
            {"name": "raw", "type": "unix", "target": "/run/pv/services/raw.sock"},
            {"name": "metrics", "type": "rest", "target": "/run/metrics.sock", "role": "reader"}]});
    });
    g
}

#[test]
fn a_held_consumer_reaches_unix_and_rest_services_and_survives_a_provider_restart() {
    let mut g = mesh_gateway();
    g.start();
    g.wait_status("broker", "STARTED", Duration::from_secs(10));
    // The app waits for the broker's READY, and says so.
    let app = g.container("app");
    assert_eq!(app["status"], "INSTALLED", "{app}");
    let held = app["held"].as_str().unwrap_or_default();
    assert!(
        held.contains("service \"raw\" of broker") && held.contains("goal READY"),
        "{app}"
    );
    g.wait_status("broker", "READY", Duration::from_secs(10));
    g.wait_status("app", "STARTED", Duration::from_secs(10));
    let log = g.daemon_log();
    assert!(
        log_times(&log, "app: started")[0] >= log_times(&log, "broker: READY")[0],
        "{log}"
    );
    assert!(log.contains("app: held: waiting for service"), "{log}");
    let (broker, app) = (g.pid("broker"), g.pid("app"));

    // The graph, in Pantavisor's shape.
    let (code, graph) = g.request("GET", "/xconnect-graph", "");
    assert_eq!(code, 200);
    let links = graph.as_array().unwrap();
    assert_eq!(links.len(), 2, "{graph}");
    let raw = links.iter().find(|l| l["name"] == "raw").unwrap();
    assert_eq!(
        raw,
        &json!({"consumer": "app", "consumer_pid": app, "provider": "broker",
                "provider_pid": broker, "name": "raw", "type": "unix", "role": "any",
                "interface": "unix", "target": "/run/pv/services/raw.sock",
                "socket": "/run/prov/raw.sock"})
    );
    let metrics = links.iter().find(|l| l["name"] == "metrics").unwrap();
    assert_eq!(
        (&metrics["type"], &metrics["role"]),
        (&json!("rest"), &json!("reader"))
    );

    // unix: a message and a passed descriptor arrive.
    let server = serve_in(broker, "/run/prov/raw.sock");
    let provider = std::thread::spawn(move || {
        let (conn, _) = server.accept().unwrap();
        let mut data = [0u8; 64];
        let mut space = nix::cmsg_space!([RawFd; 4]);
        let mut iov = [IoSliceMut::new(&mut data)];
        let m = recvmsg::<()>(
            conn.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::empty(),
        )
        .unwrap();
        let n = m.bytes;
        let fd = m
            .cmsgs()
            .unwrap()
            .find_map(|c| match c {
                ControlMessageOwned::ScmRights(f) => f.first().copied(),
                _ => None,
            })
            .expect("a descriptor came with the message");
        let msg = String::from_utf8_lossy(&data[..n]).to_string();
        // SAFETY: received just now, owned by nobody else.
        let mut file = fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) });
        let mut content = String::new();
        file.read_to_string(&mut content).unwrap();
        (&conn)
            .write_all(format!("{msg} + {content}").as_bytes())
            .unwrap();
        server
    });
    // The consumer's socket is in its own /run (a tmpfs of its namespace).
    assert!(!g.run_dir.join("containers/app/rootfs/run/pv").exists());
    let client = dial_in(app, "/run/pv/services/raw.sock");
    let passed = tempfile::NamedTempFile::new().unwrap();
    fs::write(passed.path(), "fd content").unwrap();
    let f = fs::File::open(passed.path()).unwrap();
    sendmsg::<()>(
        client.as_raw_fd(),
        &[IoSlice::new(b"hello")],
        &[ControlMessage::ScmRights(&[f.as_raw_fd()])],
        MsgFlags::empty(),
        None,
    )
    .unwrap();
    let mut reply = String::new();
    (&client).read_to_string(&mut reply).unwrap();
    assert_eq!(reply, "hello + fd content");
    drop(provider.join().unwrap());

    // rest: the provider sees who calls; a forged header is replaced.
    let api = serve_in(broker, "/run/prov/api.sock");
    let provider = std::thread::spawn(move || {
        let (mut conn, _) = api.accept().unwrap();
        let mut head = Vec::new();
        let mut b = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            conn.read_exact(&mut b).unwrap();
            head.push(b[0]);
        }
        conn.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
            .unwrap();
        String::from_utf8(head).unwrap()
    });
    let mut c = dial_in(app, "/run/metrics.sock");
    c.write_all(
        b"GET /metrics HTTP/1.1\r\nHost: broker\r\nX-PV-Client: broker\r\nX-PV-Role: admin\r\n\r\n",
    )
    .unwrap();
    let mut reply = String::new();
    c.read_to_string(&mut reply).unwrap();
    assert!(
        reply.starts_with("HTTP/1.1 200 OK") && reply.ends_with("ok"),
        "{reply}"
    );
    let head = provider.join().unwrap();
    assert!(head.contains("X-PV-Client: app\r\n"), "{head}");
    assert!(head.contains("X-PV-Role: reader\r\n"), "{head}");
    assert!(
        !head.contains("admin") && !head.contains("X-PV-Client: broker"),
        "{head}"
    );

    // The provider restarts: meanwhile a connection closes at once; after
    // it, the same socket in the consumer reaches the new provider.
    let (code, _) = g.request("PUT", "/containers/broker", r#"{"action":"stop"}"#);
    assert_eq!(code, 200);
    g.wait_status("broker", "STOPPED", Duration::from_secs(10));
    let mut c = dial_in(app, "/run/pv/services/raw.sock");
    let mut buf = Vec::new();
    assert_eq!(
        c.read_to_end(&mut buf).unwrap(),
        0,
        "closed while no provider runs"
    );
    let (code, _) = g.request("PUT", "/containers/broker", r#"{"action":"start"}"#);
    assert_eq!(code, 200);
    wait_for(Duration::from_secs(10), || {
        (g.pid("broker") > 0 && g.pid("broker") != broker).then_some(())
    })
    .expect("broker back");
    let server = serve_in(g.pid("broker"), "/run/prov/raw.sock");
    let provider = std::thread::spawn(move || {
        let (mut conn, _) = server.accept().unwrap();
        let mut b = [0u8; 5];
        conn.read_exact(&mut b).unwrap();
        conn.write_all(&b).unwrap();
    });
    let mut c = dial_in(app, "/run/pv/services/raw.sock");
    c.write_all(b"again").unwrap();
    let mut b = [0u8; 5];
    c.read_exact(&mut b).unwrap();
    assert_eq!(&b, b"again");
    provider.join().unwrap();
    assert_eq!(g.pid("app"), app, "the consumer kept running throughout");
    assert_eq!(g.stop(), 0);
}

#[test]
fn a_required_service_nobody_provides_is_wontgo_naming_the_key() {
    let mut g = mesh_gateway();
    g.start();
    g.wait_status("app", "STARTED", Duration::from_secs(20));
    let mut state = g.step("0");
    state["app/run.json"]["services"]["required"][0]["name"] = json!("amqp");
    // Refused as it is put on the device, before anything of it runs.
    let (code, body) = g.install("orphan", &state);
    assert_eq!(code, 422, "{body}");
    let msg = body["Error"].as_str().unwrap_or_default();
    assert!(
        msg.starts_with("WONTGO")
            && msg.contains(
                "app/run.json: services.required: \"amqp\": no container of the state provides it"
            ),
        "{msg}"
    );
    // A type this daemon does not mediate is refused by name too.
    let mut state = g.step("0");
    state["broker/services.json"]["services"][0]["type"] = json!("wayland");
    let (code, body) = g.install("wayland", &state);
    assert_eq!(code, 422, "{body}");
    let msg = body["Error"].as_str().unwrap_or_default();
    assert!(
        msg.contains("broker/services.json: services: \"raw\": type \"wayland\" is not supported"),
        "{msg}"
    );
    assert_eq!(g.stop(), 0);
}

const BUS_CONF: &str = r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path=/run/dbus/system_bus_socket</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <deny own="*"/>
    <allow send_destination="org.freedesktop.DBus"/>
    <allow receive_type="method_return"/>
    <allow receive_type="error"/>
    <allow receive_type="signal"/>
    <deny send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus" send_member="GetId"/>
  </policy>
  <policy user="operator">
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus" send_member="GetId"/>
  </policy>
</busconfig>
"#;

/// `dbus-send` run inside container `pid`'s namespaces: its output, or
/// its error.
fn dbus_send_in(pid: i64) -> Result<String, String> {
    let out = Command::new("nsenter")
        .args([
            "-t",
            &pid.to_string(),
            "-m",
            "-u",
            "-i",
            "-n",
            "-p",
            "-r",
            "-w",
            "--",
        ])
        .args([
            "/usr/bin/dbus-send",
            "--system",
            "--print-reply",
            "--dest=org.freedesktop.DBus",
            "/org/freedesktop/DBus",
            "org.freedesktop.DBus.GetId",
        ])
        .env(
            "DBUS_SYSTEM_BUS_ADDRESS",
            "unix:path=/run/dbus/system_bus_socket",
        )
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() {
        Ok(text)
    } else {
        Err(text)
    }
}

#[test]
fn dbus_callers_reach_the_providers_bus_as_their_roles_uid_and_its_policy_decides() {
    let manifest = r#"
containers:
  bus: {rootfs: rootfs/bus, args: [/bin/sh, -c, "mkdir -p /run/dbus; exec /usr/bin/dbus-daemon --config-file=/etc/bus.conf --nofork --nopidfile"]}
  ops: {rootfs: rootfs/ops, args: [/bin/sh, -c, "exec sleep 1000"]}
  guest: {rootfs: rootfs/guest, args: [/bin/sh, -c, "exec sleep 1000"]}
core: [bus, ops, guest]
"#;
    let mut g = gateway_in(manifest, &["bus", "ops", "guest"], |dir| {
        let rootfs = dir.join("rootfs");
        copy_program(&rootfs.join("bus"), "/usr/bin/dbus-daemon");
        fs::write(rootfs.join("bus/etc/bus.conf"), BUS_CONF).unwrap();
        fs::write(
            rootfs.join("bus/etc/passwd"),
            "root:x:0:0:root:/:/bin/sh\noperator:x:1001:1001::/:/bin/false\nnobody:x:65534:65534::/:/bin/false\n",
        )
        .unwrap();
        fs::write(
            rootfs.join("bus/etc/group"),
            "root:x:0:\noperator:x:1001:\nnogroup:x:65534:\n",
        )
        .unwrap();
        for c in ["bus", "ops", "guest"] {
            fs::write(
                rootfs.join(c).join("etc/machine-id"),
                "5f0e4bd1a6e5449f8d1b3b8c6f5c4e21\n",
            )
            .unwrap();
        }
        for c in ["ops", "guest"] {
            copy_program(&rootfs.join(c), "/usr/bin/dbus-send");
        }
    });
    g.edit_state(|m, _| {
        m.insert(
            "bus/services.json".into(),
            json!({"#spec": "service-manifest-xconnect@1", "services": [
                {"name": "system-bus", "type": "dbus", "socket": "/run/dbus/system_bus_socket"}]}),
        );
        for (c, role) in [("ops", "operator"), ("guest", "guest")] {
            m[&format!("{c}/run.json")]["services"] = json!({"required": [
                {"name": "system-bus", "type": "dbus", "role": role,
                 "target": "/run/dbus/system_bus_socket"}]});
        }
    });
    g.start();
    for c in ["bus", "ops", "guest"] {
        g.wait_status(c, "STARTED", Duration::from_secs(20));
    }
    // The operator role is UID 1001 in the bus's /etc/passwd: allowed.
    let ok = wait_for(Duration::from_secs(15), || dbus_send_in(g.pid("ops")).ok()).unwrap_or_else(
        || {
            panic!(
                "dbus-send as operator: {:?}\n{}\n{}",
                dbus_send_in(g.pid("ops")),
                g.container_log("bus"),
                g.daemon_log()
            )
        },
    );
    assert!(
        ok.contains("method return") && ok.contains("string"),
        "{ok}"
    );
    // A role the bus does not know is nobody: its policy denies the call.
    let denied = dbus_send_in(g.pid("guest")).expect_err("guest must be denied");
    assert!(
        denied.contains("AccessDenied") || denied.contains("rejected"),
        "{denied}"
    );
    let graph: Value = g.request("GET", "/xconnect-graph", "").1;
    assert_eq!(graph.as_array().unwrap().len(), 2, "{graph}");
    assert_eq!(g.stop(), 0);
}
