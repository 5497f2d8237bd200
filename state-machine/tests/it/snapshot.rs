//! Snapshot format: round trip, version header, corruption.

use cairn_state::snapshot::FORMAT_VERSION;
use cairn_state::Command;
use cairn_state::Mission;
use cairn_state::SensorHealth;
use cairn_state::SnapshotError;
use cairn_state::StateMachine;
use cairn_state::TaskOutcome;

use crate::Rig;

fn busy_rig() -> Rig {
    let mut rig = Rig::new();
    let n = rig.node(1, &["drive"], 1_000, 1_000);
    let t = rig.task(&["drive"], 100, 100);
    let epoch = rig.assign(t, n);
    rig.ok(Command::StartTask { task_id: t, epoch });
    let t2 = rig.task(&[], 1, 1);
    let e2 = rig.assign(t2, n);
    rig.ok(Command::FinishTask {
        task_id: t2,
        epoch: e2,
        outcome: TaskOutcome::Failed {
            reason: "x".to_owned(),
            retry_jitter_ms: 3,
        },
    });
    rig.ok(Command::ReportSensorHealth {
        sensor: "imu".to_owned(),
        health: SensorHealth::Failed,
    });
    rig
}

#[test]
fn t460_snapshot_round_trips_to_an_equal_state() {
    let rig = busy_rig();
    let bytes = rig.mission.snapshot();
    println!("snapshot of a small state: {} bytes", bytes.len());
    let restored = Mission::restore(&bytes).expect("own snapshot restores");
    assert!(restored == rig.mission, "restored state differs");
    assert_eq!(restored.snapshot(), bytes, "re-snapshot is byte-identical");
    // The derived per-node index is rebuilt.
    let node = restored.node(cairn_state::NodeId(1)).expect("node");
    assert_eq!(node.assigned_tasks().count(), 1, "saw {node:?}");

    let fresh = Mission::default();
    assert!(Mission::restore(&fresh.snapshot()).expect("default restores") == fresh);
}

#[test]
fn t461_unknown_version_is_refused() {
    let mut bytes = busy_rig().mission.snapshot();
    for version in [0, FORMAT_VERSION + 1, u32::MAX] {
        bytes[..4].copy_from_slice(&version.to_le_bytes());
        let e = Mission::restore(&bytes).err();
        assert_eq!(
            e,
            Some(SnapshotError::UnsupportedVersion {
                found: version,
                supported: FORMAT_VERSION
            })
        );
    }
}

#[test]
fn t462_corrupt_bytes_are_refused() {
    let bytes = busy_rig().mission.snapshot();
    let mut cases: Vec<(String, Vec<u8>)> = vec![
        ("empty".to_owned(), Vec::new()),
        ("header only".to_owned(), bytes[..8].to_vec()),
        ("truncated".to_owned(), bytes[..bytes.len() - 1].to_vec()),
        ("trailing byte".to_owned(), [bytes.as_slice(), &[0]].concat()),
    ];
    for at in [8, bytes.len() / 2, bytes.len() - 1] {
        let mut flipped = bytes.clone();
        flipped[at] ^= 0x40;
        cases.push((format!("bit flipped at {at}"), flipped));
    }
    for (what, case) in cases {
        match Mission::restore(&case) {
            Err(SnapshotError::Corrupt { reason }) => println!("{what}: corrupt ({reason})"),
            other => panic!("{what}: expected Corrupt, got {:?}", other.map(|_| "a state")),
        }
    }
}
