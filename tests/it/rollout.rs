//! Rollouts (SPEC.md "Rollouts"): stable endpoints over recreates, and the
//! start-first order with keep-last-good.

use crate::common::Lanes;

/// The host port of a lane's endpoint.
fn port_of(lanes: &Lanes, lane: &str) -> String {
    let status = lanes.status(lane).expect("a status");
    let endpoint = status["endpoint"].as_str().expect("an endpoint");
    endpoint.rsplit(':').next().unwrap().to_string()
}

#[test]
fn stop_first_recreates_keep_the_lanes_host_port() {
    let lanes = Lanes::new("stable-port");
    lanes.write("a", &lanes.worker_lane("env: {V: '0'}\n"));
    lanes.apply_ok();
    let first = port_of(&lanes, "a");
    let id = lanes.ready_id("a").unwrap();
    let mut kept = 0;
    for v in 1..=5 {
        lanes.write("a", &lanes.worker_lane(&format!("env: {{V: '{v}'}}\n")));
        lanes.apply_ok();
        assert_ne!(lanes.ready_id("a").unwrap(), id, "recreated");
        if port_of(&lanes, "a") == first {
            kept += 1;
        }
    }
    assert_eq!(kept, 5, "every recreate kept host port {first}");
}
