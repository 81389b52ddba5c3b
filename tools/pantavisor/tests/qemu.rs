//! A real kernel boots our daemon as PID 1: Debian's linux-image-amd64 and
//! its modules (ci/mkimage), our initramfs (a static pantavisor as /init),
//! a GPT disk whose ext4 data partition holds a pvroot with a busybox
//! container. The guest reaches every group's goal; ctrl-alt-del stops the
//! containers and powers off; the container's output is on the data
//! partition afterwards. KVM when it works, TCG otherwise (said in the
//! output). Needs root; ci/test installs qemu-system-x86 and the image tools.

mod guest;

use guest::*;
use std::fs;
use std::process::Command;
use std::time::{Duration, Instant};

#[test]
fn boots_as_pid1_runs_the_revision_and_powers_off() {
    let tmp = bsp_dir();
    let d = tmp.path();
    // A container from Debian's static busybox.
    busybox_rootfs(&d.join("rootfs/os"), &["sh", "sleep", "echo"]);
    gateway_manifest(
        d,
        r#"containers:
  os:
    rootfs: rootfs/os
    group: root
    host_network: true
    entrypoint: [/bin/sh, -c, "echo hello from the guest; exec sleep 100000"]
core: [os]
squashfs: {comp: zstd, mtime: 1700000000}
"#,
    );
    let disk = d.join("disk.img");
    compose_disk(d, &disk, "512");

    // KVM if the guest kernel gets going under it, else TCG.
    let mut guest = None;
    if fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok()
    {
        let mut g = Guest::boot(d, &disk, true);
        if g.wait_for("pantavisor:", Duration::from_secs(10)) {
            guest = Some(g);
        } else {
            eprintln!("KVM opens but the guest did not reach /init in 10 s here; using TCG");
            g.kill();
        }
    }
    let mut guest = guest.unwrap_or_else(|| Guest::boot(d, &disk, false));
    eprintln!("booting with {}", if guest.kvm { "KVM" } else { "TCG" });
    let reached = guest.wait_for(
        "group app: every container reached its goal",
        Duration::from_secs(120),
    );
    let console = guest.console();
    if !reached {
        guest.kill();
        panic!("the revision did not reach its goals:\n{console}");
    }
    for line in [
        "storage /dev/vda1 mounted",
        "bsp/modules.squashfs of revision 0",
        "os: started",
    ] {
        assert!(console.contains(line), "{line}:\n{console}");
    }
    // The revision's own modules: what its module tree lists (overlay, for
    // the containers) and the driver of QEMU's default network card (e1000),
    // which nothing in the initramfs claimed, found by its PCI alias.
    let modules = console
        .lines()
        .find(|l| l.contains("modules of revision 0:"))
        .unwrap_or_else(|| panic!("no module line:\n{console}"));
    eprintln!("{modules}");
    assert!(modules.contains("listed [overlay dm_verity]"), "{modules}");
    let loaded = modules.split("loaded [").nth(1).unwrap_or("");
    assert!(
        loaded.contains("overlay") && loaded.contains("e1000"),
        "{modules}"
    );
    // ctrl-alt-del: SIGINT to PID 1, containers stopped, power off.
    guest.monitor("sendkey ctrl-alt-delete");
    let start = Instant::now();
    let status = loop {
        if let Ok(Some(s)) = guest.child.try_wait() {
            break Some(s);
        }
        if start.elapsed() > Duration::from_secs(60) {
            break None;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let console = guest.console();
    if status.is_none() {
        guest.kill();
        panic!("the guest did not power off:\n{console}");
    }
    assert!(
        console.contains("stopping: containers in reverse group order")
            && console.contains("stopped; powering off"),
        "{console}"
    );
    // The container's output, on the data partition (read without mounting).
    let out = Command::new("debugfs")
        .arg("-R")
        .arg("cat /logs/0/os/stdout.log")
        .arg(format!("{}?offset=1048576", disk.display()))
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&out.stdout);
    assert!(
        log.contains("hello from the guest"),
        "{log}{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Boot `disk` (KVM when the guest gets going under it, else TCG).
fn boot_any(d: &std::path::Path, disk: &std::path::Path) -> Guest {
    if fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok()
    {
        let mut g = Guest::boot(d, disk, true);
        if g.wait_for("pantavisor:", Duration::from_secs(10)) {
            return g;
        }
        g.kill();
    }
    Guest::boot(d, disk, false)
}

#[test]
fn a_dm_verity_container_runs_and_one_flipped_byte_fails_it_alone() {
    let tmp = bsp_dir();
    let d = tmp.path();
    for name in ["os", "vapp"] {
        busybox_rootfs(
            &d.join("rootfs").join(name),
            &["sh", "sleep", "echo", "cat"],
        );
    }
    fs::write(d.join("rootfs/vapp/secret.txt"), "read through dm-verity\n").unwrap();
    gateway_manifest(
        d,
        r#"containers:
  os:
    rootfs: rootfs/os
    group: root
    host_network: true
    entrypoint: [/bin/sh, -c, "echo os up; exec sleep 100000"]
  vapp:
    rootfs: rootfs/vapp
    group: app
    dm_verity: true
    entrypoint: [/bin/sh, -c, "cat /secret.txt; exec sleep 100000"]
core: [os, vapp]
squashfs: {comp: gzip, mtime: 1700000000}
"#,
    );
    let disk = d.join("disk.img");
    compose_disk(d, &disk, "256");
    let state: serde_json::Value =
        serde_json::from_slice(&fs::read(d.join("pvroot/trails/0/.pvr/json")).unwrap()).unwrap();
    assert_eq!(state["vapp/run.json"]["root-volume"], "dm:root.squashfs");

    // Intact: both run, vapp's root through the verity device.
    let mut guest = boot_any(d, &disk);
    let reached = guest.wait_for(
        "group app: every container reached its goal",
        Duration::from_secs(120),
    );
    let console = guest.console();
    guest.kill();
    assert!(reached, "the revision did not reach its goals:\n{console}");
    assert!(
        console.contains(
            "vapp: volume dm:root.squashfs mounted through dm-verity (pv--dmverity--vapp-root)"
        ),
        "{console}"
    );
    assert!(console.contains("vapp: started"), "{console}");

    // One byte flipped in the image's first block, past the squashfs
    // superblock (a plain mount would not notice): the verity device fails
    // the read, vapp does not start, os runs on. Objects under dm-verity are
    // not hashed whole at boot (lazy verification), so it gets that far.
    let id = state["vapp/root.squashfs"].as_str().unwrap();
    let object = d.join("pvroot/objects").join(id);
    let mut bytes = fs::read(&object).unwrap();
    bytes[2048] ^= 0x01;
    fs::write(&object, &bytes).unwrap();
    // The squashfs itself does not notice: plainly mounted (on the host),
    // the tampered image mounts and reads.
    let plain = d.join("plain");
    fs::create_dir_all(&plain).unwrap();
    run(Command::new("mount")
        .args(["-t", "squashfs", "-o", "loop,ro"])
        .arg(&object)
        .arg(&plain));
    let read = fs::read_to_string(plain.join("secret.txt"));
    run(Command::new("umount").arg(&plain));
    assert_eq!(read.unwrap(), "read through dm-verity\n");
    let tampered = d.join("tampered.img");
    disk_image(&d.join("pvroot"), &tampered, "256");
    let mut guest = boot_any(d, &tampered);
    let failed = guest.wait_for("pv--dmverity--vapp-root", Duration::from_secs(120))
        && guest.wait_for("os: started", Duration::from_secs(60));
    // Give the daemon a few restart attempts of vapp.
    std::thread::sleep(Duration::from_secs(5));
    let console = guest.console();
    guest.kill();
    assert!(failed, "{console}");
    assert!(!console.contains("vapp: started"), "{console}");
    assert!(
        !console.contains("vapp: volume dm:root.squashfs mounted"),
        "{console}"
    );
    let refusal = console
        .lines()
        .find(|l| l.contains("pv--dmverity--vapp-root") && l.contains("mount"))
        .unwrap_or_else(|| panic!("no mount failure line:\n{console}"));
    eprintln!("{refusal}");
    assert!(
        refusal.contains("EIO") || refusal.contains("Input/output error"),
        "{refusal}"
    );
}

/// Issue 19: a committed revision whose objects were changed on the disk is
/// refused when the device boots, and the device runs the factory revision.
#[test]
fn a_committed_revision_tampered_on_disk_is_refused_at_boot_and_the_device_falls_back() {
    let tmp = bsp_dir();
    let d = tmp.path();
    busybox_rootfs(&d.join("rootfs/os"), &["sh", "sleep", "echo"]);
    gateway_manifest(
        d,
        r#"containers:
  os:
    rootfs: rootfs/os
    group: root
    host_network: true
    entrypoint: [/bin/sh, -c, "echo os up; exec sleep 100000"]
core: [os]
squashfs: {comp: gzip, mtime: 1700000000}
"#,
    );
    run(Command::new(workspace_bin("pvcompose", "pvcompose"))
        .args(["pvroot", "--quiet", "--manifest"])
        .arg(d.join("gateway.yaml"))
        .arg("--out")
        .arg(d.join("pvroot")));
    // Revision 1, committed: revision 0 plus a file of its own.
    let pvroot = d.join("pvroot");
    let store = pvstate::ObjectStore::open(pvroot.join("objects")).unwrap();
    let marker = d.join("marker");
    fs::write(&marker, "revision 1\n".repeat(100)).unwrap();
    let (id, _) = store.adopt(&marker).unwrap();
    let mut state: serde_json::Value =
        serde_json::from_slice(&fs::read(pvroot.join("trails/0/.pvr/json")).unwrap()).unwrap();
    state["_config/os/etc/marker"] = serde_json::json!(id.to_string());
    let state = pvstate::State::parse(&serde_json::to_vec(&state).unwrap()).unwrap();
    fs::create_dir_all(pvroot.join("trails/1/.pvr")).unwrap();
    fs::write(pvroot.join("trails/1/.pvr/json"), state.to_canonical()).unwrap();
    fs::write(pvroot.join("boot/pv.env"), "pv_rev=1\npv_try=\n").unwrap();
    let boot_and_read = |image: &std::path::Path| {
        disk_image(&pvroot, image, "256");
        let mut guest = boot_any(d, image);
        let up = guest.wait_for("os: started", Duration::from_secs(120));
        let console = guest.console();
        guest.kill();
        assert!(up, "{console}");
        console
    };
    // Intact, it boots.
    let console = boot_and_read(&d.join("intact.img"));
    assert!(console.contains("revision 1: 1 containers"), "{console}");

    // One flipped byte in the object only revision 1 has: refused at boot,
    // marked ERROR, revision 0 runs.
    let object = pvroot.join("objects").join(id.to_string());
    let mut bytes = fs::read(&object).unwrap();
    bytes[10] ^= 0x20;
    fs::write(&object, bytes).unwrap();
    let image = d.join("tampered.img");
    let console = boot_and_read(&image);
    let refused = console
        .lines()
        .find(|l| l.contains("revision 1: Refused at boot:"))
        .unwrap_or_else(|| panic!("not refused:\n{console}"));
    eprintln!("{refused}");
    assert!(refused.contains("_config/os/etc/marker"), "{refused}");
    assert!(console.contains("revision 0: 1 containers"), "{console}");
    assert!(!console.contains("revision 1: 1 containers"), "{console}");
    // Read as the next boot would: mounted, its journal replayed (debugfs
    // reads the file system without the journal).
    let mnt = d.join("mnt");
    fs::create_dir_all(&mnt).unwrap();
    run(Command::new("mount")
        .args(["-t", "ext4", "-o", "loop,offset=1048576"])
        .arg(&image)
        .arg(&mnt));
    let progress = fs::read_to_string(mnt.join("trails/1/.pv/progress"));
    run(Command::new("umount").arg(&mnt));
    let progress = progress.expect("revision 1's progress was written");
    assert!(
        progress.contains("\"ERROR\"") && progress.contains("Refused at boot"),
        "{progress}"
    );
}

/// Issue 16, hardware watchdog: QEMU's i6300esb (the revision's module tree
/// has its driver; the daemon loads drivers for unclaimed devices), armed
/// from start (`PV_WDT_MODE=always` on the kernel command line, 10 s). A
/// clean power-off stops it (magic close) and takes longer than its timeout
/// without a reset; a hung event loop (the debug-only DEBUG_HANG command)
/// resets the guest within the timeout.
#[test]
fn a_hung_loop_is_reset_by_the_watchdog_and_a_clean_power_off_is_not() {
    let tmp = bsp_dir();
    let d = tmp.path();
    let os = d.join("rootfs/os");
    busybox_rootfs(&os, &["sh", "sleep", "echo", "ip", "cat", "grep", "udhcpc"]);
    fs::create_dir_all(os.join("etc")).unwrap();
    fs::copy(
        root().join("ci/lib/udhcpc.script"),
        os.join("etc/udhcpc.script"),
    )
    .unwrap();
    // The app ignores SIGTERM: stopping it takes stop.timeout (14 s), longer
    // than the watchdog's 10 s.
    busybox_rootfs(&d.join("rootfs/app"), &["sh", "sleep"]);
    gateway_manifest(
        d,
        r#"containers:
  os:
    rootfs: rootfs/os
    group: root
    host_network: true
    entrypoint: [/bin/sh, -c, "ip link set lo up; exec udhcpc -f -i eth0 -s /etc/udhcpc.script -t 10 -T 1 -A 2"]
  app:
    rootfs: rootfs/app
    group: app
    entrypoint: [/bin/sh, -c, "trap '' TERM; while true; do sleep 1; done"]
core: [os, app]
config:
  remote.listen: "0.0.0.0:12368"
  remote.token: tok
  stop.timeout: "14"
squashfs: {comp: gzip, mtime: 1700000000}
"#,
    );
    let disk = d.join("disk.img");
    compose_disk(d, &disk, "256");
    let boot = |port: u16| {
        let fwd = format!("user,id=n0,hostfwd=tcp:127.0.0.1:{port}-:12368");
        Guest::boot_cmdline(
            d,
            &disk,
            false,
            &[
                "-no-reboot",
                "-netdev",
                &fwd,
                "-device",
                "virtio-net-pci,netdev=n0",
                "-device",
                "i6300esb",
                "-action",
                "watchdog=reset",
            ],
            "PV_WDT_MODE=always PV_WDT_TIMEOUT=10 PV_DEBUG_HANG_COMMAND=1",
        )
    };
    let exited_within = |g: &mut Guest, within: Duration| -> Option<Duration> {
        let start = Instant::now();
        while start.elapsed() < within {
            if let Ok(Some(_)) = g.child.try_wait() {
                return Some(start.elapsed());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        None
    };

    // A clean power-off, slower than the timeout: no reset.
    let port = free_port();
    let mut guest = boot(port);
    if !guest.wait_for(
        "group app: every container reached its goal",
        Duration::from_secs(120),
    ) {
        let c = guest.console();
        guest.kill();
        panic!("did not come up:\n{c}");
    }
    let console = guest.console();
    assert!(
        console.contains("watchdog: /dev/watchdog armed, 10 s"),
        "{console}"
    );
    guest.monitor("sendkey ctrl-alt-delete");
    let took = exited_within(&mut guest, Duration::from_secs(60));
    let console = guest.console();
    guest.kill();
    let took = took.unwrap_or_else(|| panic!("no power-off:\n{console}"));
    assert!(took > Duration::from_secs(10), "the stop took {took:?}");
    assert!(
        console.contains("watchdog: stopped for the power-off")
            && console.contains("stopped; powering off"),
        "{console}"
    );
    eprintln!("clean power-off after {took:?}, past the 10 s timeout, no reset");

    // A hung loop: reset (QEMU exits: -no-reboot) within the timeout.
    let port = free_port();
    let mut guest = boot(port);
    if wait_remote(port, "/device-meta", Duration::from_secs(120), |_| true).is_none() {
        let c = guest.console();
        guest.kill();
        panic!("remote API did not come up:\n{c}");
    }
    // The request never gets an answer: sent from a thread.
    std::thread::spawn(move || api(port, "POST", "/commands", r#"{"op":"DEBUG_HANG"}"#));
    let took = exited_within(&mut guest, Duration::from_secs(40));
    let console = guest.console();
    guest.kill();
    let took = took.unwrap_or_else(|| panic!("the guest was not reset:\n{console}"));
    assert!(
        console.contains("DEBUG_HANG: the event loop stops turning now"),
        "{console}"
    );
    assert!(!console.contains("powering off"), "{console}");
    assert!(took < Duration::from_secs(25), "reset after {took:?}");
    eprintln!("hung loop reset {took:?} after the command");
}

/// Wait up to `secs` for revision `rev`'s progress to be `status`; else
/// fail with `what` and the console. Returns the progress.
fn wait_step(
    guest: &mut Guest,
    port: u16,
    rev: &str,
    status: &str,
    secs: u64,
    what: &str,
) -> serde_json::Value {
    match wait_remote(
        port,
        &format!("/steps/{rev}/progress"),
        Duration::from_secs(secs),
        |v| v["status"] == status,
    ) {
        Some(v) => v,
        None => fail(guest, what),
    }
}

fn wait_remote(
    port: u16,
    path: &str,
    within: Duration,
    f: impl Fn(&serde_json::Value) -> bool,
) -> Option<serde_json::Value> {
    let start = Instant::now();
    while start.elapsed() < within {
        let (code, v) = api(port, "GET", path, "");
        if code == 200 && f(&v) {
            return Some(v);
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    None
}

#[test]
fn a_reboot_transition_boots_the_try_and_a_failed_try_falls_back() {
    let tmp = bsp_dir();
    let d = tmp.path();
    let os = d.join("rootfs/os");
    busybox_rootfs(&os, &["sh", "sleep", "echo", "ip", "cat", "grep", "udhcpc"]);
    fs::create_dir_all(os.join("etc")).unwrap();
    fs::copy(
        root().join("ci/lib/udhcpc.script"),
        os.join("etc/udhcpc.script"),
    )
    .unwrap();
    fs::write(os.join("etc/version"), "1\n").unwrap();
    // The os container brings up QEMU's user network with DHCP.
    gateway_manifest(
        d,
        r#"containers:
  os:
    rootfs: rootfs/os
    group: root
    restart_policy: system
    host_network: true
    entrypoint: [/bin/sh, -c, "ip link set lo up; echo version $(cat /etc/version); exec udhcpc -f -i eth0 -s /etc/udhcpc.script -t 10 -T 1 -A 2"]
core: [os]
config:
  remote.listen: "0.0.0.0:12368"
  remote.token: tok
  update.commit_delay: "2"
  update.goals_timeout: "30"
squashfs: {comp: zstd, mtime: 1700000000}
"#,
    );
    // The daemon reads its configuration from the data partition.
    let disk = d.join("disk.img");
    compose_disk(d, &disk, "768");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let fwd = format!("user,id=n0,hostfwd=tcp:127.0.0.1:{port}-:12368");
    let mut guest = Guest::boot_with(
        d,
        &disk,
        false,
        &["-netdev", &fwd, "-device", "virtio-net-pci,netdev=n0"],
    );
    if wait_remote(port, "/device-meta", Duration::from_secs(120), |v| {
        v["pantavisor.revision"] == "0"
    })
    .is_none()
    {
        fail(&mut guest, "the remote API did not come up on revision 0");
    }
    // Defect: /buildinfo said "appengine" in embedded mode too.
    let (code, info) = api(port, "GET", "/buildinfo", "");
    if (code, info["mode"].as_str()) != (200, Some("embedded")) {
        fail(&mut guest, &format!("/buildinfo as PID 1: {code} {info}"));
    }
    // A new os (restart_policy system): a reboot transition.
    let ws = clone_remote(d, port);
    fs::write(os.join("etc/version"), "2\n").unwrap();
    pvr(
        &ws,
        &[
            "app",
            "update",
            "os",
            "--from",
            os.to_str().unwrap(),
            "--mtime",
            "1700000000",
            "--comp",
            "zstd",
        ],
    );
    commit_post_run(&ws, port, "os 2", "locals/r1");
    wait_step(
        &mut guest,
        port,
        "locals/r1",
        "DONE",
        180,
        "locals/r1 was not committed after its reboot",
    );
    let console = guest.console();
    assert!(
        console.contains("rebooting (revision locals/r1 needs a reboot)"),
        "{console}"
    );
    // A try whose os dies at once: the device falls back to locals/r1.
    fs::write(
        d.join("bad-args.json"),
        r#"{"Entrypoint": ["/bin/sh", "-c", "echo broken; exit 3"]}"#,
    )
    .unwrap();
    pvr(
        &ws,
        &[
            "app",
            "update",
            "os",
            "--from",
            os.to_str().unwrap(),
            "--arg-json",
            d.join("bad-args.json").to_str().unwrap(),
            "--mtime",
            "1700000000",
        ],
    );
    commit_post_run(&ws, port, "broken os", "locals/r2");
    wait_step(
        &mut guest,
        port,
        "locals/r2",
        "ERROR",
        240,
        "locals/r2 did not end in ERROR",
    );
    if wait_remote(port, "/device-meta", Duration::from_secs(180), |v| {
        v["pantavisor.revision"] == "locals/r1"
    })
    .is_none()
    {
        fail(&mut guest, "the device is not back on locals/r1");
    }
    guest.kill();
}

/// The kernel command line of the boot-flow tests' disks.
const BASE_CMDLINE: &str = "console=ttyS0 pv_storage=LABEL=pvdata panic=-1 quiet";

/// `d/pvroot`: one container, os, on QEMU's user network (DHCP), the
/// remote API (token `tok`), quick commits, and `bootloader`.
fn networked_pvroot(d: &std::path::Path, bootloader: &str) {
    let os = d.join("rootfs/os");
    busybox_rootfs(&os, &["sh", "sleep", "echo", "ip", "cat", "udhcpc"]);
    fs::create_dir_all(os.join("etc")).unwrap();
    fs::copy(
        root().join("ci/lib/udhcpc.script"),
        os.join("etc/udhcpc.script"),
    )
    .unwrap();
    gateway_manifest(
        d,
        &format!(
            r#"containers:
  os:
    rootfs: rootfs/os
    group: root
    host_network: true
    entrypoint: [/bin/sh, -c, "ip link set lo up; exec udhcpc -f -i eth0 -s /etc/udhcpc.script -t 10 -T 1 -A 2"]
core: [os]
config:
  bootloader: "{bootloader}"
  remote.listen: "0.0.0.0:12368"
  remote.token: tok
  update.commit_delay: "2"
  update.goals_timeout: "30"
squashfs: {{comp: zstd, mtime: 1700000000}}
"#
        ),
    );
    run(Command::new(workspace_bin("pvcompose", "pvcompose"))
        .args(["pvroot", "--quiet", "--manifest"])
        .arg(d.join("gateway.yaml"))
        .arg("--out")
        .arg(d.join("pvroot")));
}

/// Waits for the guest to end (QEMU runs with -no-reboot): Some(true) when
/// it rebooted with the Raspberry Pi tryboot flag (the kernel's "Restarting
/// system with command '0 tryboot'"), Some(false) for a plain reboot.
fn rebooted(guest: &mut Guest, within: Duration) -> Option<bool> {
    let start = Instant::now();
    while start.elapsed() < within {
        if let Ok(Some(_)) = guest.child.try_wait() {
            let console = guest.console();
            return console
                .contains("Restarting system")
                .then(|| console.contains("Restarting system with command '0 tryboot'"));
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    None
}

#[test]
fn a_bsp_update_boots_from_the_other_partition_by_tryboot_and_a_kernel_that_cannot_start_falls_back(
) {
    let tmp = bsp_dir();
    let d = tmp.path();
    networked_pvroot(d, "rpi-tryboot:/dev/vda1:2,3");
    let disk = d.join("disk.img");
    run(Command::new("bash")
        .arg(root().join("ci/mkimage"))
        .arg("rpi-disk")
        .arg(d.join("pvroot"))
        .arg(&disk)
        .args(["768", BASE_CMDLINE]));
    let fw = Firmware::new(&disk);
    let port = free_port();
    let fwd = format!("user,id=n0,hostfwd=tcp:127.0.0.1:{port}-:12368");
    let net = [
        "-netdev",
        fwd.as_str(),
        "-device",
        "virtio-net-pci,netdev=n0",
    ];
    let (mut guest, part) = fw.boot(d, false, &net);
    assert_eq!(part, 2, "the factory image boots partition A");
    if wait_remote(port, "/device-meta", Duration::from_secs(120), |v| {
        v["pantavisor.revision"] == "0"
    })
    .is_none()
    {
        fail(&mut guest, "the remote API did not come up on revision 0");
    }
    // A new BSP (its own command line): staged on partition 3, tried by a
    // reboot with the tryboot flag, committed by autoboot.txt.
    let ws = clone_remote(d, port);
    fs::write(
        ws.join("bsp/cmdline.txt"),
        format!("{BASE_CMDLINE} pvbsp=2\n"),
    )
    .unwrap();
    commit_post_run(&ws, port, "bsp 2", "locals/r1");
    match rebooted(&mut guest, Duration::from_secs(180)) {
        Some(true) => {}
        other => fail(&mut guest, &format!("no reboot with tryboot: {other:?}")),
    }
    assert!(fw
        .read(3, "cmdline.txt")
        .unwrap()
        .contains("pvbsp=2 pv_rpi_part=3"));
    let (mut guest, part) = fw.boot(d, true, &net);
    assert_eq!(part, 3, "tryboot takes partition B");
    wait_step(
        &mut guest,
        port,
        "locals/r1",
        "DONE",
        180,
        "locals/r1 was not committed after its tryboot",
    );
    assert_eq!(fw.partition(false), 3, "the commit switched autoboot.txt");
    // A plain reboot now boots partition 3 by itself.
    let (code, body) = api(
        port,
        "POST",
        "/commands",
        r#"{"op":"REBOOT_DEVICE","payload":"test"}"#,
    );
    assert_eq!(code, 200, "{body}");
    match rebooted(&mut guest, Duration::from_secs(120)) {
        Some(false) => {}
        other => fail(&mut guest, &format!("no plain reboot: {other:?}")),
    }
    let (mut guest, part) = fw.boot(d, false, &net);
    assert_eq!(part, 3);
    if wait_remote(port, "/device-meta", Duration::from_secs(120), |v| {
        v["pantavisor.revision"] == "locals/r1"
    })
    .is_none()
    {
        fail(&mut guest, "partition 3 did not come up on locals/r1");
    }
    // A BSP whose kernel cannot start: staged on partition 2, tried, and
    // the board comes back on partition 3 (the tryboot flag is one-shot).
    let linux = bsp_file(&ws, "linux");
    fs::write(ws.join("bsp").join(&linux), vec![0x5a; 1 << 20]).unwrap();
    commit_post_run(&ws, port, "broken kernel", "locals/r2");
    match rebooted(&mut guest, Duration::from_secs(180)) {
        Some(true) => {}
        other => fail(&mut guest, &format!("no reboot with tryboot: {other:?}")),
    }
    let staged = d.join("staged-vmlinuz");
    fw.copy_out(2, &linux, &staged);
    assert!(
        fs::read(&staged).unwrap() == fs::read(ws.join("bsp").join(&linux)).unwrap(),
        "partition 2 does not hold the new kernel: {:?}",
        fw.read(2, "pv-bsp-files.txt")
    );
    let (mut bad, part) = fw.boot(d, true, &net);
    assert_eq!(part, 2);
    // QEMU cannot load it; on a board the watchdog resets a dead kernel.
    if bad.wait_for("pantavisor:", Duration::from_secs(30)) {
        fail(&mut bad, "the broken kernel booted");
    }
    bad.kill();
    let (mut guest, part) = fw.boot(d, false, &net);
    assert_eq!(
        part, 3,
        "after the failed try the firmware boots partition 3"
    );
    let progress = wait_step(
        &mut guest,
        port,
        "locals/r2",
        "ERROR",
        180,
        "locals/r2 was not reported rolled back",
    );
    let msg = progress["status-msg"].as_str().unwrap_or_default();
    assert!(msg.contains("boot partition 2 did not boot"), "{progress}");
    let (_, meta) = api(port, "GET", "/device-meta", "");
    assert_eq!(meta["pantavisor.revision"], "locals/r1", "{meta}");
    assert_eq!(fw.partition(false), 3);
    guest.kill();
}

/// The layer's U-Boot script (recipes-bsp/pantavisor-boot-script), run by
/// Debian's U-Boot for QEMU x86: it boots the kernel and initramfs of the
/// revision boot/pv.env names from trails/REV/.pv/, so a BSP update
/// changes what boots; a kernel that cannot start is tried once (U-Boot
/// records the try on its FAT partition), the board resets into the
/// committed revision, and the daemon — told pv_bootrev — rolls it back.
#[test]
fn the_u_boot_script_boots_each_revisions_own_bsp_and_a_kernel_that_cannot_start_falls_back() {
    let uboot = std::path::Path::new("/usr/lib/u-boot/qemu-x86/u-boot.rom");
    assert!(
        uboot.is_file(),
        "{} missing (ci/test installs u-boot-qemu)",
        uboot.display()
    );
    let tmp = bsp_dir();
    let d = tmp.path();
    networked_pvroot(d, "plain");
    let disk = d.join("disk.img");
    run(Command::new("bash")
        .arg(root().join("ci/mkimage"))
        .arg("uboot-disk")
        .arg(d.join("pvroot"))
        .arg(&disk)
        .args(["768", BASE_CMDLINE]));
    let port = free_port();
    let fwd = format!("user,id=n0,hostfwd=tcp:127.0.0.1:{port}-:12368");
    // No -no-reboot: the guest's reboots go through U-Boot and the script.
    let mut guest = Guest::boot_bios(
        d,
        uboot,
        &disk,
        &["-netdev", &fwd, "-device", "virtio-net-pci,netdev=n0"],
    );
    if wait_remote(port, "/device-meta", Duration::from_secs(150), |v| {
        v["pantavisor.revision"] == "0"
    })
    .is_none()
    {
        fail(&mut guest, "the remote API did not come up on revision 0");
    }
    // A new BSP: the initramfs with one more (concatenated) cpio archive.
    let ws = clone_remote(d, port);
    let initrd = ws.join("bsp").join(bsp_file(&ws, "initrd"));
    let extra = run(Command::new("bash").current_dir(d).arg("-c").arg(
        "mkdir -p more/etc && echo 2 > more/etc/pv-bsp && cd more && \
         find . | cpio --quiet -o -H newc | gzip -9n > ../more.cpio.gz && wc -c < ../more.cpio.gz",
    ));
    let mut bytes = fs::read(&initrd).unwrap();
    bytes.extend(fs::read(d.join("more.cpio.gz")).unwrap());
    fs::write(&initrd, &bytes).unwrap();
    assert!(extra.trim().parse::<u64>().unwrap() > 0);
    commit_post_run(&ws, port, "bsp 2", "locals/r1");
    wait_step(
        &mut guest,
        port,
        "locals/r1",
        "DONE",
        240,
        "locals/r1 was not committed after its reboot",
    );
    let console = guest.console();
    assert!(
        console.contains("pantavisor: booting revision locals/r1 from virtio 0:2")
            && console.contains(&format!(
                "Initial RAM disk at linear address 0x04000000, size {} bytes",
                bytes.len()
            ))
            && console.contains("pv_bootrev=locals/r1"),
        "U-Boot did not load locals/r1's own initramfs:\n{console}"
    );
    // A BSP whose kernel cannot start: U-Boot tries it once, resets, and
    // boots locals/r1; the daemon rolls locals/r2 back.
    let linux = ws.join("bsp").join(bsp_file(&ws, "linux"));
    fs::write(&linux, vec![0x5a; 1 << 20]).unwrap();
    commit_post_run(&ws, port, "broken kernel", "locals/r2");
    let progress = wait_step(
        &mut guest,
        port,
        "locals/r2",
        "ERROR",
        240,
        "locals/r2 was not reported rolled back",
    );
    let msg = progress["status-msg"].as_str().unwrap_or_default();
    assert!(
        msg.contains("the bootloader booted the kernel of revision locals/r1"),
        "{progress}"
    );
    let console = guest.console();
    assert!(
        console.contains("the kernel of revision locals/r2 did not start; resetting")
            && console.contains("revision locals/r2 was tried before; booting locals/r1"),
        "{console}"
    );
    let (_, meta) = api(port, "GET", "/device-meta", "");
    assert_eq!(meta["pantavisor.revision"], "locals/r1", "{meta}");
    guest.kill();
}
