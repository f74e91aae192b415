use std::{sync::Arc, time::Duration};

use anyhow::Context as _;
use clap::Parser;
use collector::{
    agent::{self, Agent, Discovery},
    cgroup,
    cluster::{self, BackoffConfig, Cluster, ClusterConfig, Mode},
    config::{Args, Config},
    dns::DnsConfig,
    ebpf::Probes,
    logging,
    metrics::{Metrics, SharedSnapshot, bpf_stats},
    preflight,
    profile::{self, ProfileStore, SharedProfiles, StoreConfig},
    report,
    server::{self, AppState, Readiness},
};

/// Headroom collector: measures, per pod and node process, the traffic sent to the
/// Kubernetes API server and to DNS, and serves it as Prometheus metrics.
#[derive(Debug, Parser)]
#[command(name = "headroom-collector", version)]
struct Cli {
    #[command(flatten)]
    config: Args,
    /// Exit after this many seconds instead of waiting for SIGTERM/SIGINT (demos, tests).
    #[arg(long, value_name = "SECONDS")]
    run_for: Option<u64>,
    /// At exit, print what was measured per cgroup as a table on stdout.
    #[arg(long)]
    print_table: bool,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let config = Config::load(&cli.config)?;
    logging::init(config.log_format, config.log_level.as_deref());
    let mode = cluster::mode(
        |name| match name {
            cluster::NODE_NAME_ENV => config.node_name.clone(),
            _ => std::env::var(name).ok(),
        },
        config.standalone,
        config.kubeconfig.as_deref(),
    )?;
    let checked = preflight::preflight(&config)?;
    if let Some(v1_root) = &checked.hybrid_root {
        tracing::warn!(
            "cgroup root {} is not cgroup v2 (a hybrid host): using its cgroup v2 mount {}",
            v1_root.display(),
            checked.cgroup_root.display()
        );
    }
    let mut probes =
        Probes::attach(&checked.cgroup_root).context("starting the kernel programs")?;
    if let Some(why) = probes.exec_unavailable() {
        tracing::warn!(
            "the exec tracepoint is not attached ({why}); node processes are \
             named from /proc and their comm, so one that exits before it is named goes by its \
             sending thread's name. Mount tracefs (/sys/kernel/tracing) to name them all"
        );
    }
    for (key, kind) in config.endpoints() {
        probes.add_endpoint(key, kind)?;
    }
    // Run-time statistics feed the per-program self-metrics; without them the collector
    // still measures (the task warns once if they cannot be turned on).
    let stats_clock = bpf_stats::StatsClock::default();
    let stats = tokio::spawn(bpf_stats::run(
        config.program_stats,
        bpf_stats::Sampling::DEFAULT,
        stats_clock.clone(),
    ));

    let dns = DnsConfig {
        top_names: config.dns_top_k,
        ..DnsConfig::default()
    };
    // In a cluster: this node's pods name the cgroups and discovered endpoints join
    // the flags' ones live. Standalone: the flags' endpoints, as put in above.
    let in_cluster = |node: &String, service| ClusterConfig {
        gone_grace: config.series_grace_period,
        backoff: BackoffConfig {
            start_jitter: config.watch_start_jitter,
            ..BackoffConfig::default()
        },
        ..ClusterConfig::new(node.clone(), service)
    };
    let watching = match mode {
        Mode::InCluster { service, node } => {
            Some((Cluster::in_cluster(in_cluster(&node, service))?, node))
        }
        Mode::Kubeconfig { path, node } => {
            let (client, server) = cluster::kubeconfig_client(&path, &node).await?;
            Some((Cluster::start(client, in_cluster(&node, server)), node))
        }
        Mode::Standalone => None,
    };
    let (cluster, discovery, node) = match watching {
        Some((cluster, node)) => {
            let discovery = Discovery::new(
                cluster.apiserver_endpoints(),
                cluster.dns_servers(),
                config.apiservers.iter().copied(),
                config.dns_servers.iter().copied(),
            );
            (cluster, Some(discovery), node)
        }
        None => {
            let cluster = Cluster::standalone(
                config.apiservers.iter().copied().collect(),
                config.dns_servers.iter().copied().collect(),
            );
            let node = config.node_name.clone().unwrap_or_else(hostname);
            (cluster, None, node)
        }
    };
    let profiles = SharedProfiles::new(
        ProfileStore::new(
            StoreConfig {
                rate_range_seconds: config.profile_rate_window.as_secs_f64(),
                ..StoreConfig::default()
            },
            profile::now(),
        ),
        &node,
    );
    let mut agent = Agent::new(probes, dns)?
        .with_grace(config.series_grace_period)
        .with_pods(cluster.pods().clone())
        .with_profiles(profiles.clone())
        .with_stats_clock(stats_clock);
    let mut reader = agent.event_reader()?;
    let snapshot = SharedSnapshot::default();
    let readiness = Readiness::new(config.readiness_timeout);
    readiness.set_attached(true);
    let mut metrics = Metrics::new(snapshot.clone());
    if discovery.is_some() {
        metrics.register_watches(cluster.health().clone());
        readiness.set_watches(cluster.health().clone());
    }
    let app = server::router(AppState {
        metrics: Arc::new(metrics),
        readiness: readiness.clone(),
        dns_names: server::dns_names::NamePolicy::new(config.dns_names),
    })
    .merge(profile::router(profiles));
    let (stop_http, http_stopped) = tokio::sync::oneshot::channel::<()>();
    let http = tokio::spawn(server::serve(checked.listener, app, async {
        let _ = http_stopped.await;
    }));
    tracing::info!(
        cgroup_root = %checked.cgroup_root.display(),
        mode = if discovery.is_some() { "in cluster" } else { "standalone" },
        node = %node,
        "measuring; serving http://{}/metrics and /profiles",
        config.listen
    );

    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    let run_for = cli.run_for;
    let shutdown = async move {
        let deadline = async {
            match run_for {
                Some(secs) => tokio::time::sleep(Duration::from_secs(secs)).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = deadline => {}
            _ = sigterm.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    };
    agent::run(
        &mut agent,
        &mut reader,
        &snapshot,
        discovery,
        || readiness.beat(),
        shutdown,
    )
    .await?;

    let _ = stop_http.send(());
    http.await.context("HTTP server task")??;
    // Cancelling the task drops its guard: the kernel's stats go off with the programs.
    stats.abort();
    if cli.print_table {
        print_table(agent.probes_mut())?;
    }
    // Dropping the agent drops the probes, which detaches every program.
    drop(agent);
    drop(cluster);
    Ok(())
}

/// The node's name without a cluster or `--node-name`: the host name.
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_default()
}

fn print_table(probes: &Probes) -> anyhow::Result<()> {
    let traffic = probes.traffic()?;
    // One walk of the hierarchy for every cgroup in the table.
    let ids = traffic.keys().map(|k| k.cgroup_id).collect();
    let paths = cgroup::paths_of(probes.cgroup_root(), &ids).paths;
    let rows = report::rows(&traffic, |id| {
        paths
            .get(&id)
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| format!("cgroup:{id} (gone)"))
    });
    print!("{}", report::render(&rows));
    Ok(())
}
