use clap::Parser;

use super::*;

#[derive(Debug, Parser)]
struct Cli {
    #[command(flatten)]
    args: Args,
}

fn args(flags: &[&str]) -> Args {
    Cli::try_parse_from(std::iter::once("headroom-collector").chain(flags.iter().copied()))
        .expect("flags parse")
        .args
}

fn addr(text: &str) -> SocketAddr {
    text.parse().expect("test address")
}

/// Loads `yaml` under the given flags, as `Config::load` does with a file.
fn load(yaml: &str, flags: &[&str]) -> Result<Config> {
    let mut config = Config::default();
    config.apply_yaml(yaml)?;
    config.apply_args(&args(flags));
    config.validate()?;
    Ok(config)
}

fn error(yaml: &str, flags: &[&str]) -> String {
    load(yaml, flags).expect_err("invalid").to_string()
}

#[test]
fn defaults() {
    let config = Config::default();
    assert_eq!(config.listen, addr("0.0.0.0:9977"));
    assert_eq!(config.series_grace_period, Duration::from_secs(300));
    assert_eq!(config.dns_top_k, 20);
    assert_eq!(config.readiness_timeout, Duration::from_secs(30));
    assert!(config.apiservers.is_empty() && config.dns_servers.is_empty());
    assert_eq!(config.cgroup_root, None);
    assert!(!config.standalone);
    assert_eq!(config.program_stats, ProgramStats::Sampled);
    assert_eq!(config.dns_names, DnsNames::Plain);
    config.validate().expect("the default is valid");
    assert_eq!(load("", &[]).expect("empty file"), config);
}

const FILE: &str = "
listen: 127.0.0.1:9100
apiServers: [10.96.0.1:443, '[fd00::1]:6443']
dnsServers:
  - 10.96.0.10:53
cgroupRoot: /sys/fs/cgroup/unified
nodeName: node-a
seriesGracePeriod: 10m
profileRateWindow: 15s
dnsTopK: 50
dnsNames: hash
dnsPorts: [53, 5353]
readinessTimeout: 1m30s
standalone: true
programStats: always
logFormat: json
logLevel: debug
watchStartJitter: 2s
";

#[test]
fn file_sets_every_field() {
    let config = load(FILE, &[]).expect("valid file");
    assert_eq!(
        config,
        Config {
            listen: addr("127.0.0.1:9100"),
            apiservers: vec![addr("10.96.0.1:443"), addr("[fd00::1]:6443")],
            dns_servers: vec![addr("10.96.0.10:53")],
            dns_ports: vec![53, 5353],
            cgroup_root: Some("/sys/fs/cgroup/unified".into()),
            node_name: Some("node-a".into()),
            kubeconfig: None,
            series_grace_period: Duration::from_secs(600),
            profile_rate_window: Duration::from_secs(15),
            dns_top_k: 50,
            dns_names: DnsNames::Hash,
            readiness_timeout: Duration::from_secs(90),
            standalone: true,
            program_stats: ProgramStats::Always,
            log_format: LogFormat::Json,
            log_level: Some("debug".into()),
            watch_start_jitter: Duration::from_secs(2),
        }
    );
}

#[test]
fn log_flags_override_the_file_and_bad_values_name_the_field() {
    let config = load(FILE, &["--log-format", "text", "--log-level", "warn"]).expect("valid");
    assert_eq!(
        (config.log_format, config.log_level.as_deref()),
        (LogFormat::Text, Some("warn"))
    );
    let e = error("logLevel: 'info,collector=loud'", &[]);
    assert!(e.contains("logLevel (--log-level)"), "{e}");
    let e = error("logFormat: xml", &[]);
    assert!(
        e.contains("logFormat (--log-format)") && e.contains("text or json"),
        "{e}"
    );
    let e = error("", &["--watch-start-jitter", "10m"]);
    assert!(e.contains("watchStartJitter (--watch-start-jitter)"), "{e}");
    assert_eq!(
        load("", &[]).expect("defaults").watch_start_jitter,
        Duration::from_secs(5)
    );
}

#[test]
fn flags_override_the_file_and_lists_replace() {
    let config = load(
        FILE,
        &[
            "--listen",
            "0.0.0.0:9978",
            "--apiserver",
            "192.168.1.1:6443,192.168.1.2:6443",
            "--dns-top-k",
            "5",
            "--series-grace-period",
            "90s",
            "--profile-rate-window",
            "1m",
        ],
    )
    .expect("valid");
    assert_eq!(config.profile_rate_window, Duration::from_secs(60));
    assert_eq!(config.listen, addr("0.0.0.0:9978"));
    assert_eq!(
        config.apiservers,
        vec![addr("192.168.1.1:6443"), addr("192.168.1.2:6443")]
    );
    assert_eq!(config.dns_top_k, 5);
    assert_eq!(config.series_grace_period, Duration::from_secs(90));
    // Not given as flags: the file's values stay.
    assert_eq!(config.dns_servers, vec![addr("10.96.0.10:53")]);
    assert_eq!(config.readiness_timeout, Duration::from_secs(90));
    assert!(load("", &["--standalone"]).expect("valid").standalone);
    assert_eq!(
        load(FILE, &["--program-stats", "off"])
            .expect("valid")
            .program_stats,
        ProgramStats::Off
    );
}

#[test]
fn dns_names_flag_overrides_the_file_and_names_its_modes() {
    assert_eq!(
        load(FILE, &["--dns-names", "off"])
            .expect("valid")
            .dns_names,
        DnsNames::Off
    );
    assert_eq!(
        load("dnsNames: plain", &[]).expect("valid").dns_names,
        DnsNames::Plain
    );
    let e = error("dnsNames: sha256", &[]);
    assert!(
        e.contains("dnsNames (--dns-names)") && e.contains("plain, hash or off"),
        "{e}"
    );
    let e = Cli::try_parse_from(["headroom-collector", "--dns-names", "hidden"])
        .expect_err("not a mode")
        .to_string();
    assert!(e.contains("[possible values: off, hash, plain]"), "{e}");
}

#[test]
fn program_stats_names_its_modes() {
    let e = error("programStats: sometimes", &[]);
    assert!(
        e.contains("programStats (--program-stats)") && e.contains("sampled, always or off"),
        "{e}"
    );
    let e = Cli::try_parse_from(["headroom-collector", "--program-stats", "sometimes"])
        .expect_err("not a mode")
        .to_string();
    assert!(
        e.contains("sometimes") && e.contains("[possible values: sampled, always, off]"),
        "{e}"
    );
}

#[test]
fn kubeconfig_from_the_file_or_the_flag() {
    // Any existing file passes validation; the client reads it at start-up.
    let manifest = concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml");
    let config = load(&format!("kubeconfig: {manifest}"), &[]).expect("valid");
    assert_eq!(config.kubeconfig, Some(PathBuf::from(manifest)));
    let config = load("", &["--kubeconfig", manifest]).expect("valid");
    assert_eq!(config.kubeconfig, Some(PathBuf::from(manifest)));
    assert_eq!(
        error("", &["--kubeconfig", "/nonexistent/kubeconfig"]),
        "invalid configuration: kubeconfig (--kubeconfig): /nonexistent/kubeconfig is not a \
         file; give the path of a kubeconfig, or leave it unset to use the pod's service account"
    );
}

#[test]
fn load_reads_the_file_named_by_config() {
    let path = std::env::temp_dir().join(format!("headroom-config-{}.yaml", std::process::id()));
    std::fs::write(&path, "dnsTopK: 7\nnodeName: n1\n").expect("write config");
    let loaded = Config::load(&args(&[
        "--config",
        path.to_str().expect("utf-8"),
        "--node-name",
        "n2",
    ]));
    let _ = std::fs::remove_file(&path);
    let config = loaded.expect("valid");
    assert_eq!(config.dns_top_k, 7);
    assert_eq!(config.node_name.as_deref(), Some("n2"));
}

#[test]
fn a_missing_file_is_named() {
    let err = Config::load(&args(&["--config", "/nonexistent/headroom.yaml"]))
        .expect_err("missing")
        .to_string();
    assert!(err.contains("/nonexistent/headroom.yaml"), "{err}");
}

#[test]
fn an_error_in_a_file_names_the_file_and_key() {
    let path = std::env::temp_dir().join(format!("headroom-bad-{}.yaml", std::process::id()));
    std::fs::write(&path, "seriesGracePeriod: soon\n").expect("write config");
    let loaded = Config::load(&args(&["--config", path.to_str().expect("utf-8")]));
    let _ = std::fs::remove_file(&path);
    let err = loaded.expect_err("invalid").to_string();
    assert!(err.contains(&path.display().to_string()), "{err}");
    assert!(
        err.contains("seriesGracePeriod (--series-grace-period)"),
        "{err}"
    );
    assert!(err.contains("\"soon\" is not a duration"), "{err}");
}

#[test]
fn each_invalid_field_is_named() {
    let cases: &[(&str, &[&str], &str)] = &[
        ("listen: nowhere", &[], "listen (--listen)"),
        ("", &["--listen", "0.0.0.0:0"], "listen (--listen)"),
        (
            "apiServers: [10.96.0.1]",
            &[],
            "apiServers (--apiserver)[0]",
        ),
        (
            "apiServers: [10.96.0.1:0]",
            &[],
            "apiServers (--apiserver)[0]",
        ),
        (
            "apiServers: [10.96.0.1:443, 10.96.0.1:443]",
            &[],
            "apiServers (--apiserver)[1]",
        ),
        (
            "dnsServers: ['0.0.0.0:53']",
            &[],
            "dnsServers (--dns-server)[0]",
        ),
        (
            "apiServers: [10.0.0.1:53]\ndnsServers: [10.0.0.1:53]",
            &[],
            "dnsServers (--dns-server)",
        ),
        (
            "cgroupRoot: sys/fs/cgroup",
            &[],
            "cgroupRoot (--cgroup-root)",
        ),
        ("nodeName: Node_A", &[], "nodeName (--node-name)"),
        (
            "kubeconfig: /nonexistent/kubeconfig",
            &[],
            "kubeconfig (--kubeconfig)",
        ),
        ("", &["--node-name=-a"], "nodeName (--node-name)"),
        (
            "seriesGracePeriod: 300",
            &[],
            "seriesGracePeriod (--series-grace-period)",
        ),
        (
            "seriesGracePeriod: 0s",
            &[],
            "seriesGracePeriod (--series-grace-period)",
        ),
        (
            "seriesGracePeriod: 25h",
            &[],
            "seriesGracePeriod (--series-grace-period)",
        ),
        ("dnsTopK: 0", &[], "dnsTopK (--dns-top-k)"),
        ("dnsTopK: 5000", &[], "dnsTopK (--dns-top-k)"),
        (
            "readinessTimeout: 500ms",
            &[],
            "readinessTimeout (--readiness-timeout)",
        ),
    ];
    for (yaml, flags, field) in cases {
        let err = error(yaml, flags);
        assert!(
            err.starts_with(&format!("invalid configuration: {field}: ")),
            "{yaml:?} {flags:?}: {err}"
        );
    }
}

#[test]
fn errors_say_what_to_change() {
    assert_eq!(
        error("dnsTopK: 0", &[]),
        "invalid configuration: dnsTopK (--dns-top-k): 0 is out of range; give 1 to 1024"
    );
    assert_eq!(
        error("apiServers: [apiserver:443]", &[]),
        "invalid configuration: apiServers (--apiserver)[0]: \"apiserver:443\" is not \
         ADDRESS:PORT, such as 10.96.0.1:443 or [fd00::1]:443"
    );
}

#[test]
fn unknown_keys_and_wrong_types_are_rejected_with_the_key() {
    let err = error("dnsTopk: 5", &[]);
    assert!(err.contains("dnsTopk") && err.contains("dnsTopK"), "{err}");
    let err = error("dnsTopK: many", &[]);
    assert!(err.contains("dnsTopK"), "{err}");
}

#[test]
fn bad_flags_are_refused_by_the_parser_with_the_flag() {
    let err = Cli::try_parse_from(["headroom-collector", "--dns-top-k", "x"])
        .expect_err("not a number")
        .to_string();
    assert!(err.contains("--dns-top-k"), "{err}");
    let err = Cli::try_parse_from(["headroom-collector", "--readiness-timeout", "5"])
        .expect_err("no unit")
        .to_string();
    assert!(err.contains("--readiness-timeout"), "{err}");
}

#[test]
fn durations() {
    for (text, expected) in [
        ("300ms", Duration::from_millis(300)),
        ("30s", Duration::from_secs(30)),
        ("5m", Duration::from_secs(300)),
        ("1h30m", Duration::from_secs(5400)),
        ("1m30s500ms", Duration::from_millis(90_500)),
    ] {
        assert_eq!(parse_duration(text), Ok(expected), "{text}");
        assert_eq!(parse_duration(&format_duration(expected)), Ok(expected));
    }
    for bad in ["", "5", "m", "5 m", "1.5s", "5d", "-1s", "s5"] {
        assert!(parse_duration(bad).is_err(), "{bad:?}");
    }
    assert_eq!(format_duration(Duration::from_secs(90)), "1m30s");
}

#[test]
fn endpoints_for_the_kernel_map() {
    let config = load(FILE, &[]).expect("valid");
    let kinds: Vec<EndpointKind> = config.endpoints().map(|(_, kind)| kind).collect();
    assert_eq!(
        kinds,
        [
            EndpointKind::ApiServer,
            EndpointKind::ApiServer,
            EndpointKind::Dns,
            EndpointKind::Dns,
            EndpointKind::Dns
        ]
    );
    let first = config.endpoints().next().expect("one").0;
    assert_eq!(first, EndpointKey::v4([10, 96, 0, 1], 443));
}

#[test]
fn dns_is_port_53_on_every_address_unless_told_otherwise() {
    let config = load("", &[]).expect("defaults");
    assert_eq!(config.dns_ports, [53]);
    let any = collector_ebpf::EndpointKey::any_address(53);
    assert!(
        config
            .endpoints()
            .any(|(key, kind)| key == any && kind == collector_ebpf::EndpointKind::Dns),
        "the default puts the any-address entry for port 53 in the kernel's table"
    );
    let config = load("", &["--dns-port", "53,5353"]).expect("two ports");
    assert_eq!(config.dns_ports, [53, 5353]);
    let error = load("", &["--dns-port", "0"])
        .expect_err("port 0")
        .to_string();
    assert!(error.contains("dnsPorts (--dns-port)[0]"), "{error}");
    let error = load("", &["--dns-port", "6443", "--apiserver", "10.0.0.1:6443"])
        .expect_err("the API server's port")
        .to_string();
    assert!(error.contains("10.0.0.1:6443"), "{error}");
}
