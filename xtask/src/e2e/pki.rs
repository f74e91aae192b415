//! The control plane's files in the scratch directory: a CA and the API server's serving
//! certificate (SAN 127.0.0.1, localhost), the service-account key pair, the static token
//! file, the audit policy and an admin kubeconfig. Made with openssl, as a cluster
//! operator would by hand.
use std::{
    fs,
    io::Read as _,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::Context as _;

use crate::shell;

/// Paths of everything the control plane and the tests read.
#[derive(Debug)]
pub struct Files {
    pub ca_cert: PathBuf,
    pub ca_key: PathBuf,
    pub serving_cert: PathBuf,
    pub serving_key: PathBuf,
    pub sa_key: PathBuf,
    pub sa_pub: PathBuf,
    pub tokens: PathBuf,
    pub audit_policy: PathBuf,
    pub audit_log: PathBuf,
    pub kubeconfig: PathBuf,
    pub admin_token: String,
}

/// Every request at level Metadata (who, what, the response code and the webhook's audit
/// annotations), without the RequestReceived stage: one entry per request is
/// ResponseComplete, or ResponseStarted for a watch.
const AUDIT_POLICY: &str = "apiVersion: audit.k8s.io/v1\nkind: Policy\n\
                            omitStages: [RequestReceived]\nrules:\n  - level: Metadata\n";

pub fn write(dir: &Path) -> anyhow::Result<Files> {
    let f = |name: &str| dir.join(name);
    let files = Files {
        ca_cert: f("ca.crt"),
        ca_key: f("ca.key"),
        serving_cert: f("apiserver.crt"),
        serving_key: f("apiserver.key"),
        sa_key: f("sa.key"),
        sa_pub: f("sa.pub"),
        tokens: f("tokens.csv"),
        audit_policy: f("audit-policy.yaml"),
        audit_log: f("audit.log"),
        kubeconfig: f("kubeconfig"),
        admin_token: random_token()?,
    };
    certificates(dir, &files)?;
    openssl(dir, &["genpkey", "-algorithm", "RSA", "-out", "sa.key"])?;
    openssl(dir, &["pkey", "-in", "sa.key", "-pubout", "-out", "sa.pub"])?;
    write_file(
        &files.tokens,
        &format!("{},admin,admin-uid,system:masters\n", files.admin_token),
    )?;
    write_file(&files.audit_policy, AUDIT_POLICY)?;
    Ok(files)
}

fn certificates(dir: &Path, files: &Files) -> anyhow::Result<()> {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "2",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
            "-subj",
            "/CN=headroom-e2e-ca",
        ],
    )?;
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "apiserver.key",
            "-out",
            "apiserver.csr",
            "-subj",
            "/CN=kube-apiserver",
        ],
    )?;
    write_file(
        &dir.join("apiserver.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes.default.svc\n\
         extendedKeyUsage=serverAuth\n",
    )?;
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "apiserver.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "apiserver.ext",
            "-out",
            "apiserver.crt",
        ],
    )?;
    debug_assert!(files.serving_cert.exists() && files.ca_key.exists());
    Ok(())
}

/// The admin kubeconfig (token auth) for the server at `url`.
pub fn write_kubeconfig(files: &Files, url: &str) -> anyhow::Result<()> {
    write_file(
        &files.kubeconfig,
        &format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: e2e\n  cluster:\n    \
             server: {url}\n    certificate-authority: {ca}\nusers:\n- name: admin\n  user:\n    \
             token: {token}\ncontexts:\n- name: e2e\n  context:\n    cluster: e2e\n    \
             user: admin\ncurrent-context: e2e\n",
            ca = files.ca_cert.display(),
            token = files.admin_token,
        ),
    )
}

fn openssl(dir: &Path, args: &[&str]) -> anyhow::Result<()> {
    let out = shell::output(Command::new("openssl").current_dir(dir).args(args))?;
    if !out.status.success() {
        anyhow::bail!(
            "openssl {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

fn write_file(path: &Path, text: &str) -> anyhow::Result<()> {
    fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

fn random_token() -> anyhow::Result<String> {
    let mut bytes = [0u8; 24];
    fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .context("reading /dev/urandom")?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}
