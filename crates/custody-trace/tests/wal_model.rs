//! The write-ahead log against an in-memory model: random appends, rotations,
//! releases, torn writes and restarts; after every restart the log replays
//! exactly the acknowledged frames that were not released, in order.

use std::io::Write;

use custody_trace::wal::{Frame, Wal};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    /// Append a batch of payloads of these sizes.
    Append(Vec<usize>),
    Rotate,
    /// Release every closed segment up to `current - back`.
    Release(u64),
    /// A crash in the middle of an append: part of a frame reaches the file, then restart.
    TornWrite(usize),
    Restart,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => prop::collection::vec(0usize..300, 1..6).prop_map(Op::Append),
        1 => Just(Op::Rotate),
        1 => (0u64..3).prop_map(Op::Release),
        1 => (1usize..40).prop_map(Op::TornWrite),
        2 => Just(Op::Restart),
    ]
}

fn payload(tag: u64, len: usize) -> Vec<u8> {
    (0..len).map(|i| (tag as usize * 31 + i) as u8).collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn replay_returns_exactly_the_acknowledged_frames(ops in prop::collection::vec(op(), 1..40)) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wal");
        let segment_bytes = 700;
        let (mut wal, frames, _) = Wal::open(&path, segment_bytes).unwrap();
        prop_assert!(frames.is_empty());
        let mut model: Vec<Frame> = Vec::new();
        let mut tag = 0u64;
        for op in ops {
            match op {
                Op::Append(sizes) => {
                    let payloads: Vec<Vec<u8>> = sizes.iter().map(|&n| { tag += 1; payload(tag, n) }).collect();
                    let refs: Vec<&[u8]> = payloads.iter().map(Vec::as_slice).collect();
                    let segment = wal.append(&refs).unwrap();
                    model.extend(payloads.into_iter().map(|payload| Frame { segment, payload }));
                }
                Op::Rotate => {
                    wal.rotate().unwrap();
                }
                Op::Release(back) => {
                    let through = wal.current_segment().saturating_sub(1 + back);
                    wal.release_through(through).unwrap();
                    model.retain(|f| f.segment > through);
                }
                Op::TornWrite(cut) => {
                    // The next append's frame, cut short: never acknowledged.
                    let segment = wal.current_segment();
                    drop(wal);
                    let mut frame = Vec::new();
                    let body = payload(9999, 30);
                    frame.extend_from_slice(&(body.len() as u32).to_le_bytes());
                    frame.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
                    frame.extend_from_slice(&body);
                    let file = path.join(format!("{segment:020}.wal"));
                    let mut f = std::fs::OpenOptions::new().append(true).open(&file).unwrap();
                    f.write_all(&frame[..cut.min(frame.len() - 1)]).unwrap();
                    drop(f);
                    let (reopened, frames, recovery) = Wal::open(&path, segment_bytes).unwrap();
                    prop_assert_eq!(&frames, &model);
                    prop_assert!(recovery.torn_bytes > 0);
                    prop_assert!(recovery.damaged.is_empty());
                    wal = reopened;
                }
                Op::Restart => {
                    drop(wal);
                    let (reopened, frames, recovery) = Wal::open(&path, segment_bytes).unwrap();
                    prop_assert_eq!(&frames, &model);
                    prop_assert_eq!(recovery.torn_bytes, 0);
                    wal = reopened;
                }
            }
        }
        drop(wal);
        let (_, frames, _) = Wal::open(&path, segment_bytes).unwrap();
        prop_assert_eq!(frames, model);
    }
}

#[test]
fn damage_before_the_end_is_set_aside_and_reported_not_hidden() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wal");
    let (mut wal, _, _) = Wal::open(&path, 1).unwrap();
    for n in 0..3u8 {
        wal.append(&[&[n; 10], &[n + 10; 10]]).unwrap();
    }
    drop(wal);
    // Flip one byte of the second frame of the first segment.
    let first = path.join(format!("{:020}.wal", 1));
    let mut bytes = std::fs::read(&first).unwrap();
    bytes[18 + 8] ^= 0xff;
    std::fs::write(&first, bytes).unwrap();
    let (mut wal, frames, recovery) = Wal::open(&path, 1).unwrap();
    assert_eq!(recovery.damaged.len(), 1);
    assert_eq!(recovery.damaged[0].1, 18, "the damage is at the second frame");
    assert!(recovery.damaged[0].0.exists(), "a copy of the damaged segment is kept for inspection");
    let payloads = |frames: Vec<Frame>| frames.into_iter().map(|f| f.payload).collect::<Vec<_>>();
    let expected = vec![vec![0; 10], vec![1; 10], vec![11; 10], vec![2; 10], vec![12; 10]];
    assert_eq!(payloads(frames), expected);
    // The log goes on, and the readable prefix stays replayable.
    wal.append(&[b"after"]).unwrap();
    drop(wal);
    let (_, frames, recovery) = Wal::open(&path, 1).unwrap();
    assert!(recovery.damaged.is_empty(), "reported once");
    let mut expected = expected;
    expected.push(b"after".to_vec());
    assert_eq!(payloads(frames), expected);
}

#[test]
fn oversized_frames_are_refused_before_anything_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let (mut wal, _, _) = Wal::open(dir.path(), 1 << 20).unwrap();
    let big = vec![0u8; custody_trace::wal::MAX_FRAME_PAYLOAD + 1];
    assert!(wal.append(&[b"fine", &big]).is_err());
    assert_eq!(wal.disk_bytes().unwrap(), 0);
}
