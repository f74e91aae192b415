//! `headroom-webhook`: the admission server, the offline check and the CRD printer.
#![forbid(unsafe_code)]

use std::{net::SocketAddr, path::PathBuf, process::ExitCode, time::Duration};

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand, ValueEnum};
use webhook::{
    budget::{ControlPlaneBudget, crd_yaml},
    check,
    inventory::Inventory,
    profile::ProfileList,
    server, sources,
};

#[derive(Parser, Debug)]
#[command(
    name = "headroom-webhook",
    version,
    about = "Admission by projected control-plane load"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Serve AdmissionReview v1 over HTTPS, and /metrics, /healthz, /readyz over HTTP.
    Serve(ServeArgs),
    /// Evaluate the workloads in manifest files offline. Exit 0: all allowed, 1: something
    /// denied, 2: bad input or usage.
    Check(CheckArgs),
    /// Print the ControlPlaneBudget CRD as YAML.
    Crd,
}

#[derive(Args, Debug)]
#[group(id = "nodes_source", required = true, multiple = false)]
struct NodesArgs {
    /// Stand-in inventory of N identical Linux nodes without taints.
    #[arg(long, group = "nodes_source")]
    nodes: Option<u64>,
    /// Nodes from `kubectl get nodes -o yaml` (a List or Node documents).
    #[arg(long, group = "nodes_source")]
    nodes_file: Option<PathBuf>,
}

impl NodesArgs {
    fn load(&self) -> Result<Inventory, webhook::Error> {
        match (&self.nodes, &self.nodes_file) {
            (Some(n), _) => Ok(Inventory::uniform(*n)),
            (None, Some(path)) => {
                let text =
                    std::fs::read_to_string(path).map_err(|source| webhook::Error::Read {
                        path: path.clone(),
                        source,
                    })?;
                Inventory::parse(&path.display().to_string(), &text)
            }
            (None, None) => Ok(Inventory::default()),
        }
    }
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum Output {
    Table,
    Json,
}

#[derive(Args, Debug)]
#[command(group(clap::ArgGroup::new("profile_source").required(true).args(["profiles", "prometheus"])))]
struct CheckArgs {
    /// Manifest file, directory (every *.yaml, *.yml, *.json) or `-` for stdin. Repeatable.
    #[arg(short = 'f', long = "filename", required = true)]
    files: Vec<PathBuf>,
    /// ControlPlaneBudget YAML file.
    #[arg(long)]
    budget: PathBuf,
    /// ProfileList JSON file (a collector's /profiles output).
    #[arg(long)]
    profiles: Option<PathBuf>,
    /// Prometheus base URL (http://host:9090) with Headroom's recording rules.
    #[arg(long)]
    prometheus: Option<String>,
    #[command(flatten)]
    nodes: NodesArgs,
    /// An API server's /metrics (`kubectl get --raw /metrics`), for a budget with
    /// `apiserverRequestsPerSecond: auto`. Give two scrapes some seconds apart for rates
    /// over the window between them.
    #[arg(long, num_args = 1, action = clap::ArgAction::Append)]
    apiserver_metrics: Vec<PathBuf>,
    /// FlowSchemas (`kubectl get flowschemas -o yaml`) that place a workload's service
    /// account in a priority level; default: kube-apiserver's defaults.
    #[arg(long, requires = "apiserver_metrics")]
    flowschemas: Option<PathBuf>,
    #[arg(long, value_enum, default_value = "table")]
    output: Output,
}

#[derive(Args, Debug)]
struct ServeArgs {
    /// HTTPS address for AdmissionReview requests.
    #[arg(long, default_value = "0.0.0.0:8443")]
    listen: SocketAddr,
    /// Plain-HTTP address for /metrics, /healthz and /readyz.
    #[arg(long, default_value = "0.0.0.0:9090")]
    metrics_listen: SocketAddr,
    /// PEM certificate chain; reloaded when it changes.
    #[arg(long)]
    tls_cert: PathBuf,
    /// PEM private key; reloaded when it changes.
    #[arg(long)]
    tls_key: PathBuf,
    /// ControlPlaneBudget YAML file; reloaded when it changes.
    #[arg(long, required_unless_present = "kube", conflicts_with = "kube")]
    budget: Option<PathBuf>,
    /// Watch nodes, HorizontalPodAutoscalers and the ControlPlaneBudget `--budget-name` in
    /// the cluster (in-cluster config or kubeconfig), and write the budget's status.
    #[arg(long)]
    kube: bool,
    /// With --kube: the ControlPlaneBudget to enforce.
    #[arg(long, default_value = "default")]
    budget_name: String,
    /// ProfileList JSON file; reloaded when it changes.
    #[arg(long)]
    profiles: Option<PathBuf>,
    /// Collector base URL (http://node:9100) whose /profiles is polled. Repeatable.
    #[arg(long)]
    collector: Vec<String>,
    /// Prometheus base URL whose recording rules are polled.
    #[arg(long)]
    prometheus: Option<String>,
    /// Seconds between profile refreshes (and file change checks).
    #[arg(long, default_value_t = 15)]
    refresh_seconds: u64,
    /// Stand-in inventory of N identical Linux nodes without taints.
    #[arg(long, conflicts_with_all = ["kube", "nodes_file"], required_unless_present_any = ["kube", "nodes_file"])]
    nodes: Option<u64>,
    /// Nodes from `kubectl get nodes -o yaml`; reloaded when it changes.
    #[arg(long, conflicts_with = "kube")]
    nodes_file: Option<PathBuf>,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            // kube-runtime's watcher warns and kube-client errors on every failed retry;
            // collector::watch logs each change of state once, with what to do.
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
                "info,kube_runtime::watcher=error,kube_client::client::builder=off".into()
            }),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Crd => crd(),
        Command::Check(args) => run_check(args),
        Command::Serve(args) => serve(args).map(|()| ExitCode::SUCCESS),
    };
    result.unwrap_or_else(|e| {
        eprintln!("error: {e:#}");
        ExitCode::from(check::EXIT_BAD_INPUT)
    })
}

fn crd() -> anyhow::Result<ExitCode> {
    print!("{}", crd_yaml().context("serialising the CRD")?);
    Ok(ExitCode::SUCCESS)
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")
}

fn run_check(args: CheckArgs) -> anyhow::Result<ExitCode> {
    let budget = ControlPlaneBudget::load(&args.budget)?;
    let inventory = args.nodes.load()?;
    let snapshot = match (&args.profiles, &args.prometheus) {
        (Some(path), _) => {
            let bytes = std::fs::read(path).map_err(|source| webhook::Error::Read {
                path: path.clone(),
                source,
            })?;
            let list = ProfileList::parse(&path.display().to_string(), &bytes)?;
            webhook::profile::Snapshot::merge([&list])
        }
        (None, Some(url)) => runtime()?.block_on(sources::prometheus::fetch(url))?,
        (None, None) => anyhow::bail!("one of --profiles or --prometheus is required"),
    };
    let apiserver = match args.apiserver_metrics.as_slice() {
        [] => None,
        files => Some(check::apiserver::load(
            files,
            args.flowschemas.as_deref(),
            budget.spec.limits.target_utilization,
        )?),
    };
    if budget.spec.limits.requests_auto() && apiserver.is_none() {
        anyhow::bail!(
            "{}: apiserverRequestsPerSecond is `auto`: give the API server's metrics with \
             --apiserver-metrics FILE (`kubectl get --raw /metrics > FILE`)",
            args.budget.display()
        );
    }
    let documents = check::read_documents(&args.files)?;
    let report = check::check(
        &documents,
        &budget,
        &snapshot,
        &inventory,
        apiserver.as_ref(),
    )?;
    match args.output {
        Output::Table => print!("{}", report.to_table()),
        Output::Json => println!(
            "{}",
            serde_json::to_string_pretty(&report).context("serialising the report")?
        ),
    }
    if let Some(why) = report.nothing_judged() {
        eprintln!("error: {why}");
    }
    Ok(ExitCode::from(report.exit_code()))
}

fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let nodes = NodesArgs {
        nodes: args.nodes,
        nodes_file: args.nodes_file.clone(),
    };
    let config = server::Config {
        listen: args.listen,
        metrics_listen: args.metrics_listen,
        tls_cert: args.tls_cert,
        tls_key: args.tls_key,
        budget: args.budget,
        cluster: args.kube.then_some(args.budget_name),
        profiles: args.profiles,
        collectors: args.collector,
        prometheus: args.prometheus,
        refresh: Duration::from_secs(args.refresh_seconds.max(1)),
        inventory: nodes.load()?,
        nodes_file: args.nodes_file,
    };
    runtime()?.block_on(server::run(config))?;
    Ok(())
}
