//! Unit tests of the metrics writer (no KVM needed).

use std::io::Read;

use event_manager::SubscriberOps;

use super::*;

fn tmp(tag: &str) -> std::path::PathBuf {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    std::env::temp_dir().join(format!("squib-metrics-{}-{tag}-{n}", std::process::id()))
}

fn config(path: &std::path::Path) -> MetricsConfig {
    MetricsConfig::from_path(path.to_str().unwrap())
}

fn lines(path: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The top-level keys of a metrics line, in order.
fn keys(line: &serde_json::Value) -> Vec<&str> {
    line.as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect()
}

fn devices() -> (DeviceGroups, Arc<BlockMetrics>, Arc<BlockMetrics>) {
    let a = Arc::new(BlockMetrics::default());
    let b = Arc::new(BlockMetrics::default());
    let groups = DeviceGroups {
        blocks: vec![
            ("rootfs".into(), Arc::clone(&a)),
            ("scratch".into(), Arc::clone(&b)),
        ],
        nets: vec![("eth0".into(), Arc::new(NetMetrics::default()))],
        uart: Some(Arc::new(SerialMetrics::default())),
        ..DeviceGroups::default()
    };
    (groups, a, b)
}

#[test]
fn test_write_without_sink_writes_nothing() {
    let mut w = MetricsWriter::new("vm");
    assert_eq!(w.write(), Ok(false));
}

#[test]
fn test_init_twice_is_refused_with_firecracker_text() {
    let p = tmp("twice");
    let mut w = MetricsWriter::new("vm");
    w.init(&config(&p)).unwrap();
    assert_eq!(
        w.init(&config(&p)).unwrap_err(),
        "Metrics error: Cannot initialize the metrics system due to bad user input: Reinitialization of metrics not allowed."
    );
    let bad = MetricsConfig::from_path("/nonexistent-dir/m.json");
    assert_eq!(
        MetricsWriter::new("vm").init(&bad).unwrap_err(),
        "Metrics error: Cannot initialize the metrics system due to bad user input: No such file or directory (os error 2)"
    );
    std::fs::remove_file(&p).unwrap();
}

#[test]
fn test_line_has_firecracker_groups_in_order_with_per_device_and_aggregates() {
    let (groups, a, b) = devices();
    let mut w = MetricsWriter::new("vm");
    w.set_devices(groups);
    a.read_bytes.add(512);
    a.read_agg.record(7);
    b.read_bytes.add(1024);
    let line = w.next_line();
    let keys = keys(&line);
    assert_eq!(
        keys,
        [
            "utc_timestamp_ms",
            "api_server",
            "balloon",
            "block_rootfs",
            "block_scratch",
            "block",
            "deprecated_api",
            "get_api_requests",
            "i8042",
            "uart",
            "latencies_us",
            "logger",
            "mmds",
            "net_eth0",
            "net",
            "patch_api_requests",
            "put_api_requests",
            "seccomp",
            "vcpu",
            "vmm",
            "signals",
            "vsock",
            "entropy",
            "pmem",
            "interrupts",
            "memory_hotplug",
        ]
    );
    assert_eq!(line["block_rootfs"]["read_bytes"], 512);
    assert_eq!(line["block_scratch"]["read_bytes"], 1024);
    assert_eq!(
        line["block"]["read_bytes"], 1536,
        "aggregate = sum of deltas"
    );
    assert_eq!(line["block_rootfs"]["read_agg"]["max_us"], 7);
    assert_eq!(line["block"]["read_agg"]["sum_us"], 7);
    assert_eq!(
        line["block"]["read_agg"]["max_us"], 0,
        "as Firecracker's aggregate"
    );
    // Deltas: the next line starts from zero again.
    let line = w.next_line();
    assert_eq!(line["block_rootfs"]["read_bytes"], 0);
    assert_eq!(line["block"]["read_bytes"], 0);
    assert_eq!(
        line["block_rootfs"]["read_agg"]["max_us"], 7,
        "store metric"
    );
    assert_eq!(a.read_bytes.count(), 512, "totals are untouched");
}

fn aggregates_every_field<T: Aggregate>() {
    let Value::Object(fields) = to_value(&T::default()) else {
        panic!("a group is an object");
    };
    let mut expected: Vec<&str> = fields.keys().map(String::as_str).collect();
    let mut summed = T::FIELDS.to_vec();
    expected.sort_unstable();
    summed.sort_unstable();
    assert_eq!(summed, expected, "a field is missing from impl_aggregate!");
}

#[test]
fn test_aggregates_sum_every_field_of_their_group() {
    aggregates_every_field::<BlockMetrics>();
    aggregates_every_field::<NetMetrics>();
    aggregates_every_field::<PmemMetrics>();
}

#[test]
fn test_balloon_pmem_and_hotplug_groups_come_from_the_devices() {
    let balloon = Arc::new(BalloonMetrics::default());
    let hotplug = Arc::new(VirtioMemMetrics::default());
    let p0 = Arc::new(PmemMetrics::default());
    let p1 = Arc::new(PmemMetrics::default());
    let mut w = MetricsWriter::new("vm");
    w.set_devices(DeviceGroups {
        balloon: Some(Arc::clone(&balloon)),
        memory_hotplug: Some(Arc::clone(&hotplug)),
        pmems: vec![
            ("p0".into(), Arc::clone(&p0)),
            ("p1".into(), Arc::clone(&p1)),
        ],
        ..DeviceGroups::default()
    });
    balloon.inflate_count.add(3);
    hotplug.plug_count.inc();
    hotplug.plug_agg.record(40);
    p0.queue_event_count.add(2);
    p1.queue_event_count.inc();
    let line = w.next_line();
    let keys = keys(&line);
    let at = |k: &str| keys.iter().position(|x| *x == k).unwrap();
    assert!(at("entropy") < at("pmem_p0") && at("pmem_p0") < at("pmem_p1"));
    assert_eq!(at("pmem_p1") + 1, at("pmem"));
    assert_eq!(at("pmem") + 1, at("interrupts"));
    assert_eq!(line["balloon"]["inflate_count"], 3);
    assert_eq!(line["memory_hotplug"]["plug_count"], 1);
    assert_eq!(line["memory_hotplug"]["plug_agg"]["max_us"], 40);
    assert_eq!(line["pmem_p0"]["queue_event_count"], 2);
    assert_eq!(
        line["pmem"]["queue_event_count"], 3,
        "aggregate = sum of deltas"
    );
    let next = w.next_line();
    assert_eq!(next["balloon"]["inflate_count"], 0, "deltas");
    assert_eq!(next["pmem"]["queue_event_count"], 0);
}

#[test]
fn test_emit_id_and_properties_follow_the_timestamp() {
    let p = tmp("id");
    let mut cfg = config(&p);
    cfg.emit_id = true;
    cfg.properties.insert("k".into(), "v".into());
    let mut w = MetricsWriter::new("my-vm");
    w.init(&cfg).unwrap();
    assert_eq!(w.write(), Ok(true));
    let line = &lines(&p)[0];
    assert_eq!(
        keys(line)[..4],
        ["utc_timestamp_ms", "id", "properties", "api_server"]
    );
    assert_eq!(line["id"], "my-vm");
    assert_eq!(line["properties"]["k"], "v");
    std::fs::remove_file(&p).unwrap();
}

#[test]
fn test_mmds_counters_are_written_as_deltas() {
    let mmds = Arc::new(MmdsMetrics::default());
    let mut w = MetricsWriter::new("vm");
    w.set_devices(DeviceGroups {
        mmds: Some(Arc::clone(&mmds)),
        ..DeviceGroups::default()
    });
    mmds.rx_count
        .fetch_add(3, std::sync::atomic::Ordering::Relaxed);
    assert_eq!(w.next_line()["mmds"]["rx_count"], 3);
    assert_eq!(w.next_line()["mmds"]["rx_count"], 0);
    mmds.rx_count
        .fetch_add(2, std::sync::atomic::Ordering::Relaxed);
    assert_eq!(w.next_line()["mmds"]["rx_count"], 2);
}

#[test]
fn test_lines_append_one_json_object_each() {
    let p = tmp("append");
    std::fs::write(&p, "").unwrap();
    let mut w = MetricsWriter::new("vm");
    w.init(&config(&p)).unwrap();
    assert_eq!(w.write(), Ok(true));
    assert_eq!(w.write(), Ok(true));
    let got = lines(&p);
    assert_eq!(got.len(), 2);
    assert!(
        got[1]["utc_timestamp_ms"].as_u64().unwrap()
            >= got[0]["utc_timestamp_ms"].as_u64().unwrap()
    );
    std::fs::remove_file(&p).unwrap();
}

#[test]
fn test_failed_write_to_a_full_fifo_is_counted_not_fatal() {
    let p = tmp("fifo");
    let status = std::process::Command::new("mkfifo")
        .arg(&p)
        .status()
        .unwrap();
    assert!(status.success());
    let mut w = MetricsWriter::new("vm");
    w.init(&config(&p)).unwrap();
    // Nobody reads: the pipe fills up, then writes fail with EAGAIN and are counted.
    let before = METRICS.logger.missed_metrics_count.count();
    let mut failures = 0;
    for _ in 0..64 {
        if w.write().is_err() {
            failures += 1;
        }
    }
    assert!(failures > 0);
    assert!(METRICS.logger.missed_metrics_count.count() >= before + failures);
    let mut reader = File::open(&p).unwrap();
    let mut first = [0u8; 20];
    reader.read_exact(&mut first).unwrap();
    assert!(first.starts_with(b"{\"utc_timestamp_ms\":"));
    std::fs::remove_file(&p).unwrap();
}

#[test]
fn test_periodic_metrics_writes_at_start_and_on_each_expiry() {
    let p = tmp("periodic");
    let writer = MetricsWriter::shared("vm");
    lock(&writer).init(&config(&p)).unwrap();
    let periodic = PeriodicMetrics::new(Arc::clone(&writer), Duration::from_millis(50)).unwrap();
    let periodic = Arc::new(Mutex::new(periodic));
    let mut events =
        event_manager::EventManager::<Arc<Mutex<dyn MutEventSubscriber + Send>>>::new().unwrap();
    lock(&periodic).start();
    events.add_subscriber(periodic);
    assert_eq!(lines(&p).len(), 1, "one line when started");
    for _ in 0..2 {
        events.run_with_timeout(2000).unwrap();
    }
    assert_eq!(lines(&p).len(), 3);
    std::fs::remove_file(&p).unwrap();
}

/// Flush cost with N block + N net devices: `cargo test -p squib-vmm --release --lib
/// flush_cost -- --ignored --nocapture`.
#[test]
#[ignore = "measurement, not a check"]
fn flush_cost() {
    for n in [0usize, 1, 4, 8, 16] {
        let p = tmp("cost");
        let mut w = MetricsWriter::new("vm");
        w.init(&config(&p)).unwrap();
        w.set_devices(DeviceGroups {
            blocks: (0..n)
                .map(|i| (format!("drive{i}"), Arc::new(BlockMetrics::default())))
                .collect(),
            nets: (0..n)
                .map(|i| (format!("eth{i}"), Arc::new(NetMetrics::default())))
                .collect(),
            uart: Some(Arc::new(SerialMetrics::default())),
            i8042: Some(Arc::new(I8042Metrics::default())),
            mmds: Some(Arc::new(MmdsMetrics::default())),
            ..DeviceGroups::default()
        });
        // The host is shared: report the best and the median of 40 batches of 50 lines.
        let mut batches: Vec<Duration> = (0..40)
            .map(|_| {
                let start = std::time::Instant::now();
                for _ in 0..50 {
                    w.write().unwrap();
                }
                start.elapsed() / 50
            })
            .collect();
        batches.sort_unstable();
        let bytes = std::fs::metadata(&p).unwrap().len() / 2000;
        println!(
            "flush cost: {n:>2} block + {n:>2} net devices: best {:?}, median {:?} per line, {bytes} bytes",
            batches[0], batches[20]
        );
        std::fs::remove_file(&p).unwrap();
    }
}
