//! Replays arbitrary bytes as the last segment of a WAL (after a valid header, so the fuzzer
//! spends its time in the entry decoder): opening must truncate or fail, never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut segment = b"TRBWAL01".to_vec();
    segment.extend_from_slice(data);
    std::fs::write(dir.path().join(format!("{:020}.wal", 1)), &segment).expect("write segment");
    let config = wal::WalConfig { dir: dir.path().to_path_buf(), ..wal::WalConfig::default() };
    let mut registry = prometheus_client::registry::Registry::default();
    if let Ok(wal) = wal::Wal::open(config, &mut registry, |_, _| Ok(())) {
        let _ = wal.close();
    }
});
