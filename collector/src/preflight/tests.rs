use std::net::SocketAddr;

use super::*;
use crate::scratch::Scratch;

impl Scratch {
    /// A fake host: a status file with `uid` and `caps`, and BTF present or not, on a
    /// kernel that needs no CAP_SYS_RESOURCE.
    fn host(&self, uid: u32, caps: u64, btf: bool) -> Host {
        self.host_on("6.18.0-1-amd64", uid, caps, btf)
    }

    /// [`Self::host`] on kernel `release`.
    fn host_on(&self, release: &str, uid: u32, caps: u64, btf: bool) -> Host {
        let proc_status = self.0.join("status");
        fs::write(
            &proc_status,
            format!("Name:\tcollector\nUid:\t{uid}\t{uid}\t{uid}\t{uid}\nCapEff:\t{caps:016x}\n"),
        )
        .expect("status");
        let btf_path = self.0.join("vmlinux");
        if btf {
            fs::write(&btf_path, b"BTF").expect("btf");
        }
        let osrelease = self.0.join("osrelease");
        fs::write(&osrelease, format!("{release}\n")).expect("osrelease");
        Host {
            proc_status,
            btf: btf_path,
            osrelease,
        }
    }
}

const ALL_CAPS: u64 = 0x0000_01ff_ffff_ffff;
const fn caps(list: &[u32]) -> u64 {
    let mut mask = 0;
    let mut i = 0;
    while i < list.len() {
        mask |= 1 << list[i];
        i += 1;
    }
    mask
}

/// A config whose cgroup root is the real cgroup2 mount and whose port is free.
fn config() -> Config {
    Config {
        cgroup_root: Some(cgroup::find_root().expect("this host mounts cgroup v2")),
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        ..Config::default()
    }
}

#[test]
fn capabilities_needed() {
    assert!(missing_capabilities(ALL_CAPS).is_empty());
    assert!(missing_capabilities(caps(&[CAP_NET_ADMIN, CAP_BPF, CAP_PERFMON])).is_empty());
    assert!(missing_capabilities(caps(&[CAP_NET_ADMIN, CAP_SYS_ADMIN])).is_empty());
    assert_eq!(
        missing_capabilities(0),
        ["CAP_NET_ADMIN", "CAP_BPF", "CAP_PERFMON"]
    );
    assert_eq!(
        missing_capabilities(caps(&[CAP_NET_ADMIN, CAP_BPF])),
        ["CAP_PERFMON"]
    );
}

#[test]
fn reads_uid_and_effective_capabilities() {
    let status =
        "Name:\tx\nUid:\t1000\t0\t0\t0\nGid:\t1\t1\t1\t1\nCapInh:\t0\nCapEff:\t000001fffeffffff\n";
    assert_eq!(uid_and_capabilities(status), Some((0, 0x01ff_feff_ffff)));
    assert_eq!(uid_and_capabilities("Name:\tx\n"), None);
}

#[test]
fn an_unprivileged_process_is_told_what_it_lacks() {
    let scratch = Scratch::new("preflight-unprivileged");
    let err = check(&config(), &scratch.host(1000, 0, true)).expect_err("no caps");
    assert_eq!(
        err.to_string(),
        "loading and attaching the kernel programs needs root or the capabilities \
         CAP_NET_ADMIN, CAP_BPF, CAP_PERFMON (or CAP_SYS_ADMIN for those) (running as uid 1000 \
         without them): run as root, or in Kubernetes add them under \
         securityContext.capabilities.add"
    );
}

#[test]
fn root_without_net_admin_is_refused_too() {
    // Root in a container with dropped capabilities is not enough.
    let scratch = Scratch::new("preflight-root-dropped");
    let host = scratch.host(0, ALL_CAPS & !caps(&[CAP_NET_ADMIN]), true);
    let err = check(&config(), &host).expect_err("no NET_ADMIN");
    assert!(
        matches!(&err, Error::MissingCapabilities { uid: 0, missing } if missing == "CAP_NET_ADMIN"),
        "{err:?}"
    );
}

#[test]
fn kernels_before_5_11_need_sys_resource_too() {
    let deployed = caps(&[CAP_NET_ADMIN, CAP_BPF, CAP_PERFMON]);
    let scratch = Scratch::new("preflight-memlock");
    let old = scratch.host_on("5.10.0-28-amd64", 0, deployed, true);
    let err = check(&config(), &old).expect_err("no SYS_RESOURCE on 5.10");
    assert!(
        matches!(&err, Error::MissingCapabilities { uid: 0, missing } if missing == "CAP_SYS_RESOURCE (kernel 5.10.0-28-amd64 charges BPF maps to RLIMIT_MEMLOCK; 5.11 and later do not)"),
        "{err:?}"
    );
    let with = deployed | caps(&[CAP_SYS_RESOURCE]);
    let scratch = Scratch::new("preflight-memlock-ok");
    assert!(
        check(
            &config(),
            &scratch.host_on("5.10.0-28-amd64", 0, with, true)
        )
        .is_ok()
    );
    let scratch = Scratch::new("preflight-memlock-new");
    assert!(check(&config(), &scratch.host_on("5.11.0", 0, deployed, true)).is_ok());
    assert_eq!(kernel_version("6.18.0-1-amd64\n"), Some((6, 18)));
    assert_eq!(kernel_version("garbage"), None);
}

#[test]
fn a_cgroup_root_that_is_not_cgroup2() {
    let scratch = Scratch::new("preflight-not-cgroup2");
    let plain = scratch.0.join("plain");
    fs::create_dir_all(&plain).expect("dir");
    let config = Config {
        cgroup_root: Some(plain.clone()),
        ..config()
    };
    let err = check(&config, &scratch.host(0, ALL_CAPS, true)).expect_err("not cgroup2");
    assert!(
        matches!(&err, Error::NotCgroup2 { path, unified } if *path == plain && *unified == plain.join("unified")),
        "{err:?}"
    );
    // It names both places it looked and what to set.
    let message = err.to_string();
    for part in [
        format!(
            "cgroup root {} is not a cgroup v2 hierarchy",
            plain.display()
        ),
        format!("{}/unified", plain.display()),
        "--cgroup-root (HEADROOM_CGROUP_ROOT".into(),
        "/sys/fs/cgroup/unified on hybrid hosts".into(),
    ] {
        assert!(message.contains(&part), "{part:?} not in: {message}");
    }
}

#[test]
fn a_hybrid_hosts_v1_root_resolves_to_its_unified_mount() {
    // As the DaemonSet mounts a hybrid host's /sys/fs/cgroup: a tmpfs of v1 hierarchies
    // with the v2 one at unified/.
    let scratch = Scratch::new("preflight-hybrid");
    let root = scratch.0.join("sys-fs-cgroup");
    let unified = root.join("unified");
    for dir in [
        root.join("cpu,cpuacct"),
        root.join("memory"),
        unified.clone(),
    ] {
        fs::create_dir_all(dir).expect("dir");
    }
    fs::write(unified.join("cgroup.controllers"), "").expect("controllers");
    let config = Config {
        cgroup_root: Some(root.clone()),
        ..config()
    };
    let found = check(&config, &scratch.host(0, ALL_CAPS, true)).expect("passes");
    assert_eq!(found.cgroup_root, unified);
    assert_eq!(found.hybrid_root, Some(root));
}

#[test]
fn no_btf() {
    let scratch = Scratch::new("preflight-no-btf");
    let host = scratch.host(0, ALL_CAPS, false);
    let err = check(&config(), &host).expect_err("no BTF");
    assert!(
        matches!(&err, Error::NoBtf { path } if *path == host.btf),
        "{err:?}"
    );
    assert!(err.to_string().contains("CONFIG_DEBUG_INFO_BTF"), "{err}");
}

#[test]
fn a_taken_port_fails_preflight() {
    let scratch = Scratch::new("preflight-port");
    let taken = server::bind(SocketAddr::from(([127, 0, 0, 1], 0))).expect("bind");
    let config = Config {
        listen: taken.local_addr().expect("addr"),
        ..config()
    };
    let err = check(&config, &scratch.host(0, ALL_CAPS, true)).expect_err("port in use");
    assert!(
        matches!(err, Error::PortInUse { addr } if addr == config.listen),
        "{err:?}"
    );
}

#[test]
fn a_good_host_passes_and_keeps_the_port() {
    let scratch = Scratch::new("preflight-good");
    let config = config();
    let found = check(&config, &scratch.host(0, ALL_CAPS, true)).expect("passes");
    assert_eq!(Some(&found.cgroup_root), config.cgroup_root.as_ref());
    assert_eq!(found.hybrid_root, None);
    let addr = found.listener.local_addr().expect("bound");
    assert!(matches!(server::bind(addr), Err(Error::PortInUse { .. })));
}
