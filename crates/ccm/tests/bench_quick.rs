//! The benchmark scenarios in quick mode (small cluster) through the CCM process: call-count targets,
//! leak checks and the memory bound are asserted by the bench itself (exit 1 on a miss). Wall times are
//! reported, never asserted.

mod common;

#[test]
fn quick_bench_meets_its_call_count_targets() {
    let stdout = common::run_ok(&["bench", "--quick"]);
    for s in ["S1:", "S2:", "S4:", "S5:", "S6:", "S8:", "S9:"] {
        assert!(stdout.contains(s), "{s} missing:\n{stdout}");
    }
    assert!(!stdout.contains('✗'), "{stdout}");
}
