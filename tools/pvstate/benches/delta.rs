//! One case of ci/bench-delta: what sending object NEW costs a device that
//! holds object OLD, with chunk indexes (pvstate::chunks), and what the
//! device's assembly costs. Prints one line:
//!   size=B send=B reused=B chunks=N sent_chunks=M assemble_ms=T rss_kb=K
//! `rss_kb` is this process's peak resident set (VmHWM) after building NEW
//! in a fresh store that holds OLD the way the device does: the delta
//! stream (written to a file first) fed to a `DeltaWriter` in 64 KiB reads,
//! as the daemon's upload path feeds it.
//! Usage: delta OLD NEW

use std::fs::File;
use std::io::Read;
use std::time::Instant;

use pvstate::chunks::{encode, plan, DeltaWriter, Index};
use pvstate::ObjectStore;

fn vm_hwm_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let [old, new] = &args[..] else {
        eprintln!("usage: delta OLD NEW");
        std::process::exit(2);
    };
    let tmp = tempfile::tempdir().unwrap();
    let store = ObjectStore::open(tmp.path().join("objects")).unwrap();
    let (old_id, _) = store.put_file(std::path::Path::new(old)).unwrap();
    let a = Index::of_file(&store.path(&old_id)).unwrap();
    let b = Index::of_file(std::path::Path::new(new)).unwrap();
    let p = plan(&b, &[&a]);
    let stream_path = tmp.path().join("delta");
    let mut stream = std::io::BufWriter::new(File::create(&stream_path).unwrap());
    encode(&b, &File::open(new).unwrap(), &[&a], &mut stream).unwrap();
    drop(stream);
    let t = Instant::now();
    let mut w = DeltaWriter::new(&store, &b.object).unwrap();
    let mut input = File::open(&stream_path).unwrap();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = input.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        w.write(&buf[..n]).unwrap();
    }
    let (id, size) = w.finish().unwrap();
    let ms = t.elapsed().as_secs_f64() * 1000.0;
    assert_eq!(id, b.object, "the assembled object is the new one");
    assert_eq!(size, b.size);
    println!(
        "size={} send={} reused={} chunks={} sent_chunks={} assemble_ms={ms:.0} rss_kb={}",
        p.size,
        p.send_bytes,
        p.reused_bytes,
        b.chunks.len(),
        p.send.len(),
        vm_hwm_kb()
    );
}
