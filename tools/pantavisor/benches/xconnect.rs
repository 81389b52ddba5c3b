//! The xconnect unix proxy against a direct unix socket, in the same run:
//! throughput (a stream of 64 KiB writes) and round-trip latency (64-byte
//! ping-pong). The proxy is the daemon's own [`Mesh`] (listener planted by
//! `listen_in`, provider reached by `connect_in`, edge-triggered pumping),
//! served by one thread as the daemon's loop serves it. Last line:
//!   XCONNECT direct_mbps=… proxied_mbps=… ratio=… rtt_us_direct=… rtt_us_proxied=…
//! Arguments: [MIB] [RUNS] (default 512 MiB, 5 runs; medians). Each run
//! measures direct then proxied back to back; `ratio` is the median of those
//! paired ratios (a shared VM's speed drifts between runs more than within
//! a pair).

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use nix::sys::epoll::EpollTimeout;
use pantavisor::xconnect::proxy::{listen_in, Mesh};
use pantavisor::xconnect::{Kind, Link};

const PINGS: usize = 20_000;

/// A provider: sinks a stream, or echoes 64-byte pings.
fn provider(listener: UnixListener) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            let mut kind = [0u8; 1];
            if conn.read_exact(&mut kind).is_err() {
                return;
            }
            match kind[0] {
                b's' => {
                    let mut buf = vec![0u8; 256 * 1024];
                    let mut total = 0u64;
                    while let Ok(n) = conn.read(&mut buf) {
                        if n == 0 {
                            break;
                        }
                        total += n as u64;
                    }
                    let _ = conn.write_all(&total.to_le_bytes());
                }
                b'p' => {
                    let mut b = [0u8; 64];
                    while conn.read_exact(&mut b).is_ok() {
                        if conn.write_all(&b).is_err() {
                            break;
                        }
                    }
                }
                _ => return,
            }
        }
    })
}

/// MB/s of `mib` MiB written to `path`, as the provider counted them.
fn stream(path: &Path, mib: usize) -> f64 {
    let mut s = UnixStream::connect(path).unwrap();
    s.write_all(b"s").unwrap();
    let chunk = vec![7u8; 64 * 1024];
    let t = Instant::now();
    for _ in 0..mib * 16 {
        s.write_all(&chunk).unwrap();
    }
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let mut total = [0u8; 8];
    s.read_exact(&mut total).unwrap();
    let secs = t.elapsed().as_secs_f64();
    assert_eq!(u64::from_le_bytes(total), (mib * 1024 * 1024) as u64);
    (mib as f64 * 1.048576) / secs
}

/// Median round trip in microseconds.
fn rtt(path: &Path) -> f64 {
    let mut s = UnixStream::connect(path).unwrap();
    s.write_all(b"p").unwrap();
    let mut b = [1u8; 64];
    let mut times = Vec::with_capacity(PINGS);
    for _ in 0..PINGS {
        let t = Instant::now();
        s.write_all(&b).unwrap();
        s.read_exact(&mut b).unwrap();
        times.push(t.elapsed().as_secs_f64() * 1e6);
    }
    median(&mut times)
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let mib: usize = args.first().and_then(|a| a.parse().ok()).unwrap_or(512);
    let runs: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(5);
    let tmp = tempfile::tempdir().unwrap();
    let socket = tmp.path().join("provider.sock");
    let _p = provider(UnixListener::bind(&socket).unwrap());
    let me = std::process::id() as i32;
    let link = Link {
        consumer: "bench".into(),
        provider: "provider".into(),
        name: "bench".into(),
        kind: Kind::Unix,
        role: "any".into(),
        interface: "unix".into(),
        target: tmp.path().join("consumer/bench.sock").display().to_string(),
        socket: socket.display().to_string(),
        required: true,
    };
    let mut mesh = Mesh::new().unwrap();
    mesh.add(link.clone(), listen_in(me, &link.target).unwrap())
        .unwrap();
    mesh.set_pid("provider", Some(me));
    let stop = Arc::new(AtomicBool::new(false));
    let s2 = stop.clone();
    let proxy = std::thread::spawn(move || {
        while !s2.load(Ordering::Relaxed) {
            mesh.poll_within(EpollTimeout::from(50u8));
        }
    });
    let target = Path::new(&link.target);
    let (mut direct, mut proxied, mut rd, mut rp) = (vec![], vec![], vec![], vec![]);
    // One warm-up of each, then alternating runs.
    stream(&socket, mib / 8 + 1);
    stream(target, mib / 8 + 1);
    for run in 0..runs {
        direct.push(stream(&socket, mib));
        proxied.push(stream(target, mib));
        rd.push(rtt(&socket));
        rp.push(rtt(target));
        eprintln!(
            "run {}: direct {:.0} MB/s, proxied {:.0} MB/s, rtt {:.1} us / {:.1} us",
            run + 1,
            direct[run],
            proxied[run],
            rd[run],
            rp[run]
        );
    }
    stop.store(true, Ordering::Relaxed);
    proxy.join().unwrap();
    let mut ratios: Vec<f64> = proxied.iter().zip(&direct).map(|(p, d)| p / d).collect();
    let ratio = median(&mut ratios);
    let (d, p) = (median(&mut direct), median(&mut proxied));
    println!(
        "XCONNECT direct_mbps={d:.0} proxied_mbps={p:.0} ratio={ratio:.2} rtt_us_direct={:.1} rtt_us_proxied={:.1}",
        median(&mut rd),
        median(&mut rp)
    );
}
