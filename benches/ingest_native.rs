//! The ingest alone, without Python: a fresh store each time, wall and CPU seconds (best and
//! median of N). For A/B comparisons of the Rust core on this noisy machine (alternate two
//! builds), and for instruction counts, which do not move with the machine's load:
//!
//!     cargo run --release --example ingest_native -- /tmp/steplaw-bench/steplaw-logs 5
//!     valgrind --tool=cachegrind --cache-sim=no target/release/examples/ingest_native DIR 1
use _native::{ingest, store::Store};

/// User + system CPU seconds of this process, from /proc (Linux).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or_default().split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

fn main() {
    let mut args = std::env::args().skip(1);
    let src = std::path::PathBuf::from(args.next().expect("usage: ingest_native DIR [REPEATS]"));
    let n: usize = args.next().map_or(5, |s| s.parse().expect("REPEATS is a number"));
    let dir = tempfile::tempdir().expect("a temporary directory");
    let (mut walls, mut cpus) = (Vec::new(), Vec::new());
    for i in 0..n {
        let store = Store::open(dir.path().join(i.to_string()), true).expect("a new store");
        let (c0, t0) = (cpu_seconds(), std::time::Instant::now());
        let report = ingest::ingest(&store, std::slice::from_ref(&src), &Default::default()).expect("ingest");
        walls.push(t0.elapsed().as_secs_f64());
        cpus.push(cpu_seconds() - c0);
        assert!(report.points > 0, "no points under {}", src.display());
    }
    walls.sort_by(f64::total_cmp);
    cpus.sort_by(f64::total_cmp);
    println!(
        "wall best {:.3} s, median {:.3} s; cpu best {:.2} s, median {:.2} s",
        walls[0],
        walls[n / 2],
        cpus[0],
        cpus[n / 2]
    );
}
