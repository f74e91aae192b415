use std::{path::PathBuf, time::Duration};

use anyhow::Context as _;
use clap::Parser;
use collector::{cgroup, ebpf::Probes, endpoint, report};
use collector_ebpf::{EndpointKey, EndpointKind};

/// Headroom collector: measures, per cgroup, the traffic each pod and node process
/// sends to the Kubernetes API server and to DNS.
#[derive(Debug, Parser)]
#[command(name = "headroom-collector", version)]
struct Args {
    /// API server endpoint to measure (ADDRESS:PORT); repeat for several.
    #[arg(long = "apiserver", env = "HEADROOM_APISERVER", value_delimiter = ',', value_parser = parse_endpoint)]
    apiservers: Vec<EndpointKey>,
    /// DNS server endpoint to measure (ADDRESS:PORT); repeat for several.
    #[arg(long = "dns-server", env = "HEADROOM_DNS_SERVER", value_delimiter = ',', value_parser = parse_endpoint)]
    dns_servers: Vec<EndpointKey>,
    /// cgroup v2 mount point [default: detected from /proc/self/mountinfo].
    #[arg(long)]
    cgroup_root: Option<PathBuf>,
    /// Print the per-cgroup table this often (seconds); 0 prints only at exit.
    #[arg(long, default_value_t = 0)]
    report_every: u64,
    /// Exit after this many seconds instead of waiting for SIGTERM/SIGINT.
    #[arg(long)]
    run_for: Option<u64>,
}

fn parse_endpoint(value: &str) -> Result<EndpointKey, String> {
    endpoint::parse(value).map_err(|e| e.to_string())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let root = match args.cgroup_root {
        Some(root) => root,
        None => cgroup::find_root()?,
    };
    let mut probes = Probes::attach(&root).context("starting the kernel programs")?;
    for key in args.apiservers {
        probes.add_endpoint(key, EndpointKind::ApiServer)?;
    }
    for key in args.dns_servers {
        probes.add_endpoint(key, EndpointKind::Dns)?;
    }
    eprintln!(
        "headroom-collector: measuring from cgroup root {}",
        root.display()
    );

    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    let deadline = async {
        match args.run_for {
            Some(secs) => tokio::time::sleep(Duration::from_secs(secs)).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(deadline);
    let mut ticker = tokio::time::interval(Duration::from_secs(args.report_every.max(1)));
    ticker.tick().await;
    loop {
        tokio::select! {
            _ = &mut deadline => break,
            _ = sigterm.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
            _ = ticker.tick(), if args.report_every > 0 => print_table(&probes)?,
        }
    }
    print_table(&probes)?;
    // Dropping the probes detaches every program.
    drop(probes);
    Ok(())
}

fn print_table(probes: &Probes) -> anyhow::Result<()> {
    let traffic = probes.traffic()?;
    let root = probes.cgroup_root();
    let rows = report::rows(&traffic, |id| {
        cgroup::path_of(root, id)
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| format!("cgroup:{id} (gone)"))
    });
    print!("{}", report::render(&rows));
    Ok(())
}
