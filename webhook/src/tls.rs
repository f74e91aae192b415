//! TLS for the admission server: rustls, TLS 1.2 and 1.3, and a certificate resolver whose
//! certificate and key are reloaded when their files change (cert-manager rotates them in
//! place).

use std::{
    fmt,
    path::{Path, PathBuf},
    sync::{Arc, Mutex, RwLock},
    time::SystemTime,
};

use rustls::{
    ServerConfig,
    crypto::CryptoProvider,
    pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject},
    server::{ClientHello, ResolvesServerCert},
    sign::CertifiedKey,
};

use crate::error::Error;

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads a PEM certificate chain and private key.
pub fn load_certified_key(cert: &Path, key: &Path) -> Result<CertifiedKey, Error> {
    let tls = |what, path: &Path, message: String| Error::Tls {
        what,
        path: path.to_owned(),
        message,
    };
    let cert_pem = std::fs::read(cert).map_err(|e| tls("certificate", cert, e.to_string()))?;
    let key_pem = std::fs::read(key).map_err(|e| tls("key", key, e.to_string()))?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| tls("certificate", cert, e.to_string()))?;
    if chain.is_empty() {
        return Err(tls(
            "certificate",
            cert,
            "no PEM certificate found".to_owned(),
        ));
    }
    let private_key =
        PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| tls("key", key, e.to_string()))?;
    let certified = CertifiedKey::from_der(chain, private_key, &provider())
        .map_err(|e| tls("key", key, e.to_string()))?;
    Ok(certified)
}

/// File identity used to notice a change: modification time and length of both files.
type Stamp = Option<(SystemTime, u64, SystemTime, u64)>;

fn stamp(cert: &Path, key: &Path) -> Stamp {
    let c = std::fs::metadata(cert).ok()?;
    let k = std::fs::metadata(key).ok()?;
    Some((c.modified().ok()?, c.len(), k.modified().ok()?, k.len()))
}

/// Serves the current certificate; [`ReloadingCert::reload_if_changed`] swaps it.
pub struct ReloadingCert {
    cert_path: PathBuf,
    key_path: PathBuf,
    current: RwLock<Arc<CertifiedKey>>,
    stamp: Mutex<Stamp>,
}

impl fmt::Debug for ReloadingCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReloadingCert")
            .field("cert_path", &self.cert_path)
            .field("key_path", &self.key_path)
            .finish_non_exhaustive()
    }
}

impl ReloadingCert {
    pub fn new(cert_path: PathBuf, key_path: PathBuf) -> Result<ReloadingCert, Error> {
        let stamp = stamp(&cert_path, &key_path);
        let key = load_certified_key(&cert_path, &key_path)?;
        Ok(ReloadingCert {
            cert_path,
            key_path,
            current: RwLock::new(Arc::new(key)),
            stamp: Mutex::new(stamp),
        })
    }

    /// Reloads when either file changed. Returns whether a new certificate is in use; on a
    /// bad new pair the old certificate stays and the error is returned, once: the pair is
    /// tried again when either file changes again (a rotation writes the second file).
    pub fn reload_if_changed(&self) -> Result<bool, Error> {
        let now = stamp(&self.cert_path, &self.key_path);
        let mut last = self.stamp.lock().unwrap_or_else(|e| e.into_inner());
        if now == *last {
            return Ok(false);
        }
        *last = now;
        let key = load_certified_key(&self.cert_path, &self.key_path)?;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(key);
        Ok(true)
    }

    pub fn current(&self) -> Arc<CertifiedKey> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

/// TLS 1.2+ server configuration with HTTP/2 and HTTP/1.1 by ALPN.
pub fn server_config(resolver: Arc<dyn ResolvesServerCert>) -> Result<Arc<ServerConfig>, Error> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| Error::Tls {
            what: "configuration",
            path: PathBuf::new(),
            message: e.to_string(),
        })?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
