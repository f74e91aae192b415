//! The capabilities deploy/collector's DaemonSet adds are the minimum that loads and
//! attaches: the real binary, run as root with exactly those in its bounding set
//! (`setpriv`, as a container runtime sets them with `drop: [ALL]`), starts and attaches;
//! with each one dropped in turn it stops at start-up with a message naming the
//! capability — except CAP_SYS_RESOURCE, which only kernels before 5.11 need (they charge
//! BPF maps to RLIMIT_MEMLOCK), and which preflight names there.
use std::{path::Path, time::Duration};

use serde_yaml::Value;

use crate::{
    require_root,
    shutdown::{Running, attached},
};

/// How long a collector refused by preflight may take to exit.
const PATIENCE: Duration = Duration::from_secs(30);

/// `capabilities.add` of the collector container in deploy/collector/daemonset.yaml.
fn deployed_capabilities() -> Vec<String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/collector/daemonset.yaml");
    let text = std::fs::read_to_string(&path).expect("deploy/collector/daemonset.yaml");
    let ds: Value = serde_yaml::from_str(&text).expect("the DaemonSet YAML");
    let containers = ds["spec"]["template"]["spec"]["containers"]
        .as_sequence()
        .expect("containers");
    let collector = containers
        .iter()
        .find(|c| c["name"].as_str() == Some("collector"))
        .expect("the collector container");
    let security = &collector["securityContext"]["capabilities"];
    assert_eq!(
        security["drop"].as_sequence().map(Vec::as_slice),
        Some([Value::from("ALL")].as_slice()),
        "the container drops every capability first"
    );
    security["add"]
        .as_sequence()
        .expect("capabilities.add")
        .iter()
        .map(|c| c.as_str().expect("a capability name").to_owned())
        .collect()
}

/// `setpriv` leaving exactly `caps` (Kubernetes names: `NET_ADMIN`) to the program it
/// runs as root: the bounding set (what root's exec gets), no inheritable or ambient ones.
fn setpriv_with(caps: &[&String]) -> Vec<String> {
    let mut bounding = "-all".to_owned();
    for cap in caps {
        bounding.push_str(&format!(",+{}", cap.to_lowercase()));
    }
    ["setpriv", "--inh-caps=-all", "--ambient-caps=-all"]
        .into_iter()
        .map(str::to_owned)
        .chain([format!("--bounding-set={bounding}"), "--".to_owned()])
        .collect()
}

/// The bit of a capability (Kubernetes name) in /proc/PID/status masks.
fn capability_bit(name: &str) -> u32 {
    match name {
        "NET_ADMIN" => 12,
        "SYS_RESOURCE" => 24,
        "PERFMON" => 38,
        "BPF" => 39,
        other => panic!("a capability this test does not know: {other}"),
    }
}

/// The capability mask `field` (`CapEff:`, `CapBnd:`) of process `pid` (or `self`).
fn capabilities(pid: &str, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let hex = status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .unwrap_or_else(|| panic!("{field} in /proc/{pid}/status"));
    u64::from_str_radix(hex.trim(), 16).expect("a hex mask")
}

/// Whether this kernel charges BPF maps to RLIMIT_MEMLOCK (before 5.11).
fn kernel_charges_memlock() -> bool {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").expect("osrelease");
    let mut parts = release.trim().split(['.', '-']);
    let version: (u32, u32) = (
        parts.next().and_then(|p| p.parse().ok()).expect("major"),
        parts.next().and_then(|p| p.parse().ok()).expect("minor"),
    );
    version < (5, 11)
}

#[test]
fn the_deployed_capabilities_are_the_minimum_that_loads_and_attaches() {
    require_root();
    let deployed = deployed_capabilities();
    let all: Vec<&String> = deployed.iter().collect();
    let wrapper = setpriv_with(&all);
    let wrapper: Vec<&str> = wrapper.iter().map(String::as_str).collect();
    let mut collector = Running::start_under("caps-all", &[], &wrapper);
    collector.wait_ready();
    let mask = deployed
        .iter()
        .fold(0u64, |m, c| m | 1 << capability_bit(c));
    // A capability this test itself lacks (a container that runs the tests without
    // CAP_SYS_RESOURCE) cannot be handed on.
    let here = capabilities("self", "CapBnd:");
    let unavailable: Vec<&String> = deployed
        .iter()
        .filter(|c| here & 1 << capability_bit(c) == 0)
        .collect();
    assert_eq!(
        capabilities(&collector.pid().to_string(), "CapEff:"),
        mask & here,
        "the collector runs with exactly {deployed:?} (less {unavailable:?}, not held here)"
    );
    assert!(
        unavailable.iter().all(|c| *c == "SYS_RESOURCE") || kernel_charges_memlock(),
        "this test lacks {unavailable:?}: it cannot show they are needed"
    );
    attached(&collector, "with the deployed capabilities");
    let status = collector.stop(libc::SIGTERM);
    assert_eq!(status.code(), Some(0), "{}", collector.log());
    println!(
        "with {deployed:?} (not held by this test: {unavailable:?}): started, attached, \
         stopped cleanly"
    );

    for dropped in &deployed {
        let rest: Vec<&String> = deployed.iter().filter(|c| *c != dropped).collect();
        let wrapper = setpriv_with(&rest);
        let wrapper: Vec<&str> = wrapper.iter().map(String::as_str).collect();
        let tag = format!("caps-without-{}", dropped.to_lowercase());
        let mut collector = Running::start_under(&tag, &[], &wrapper);
        let name = format!("CAP_{dropped}");
        if dropped == "SYS_RESOURCE" && !kernel_charges_memlock() {
            collector.wait_ready();
            attached(&collector, &format!("without {name}"));
            let _ = collector.stop(libc::SIGTERM);
            println!("without {name}: starts on this kernel (5.11 or later)");
            continue;
        }
        let status = collector
            .exited_within(PATIENCE)
            .unwrap_or_else(|| panic!("without {name} the collector still runs"));
        let log = collector.log();
        let line = log
            .lines()
            .find(|l| l.contains("needs root or the capabilities"))
            .unwrap_or_else(|| panic!("without {name}: no capability message in\n{log}"));
        println!("without {name}: exit {status}: {line}");
        assert!(!status.success(), "without {name}: {status}\n{log}");
        assert!(line.contains(&name), "without {name}: {line}");
    }
}
