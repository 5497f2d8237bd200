//! cairn patch (issue 20): the condition a follower's answer to an
//! AppendEntries waits for (see `Engine::handle_append_entries`).

use std::sync::Arc;
use std::time::Duration;

use maplit::btreeset;
use pretty_assertions::assert_eq;

use crate::Membership;
use crate::MembershipState;
use crate::Vote;
use crate::engine::Command;
use crate::engine::Condition;
use crate::engine::Engine;
use crate::engine::testing::UTConfig;
use crate::engine::testing::log_id;
use crate::raft::LogSegment;
use crate::raft_state::IOId;
use crate::testing::blank_ent;
use crate::type_config::TypeConfigExt;
use crate::type_config::alias::StoredMembershipOf;
use crate::utime::Leased;
use crate::vote::raft_vote::RaftVoteExt;

/// A follower (node 2) of leader 1 in term 2, with the leader's committed
/// vote, whose log holds entries up to index 5 of which openraft has
/// *accepted* the IO up to 5 but flushed nothing yet (a slow disk).
fn follower_with_unflushed_appends() -> Engine<UTConfig> {
    let mut eng = Engine::testing_default(0);
    eng.state.enable_validation(false);
    eng.config.id = 2;
    eng.state.vote = Leased::new(
        UTConfig::<()>::now(),
        Duration::from_millis(500),
        Vote::new_committed(2, 1),
    );
    eng.state.log_ids.append(log_id(1, 1, 2));
    eng.state.log_ids.append(log_id(2, 1, 5));
    eng.state.apply_progress_mut().accept(log_id(0, 1, 0));
    let m = Membership::<u64, ()>::new_with_defaults(vec![btreeset! {1,2,3}], []);
    eng.state.membership_state = MembershipState::new(
        Arc::new(StoredMembershipOf::<UTConfig>::new(Some(log_id(1, 1, 1)), m.clone())),
        Arc::new(StoredMembershipOf::<UTConfig>::new(Some(log_id(1, 1, 1)), m)),
    );
    eng.state.accept_log_io(IOId::new_log_io(Vote::new(2, 1).to_committed(), Some(log_id(2, 1, 5))));
    eng.state.server_state = eng.calc_server_state();
    eng.output.take_commands();
    eng
}

/// The condition of the one `Respond` command the engine output.
fn respond_condition(commands: Vec<Command<UTConfig>>) -> Option<Condition<UTConfig>> {
    let mut found = commands.into_iter().filter_map(|c| match c {
        Command::Respond { when, .. } => Some(when),
        _ => None,
    });
    let when = found.next().expect("the engine responds");
    assert!(found.next().is_none(), "one response per request");
    when
}

/// A heartbeat (no entries) at `prev_log_id` 3 waits only for its own IO
/// id, (leader's committed vote, 3), not for the unflushed appends up to 5:
/// on a slow disk it is answered as soon as what it claims is durable.
/// Upstream's condition here is the whole accepted IO, up to index 5.
#[test]
fn test_cairn_a_heartbeat_waits_only_for_its_own_io_id() -> anyhow::Result<()> {
    let mut eng = follower_with_unflushed_appends();
    let (tx, _rx) = UTConfig::<()>::oneshot();

    eng.handle_append_entries(
        &Vote::new_committed(2, 1),
        LogSegment::new(Some(log_id(2, 1, 3)), vec![]),
        tx,
    );

    let own = IOId::new_log_io(Vote::new(2, 1).to_committed(), Some(log_id(2, 1, 3)));
    let accepted = IOId::new_log_io(Vote::new(2, 1).to_committed(), Some(log_id(2, 1, 5)));
    let when = respond_condition(eng.output.take_commands());
    assert_eq!(Some(Condition::IOFlushed { io_id: own.clone() }), when);
    assert_ne!(Some(Condition::IOFlushed { io_id: accepted }), when);
    // What it waits for is at or below what was accepted: the claim is
    // about entries already handed to the disk, never ahead of them.
    assert!(Some(&own) <= eng.state.accepted_log_io());
    Ok(())
}

/// A request with entries keeps upstream's condition: all accepted IO,
/// its own entries included, flushed.
#[test]
fn test_cairn_entries_wait_for_all_accepted_io() -> anyhow::Result<()> {
    let mut eng = follower_with_unflushed_appends();
    let (tx, _rx) = UTConfig::<()>::oneshot();

    eng.handle_append_entries(
        &Vote::new_committed(2, 1),
        LogSegment::new(Some(log_id(2, 1, 5)), vec![blank_ent::<UTConfig>(2, 1, 6)]),
        tx,
    );

    let accepted = eng.state.accepted_log_io().cloned();
    assert_eq!(
        accepted,
        Some(IOId::new_log_io(Vote::new(2, 1).to_committed(), Some(log_id(2, 1, 6))))
    );
    let when = respond_condition(eng.output.take_commands());
    assert_eq!(accepted.map(|io_id| Condition::IOFlushed { io_id }), when);
    Ok(())
}
