//! TLS on the three front doors: one certificate chain and key (PEM files named in `[tls]`)
//! for HTTP, gRPC and the Redis protocol, and the trust roots for calls to peers.
//!
//! TLS is the cargo feature `tls` (rustls with the ring provider), on in the `tally` binary's
//! default build. A build without the feature refuses a configuration that turns TLS on
//! instead of serving plaintext where TLS was asked for.
//!
//! Why not `axum-server` for HTTPS: its own accept loop would bypass the door's admission
//! ([`crate::connections::Doorkeeper`]: the connection cap, the idle timeout, the accept-error
//! log), and the three doors share one certificate; so the HTTP door hands axum connections
//! whose handshake this file already did, through axum's own `Listener` seam.

use std::path::PathBuf;

use anyhow::bail;
use serde::{Deserialize, Serialize};

/// `[tls]`: off unless both files are set.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsSection {
    /// PEM certificate chain, leaf first. With `key_file`, every front door speaks TLS only.
    pub cert_file: Option<PathBuf>,
    /// PEM private key of the leaf certificate (PKCS#8, PKCS#1 or SEC1).
    pub key_file: Option<PathBuf>,
    /// PEM certificates that peers' certificates must chain to, for rollup hand-over
    /// between instances (default: `cert_file`'s chain).
    pub ca_file: Option<PathBuf>,
}

/// How long a client may take to finish its TLS handshake before the connection is dropped.
#[cfg(feature = "tls")]
const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The loaded certificate and key, ready for each front door.
#[derive(Clone)]
pub struct Tls {
    #[cfg(feature = "tls")]
    inner: std::sync::Arc<imp::Loaded>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tls { .. }")
    }
}

impl Tls {
    /// `None` when `[tls]` leaves TLS off; an error naming the file for anything that does not
    /// load, and for a build without the `tls` feature.
    pub fn load(section: &TlsSection) -> anyhow::Result<Option<Self>> {
        match (&section.cert_file, &section.key_file) {
            (None, None) => Ok(None),
            (Some(_), None) | (None, Some(_)) => {
                bail!("[tls] needs both cert_file and key_file (or neither, for plaintext)")
            }
            (Some(cert), Some(key)) => Self::from_files(cert, key, section.ca_file.as_deref()).map(Some),
        }
    }

    #[cfg(not(feature = "tls"))]
    fn from_files(
        _: &std::path::Path,
        _: &std::path::Path,
        _: Option<&std::path::Path>,
    ) -> anyhow::Result<Self> {
        bail!(
            "[tls] is set, but this tally was built without TLS: build it with the default features (`cargo build --release`)"
        )
    }

    #[cfg(feature = "tls")]
    fn from_files(
        cert: &std::path::Path,
        key: &std::path::Path,
        ca: Option<&std::path::Path>,
    ) -> anyhow::Result<Self> {
        Ok(Self { inner: std::sync::Arc::new(imp::Loaded::from_files(cert, key, ca)?) })
    }
}

#[cfg(feature = "tls")]
pub use imp::TlsListener;

#[cfg(feature = "tls")]
mod imp {
    use std::net::SocketAddr;
    use std::path::Path;
    use std::sync::Arc;

    use anyhow::{Context, bail};
    use rustls::ServerConfig;
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    use tokio::sync::{Semaphore, mpsc};
    use tokio_rustls::TlsAcceptor;
    use tokio_rustls::server::TlsStream;

    use super::{HANDSHAKE_TIMEOUT, Tls};
    use crate::connections::{Admitted, Doorkeeper};

    /// Handshakes in progress at once on the HTTP door; further connections wait in the
    /// kernel's accept queue.
    const MAX_HANDSHAKES: usize = 1024;

    pub struct Loaded {
        cert_pem: Vec<u8>,
        key_pem: Vec<u8>,
        ca_pem: Vec<u8>,
        http: TlsAcceptor,
        resp: TlsAcceptor,
    }

    fn read(path: &Path, what: &str) -> anyhow::Result<Vec<u8>> {
        std::fs::read(path).with_context(|| format!("cannot read the TLS {what} {}", path.display()))
    }

    impl Loaded {
        pub fn from_files(cert: &Path, key: &Path, ca: Option<&Path>) -> anyhow::Result<Self> {
            let cert_pem = read(cert, "certificate")?;
            let key_pem = read(key, "key")?;
            let ca_pem = match ca {
                Some(ca) => read(ca, "CA certificates")?,
                None => cert_pem.clone(),
            };
            let chain = CertificateDer::pem_slice_iter(&cert_pem)
                .collect::<Result<Vec<_>, _>>()
                .with_context(|| format!("{} is not a PEM certificate chain", cert.display()))?;
            if chain.is_empty() {
                bail!("{} holds no PEM certificate", cert.display());
            }
            let private = PrivateKeyDer::from_pem_slice(&key_pem)
                .with_context(|| format!("{} holds no PEM private key", key.display()))?;
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let config = |alpn: &[&[u8]]| -> anyhow::Result<TlsAcceptor> {
                let mut config = ServerConfig::builder_with_provider(provider.clone())
                    .with_safe_default_protocol_versions()?
                    .with_no_client_auth()
                    .with_single_cert(chain.clone(), private.clone_key())
                    .with_context(|| {
                        format!(
                            "the key in {} does not fit the certificate in {}",
                            key.display(),
                            cert.display()
                        )
                    })?;
                config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
                Ok(TlsAcceptor::from(Arc::new(config)))
            };
            Ok(Self { http: config(&[b"h2", b"http/1.1"])?, resp: config(&[])?, cert_pem, key_pem, ca_pem })
        }
    }

    impl Tls {
        /// The gRPC server's TLS settings (tonic handshakes itself).
        pub fn grpc(&self) -> tonic::transport::ServerTlsConfig {
            let identity = tonic::transport::Identity::from_pem(&self.inner.cert_pem, &self.inner.key_pem);
            tonic::transport::ServerTlsConfig::new().identity(identity)
        }

        /// The settings of a gRPC client calling a peer at `host`.
        pub fn peer_client(&self, host: &str) -> tonic::transport::ClientTlsConfig {
            tonic::transport::ClientTlsConfig::new()
                .ca_certificate(tonic::transport::Certificate::from_pem(&self.inner.ca_pem))
                .domain_name(host)
        }

        /// Completes the server side of a handshake on a RESP connection, within the timeout.
        pub async fn accept_resp<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
            &self,
            socket: S,
        ) -> std::io::Result<TlsStream<S>> {
            tokio::time::timeout(HANDSHAKE_TIMEOUT, self.inner.resp.accept(socket))
                .await
                .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "TLS handshake timed out"))?
        }

        /// An HTTP listener that hands out connections once their handshake is done.
        pub fn http_listener(&self, mut listener: Doorkeeper) -> std::io::Result<TlsListener> {
            let local = axum::serve::Listener::local_addr(&listener)?;
            let (tx, rx) = mpsc::channel(64);
            let acceptor = self.inner.http.clone();
            tokio::spawn(async move {
                // Handshakes run in their own tasks, so one slow client cannot stall the rest.
                let permits = Arc::new(Semaphore::new(MAX_HANDSHAKES));
                loop {
                    let Ok(permit) = permits.clone().acquire_owned().await else { return };
                    // The door's own limit, idle timeout and error log apply first.
                    let (socket, peer) = tokio::select! {
                        a = listener.admit() => a,
                        () = tx.closed() => return,
                    };
                    let (acceptor, tx) = (acceptor.clone(), tx.clone());
                    tokio::spawn(async move {
                        match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(socket)).await {
                            Ok(Ok(stream)) => {
                                let _ = tx.send((stream, peer)).await;
                            }
                            Ok(Err(e)) => tracing::debug!(error = %e, %peer, "TLS handshake failed"),
                            Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                        }
                        drop(permit);
                    });
                }
            });
            Ok(TlsListener { incoming: rx, local })
        }
    }

    impl crate::connections::CountsCalls for TlsStream<Admitted> {
        fn calls(&self) -> Option<Arc<crate::connections::Activity>> {
            self.get_ref().0.calls()
        }
    }

    /// TLS connections for `axum::serve`, handshakes already done.
    pub struct TlsListener {
        incoming: mpsc::Receiver<(TlsStream<Admitted>, SocketAddr)>,
        local: SocketAddr,
    }

    impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, TlsListener>>
        for crate::connections::ClientAddr
    {
        fn connect_info(stream: axum::serve::IncomingStream<'_, TlsListener>) -> Self {
            Self(*stream.remote_addr())
        }
    }

    impl axum::serve::Listener for TlsListener {
        type Io = TlsStream<Admitted>;
        type Addr = SocketAddr;

        async fn accept(&mut self) -> (Self::Io, Self::Addr) {
            match self.incoming.recv().await {
                Some(connection) => connection,
                // The accept task only ends when this listener is dropped.
                None => std::future::pending().await,
            }
        }

        fn local_addr(&self) -> std::io::Result<SocketAddr> {
            Ok(self.local)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section(cert: Option<&str>, key: Option<&str>) -> TlsSection {
        TlsSection { cert_file: cert.map(PathBuf::from), key_file: key.map(PathBuf::from), ca_file: None }
    }

    #[test]
    fn no_files_means_plaintext() {
        assert!(Tls::load(&TlsSection::default()).expect("plaintext").is_none());
    }

    #[test]
    fn a_certificate_without_a_key_is_refused() {
        let e = Tls::load(&section(Some("cert.pem"), None)).expect_err("half a section");
        assert!(e.to_string().contains("both cert_file and key_file"), "{e}");
        let e = Tls::load(&section(None, Some("key.pem"))).expect_err("half a section");
        assert!(e.to_string().contains("both cert_file and key_file"), "{e}");
    }

    #[cfg(not(feature = "tls"))]
    #[test]
    fn a_build_without_tls_refuses_to_serve_plaintext_where_tls_was_asked_for() {
        let e = Tls::load(&section(Some("cert.pem"), Some("key.pem"))).expect_err("no TLS in this build");
        assert!(e.to_string().contains("built without TLS"), "{e}");
    }

    #[cfg(feature = "tls")]
    #[test]
    fn unreadable_or_wrong_files_are_named_in_the_error() {
        let dir = std::env::temp_dir().join(format!("tally-tls-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let missing = dir.join("missing.pem");
        let e = Tls::load(&section(missing.to_str(), missing.to_str())).expect_err("missing file");
        assert!(format!("{e:#}").contains("missing.pem"), "{e:#}");
        let junk = dir.join("junk.pem");
        std::fs::write(&junk, "not a certificate").expect("write");
        let e = Tls::load(&section(junk.to_str(), junk.to_str())).expect_err("not PEM");
        assert!(format!("{e:#}").contains("junk.pem"), "{e:#}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
