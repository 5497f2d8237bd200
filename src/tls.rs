//! Certificates and TLS: the cluster CA (`cairn certs init`), node
//! certificates (`cairn certs issue`), mutual TLS between nodes, and the
//! admin API's optional HTTPS.
//!
//! Trust model: one CA per cluster, made on an operator's laptop; every node
//! gets a certificate from it naming its id (`node-<id>.cairn`, a DNS
//! subject alternative name). A node dials a peer expecting that peer's id
//! in its certificate, and accepts only connections that present a
//! certificate from the cluster CA; a machine with a certificate from any
//! other CA cannot connect, vote or join. An accepted connection carries the
//! node ids its certificate names ([`PeerIdentity`]), and the transport
//! refuses any request claiming another sender: a machine holding node 2's
//! certificate cannot vote, lead or heartbeat as node 3.
//! Plaintext (no `[tls]` section) is for a bench only: anyone on the LAN
//! could then join the Raft group or inject votes.
//!
//! All TLS uses rustls with the `ring` provider, chosen explicitly so the
//! build never needs cmake (aws-lc-rs) on a Pi.

use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use std::collections::BTreeSet;

use cairn_raft::transport::AcceptFuture;
use cairn_raft::transport::DialFuture;
use cairn_raft::transport::PeerId;
use cairn_raft::transport::PeerStream;
use cairn_raft::Accepted;
use cairn_raft::Acceptor;
use cairn_raft::Dialer;
use cairn_raft::PeerIdentity;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::PrivateKeyDer;
use rustls::pki_types::ServerName;
use serde::Deserialize;
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::net::TcpStream;

use crate::error::Error;

/// File names inside a certificate directory.
pub const CA_CERT: &str = "ca.pem";
/// The CA's private key (keep it off the rover if you can).
pub const CA_KEY: &str = "ca.key";

/// A TLS handshake that takes longer than this is abandoned: a LAN handshake
/// takes milliseconds; a peer that stalls it is broken or hostile.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Accepted-but-not-yet-served HTTPS connections queued for the admin API;
/// bounded so a flood of handshakes cannot grow memory.
const API_ACCEPT_QUEUE: usize = 64;

/// Paths of a node's TLS material (`[tls]` in the node config).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsPaths {
    /// The cluster CA certificate (PEM).
    pub ca_cert: PathBuf,
    /// This node's certificate (PEM), issued by the cluster CA.
    pub cert: PathBuf,
    /// This node's private key (PEM).
    pub key: PathBuf,
}

impl TlsPaths {
    /// The files `cairn certs issue ID --dir DIR` writes for node `id`.
    pub fn in_dir(dir: &Path, id: u64) -> Self {
        Self {
            ca_cert: dir.join(CA_CERT),
            cert: dir.join(format!("node-{id}.pem")),
            key: dir.join(format!("node-{id}.key")),
        }
    }
}

/// The DNS name a node's certificate carries and its peers expect.
pub fn node_dns_name(id: u64) -> String {
    format!("node-{id}.cairn")
}

/// The node id a DNS name of the form [`node_dns_name`] names, exactly
/// (`node-07.cairn`, `node-+7.cairn` or `*.cairn` name none).
fn node_id_of_dns_name(name: &str) -> Option<u64> {
    let id: u64 = name.strip_prefix("node-")?.strip_suffix(".cairn")?.parse().ok()?;
    (node_dns_name(id) == name).then_some(id)
}

/// The node ids an (already chain-verified) certificate is valid for.
///
/// Candidates come from its DNS names; each is confirmed with webpki's own
/// name check, the same one the dialing side applies, so both sides agree
/// on what a certificate names.
fn certificate_node_ids(cert: &CertificateDer<'_>) -> Result<BTreeSet<u64>, String> {
    let ee = webpki::EndEntityCert::try_from(cert).map_err(|e| format!("unparsable certificate: {e}"))?;
    let mut ids = BTreeSet::new();
    for id in ee.valid_dns_names().filter_map(node_id_of_dns_name) {
        let name = ServerName::try_from(node_dns_name(id)).map_err(|e| e.to_string())?;
        if ee.verify_is_valid_for_subject_name(&name).is_ok() {
            ids.insert(id);
        }
    }
    Ok(ids)
}

fn tls_err(what: impl std::fmt::Display) -> Error {
    Error::Tls {
        reason: what.to_string(),
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Read every certificate of a PEM file.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, Error> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| tls_err(format!("cannot read certificates from {}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(tls_err(format!("{} holds no certificate", path.display())));
    }
    Ok(certs)
}

/// Read a PEM private key.
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, Error> {
    PrivateKeyDer::from_pem_file(path)
        .map_err(|e| tls_err(format!("cannot read a private key from {}: {e}", path.display())))
}

fn roots(ca: &Path) -> Result<rustls::RootCertStore, Error> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in load_certs(ca)? {
        roots
            .add(cert)
            .map_err(|e| tls_err(format!("{} is not a usable CA certificate: {e}", ca.display())))?;
    }
    Ok(roots)
}

/// Server side of node-to-node mTLS: a client certificate from the cluster
/// CA is required.
pub fn peer_server_config(paths: &TlsPaths) -> Result<Arc<rustls::ServerConfig>, Error> {
    let verifier =
        rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots(&paths.ca_cert)?), provider())
            .build()
            .map_err(tls_err)?;
    let config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(tls_err)?
        .with_client_cert_verifier(verifier)
        .with_single_cert(load_certs(&paths.cert)?, load_key(&paths.key)?)
        .map_err(|e| tls_err(format!("{} / {}: {e}", paths.cert.display(), paths.key.display())))?;
    Ok(Arc::new(config))
}

/// Client side of node-to-node mTLS: presents this node's certificate and
/// trusts only the cluster CA.
pub fn peer_client_config(paths: &TlsPaths) -> Result<Arc<rustls::ClientConfig>, Error> {
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(tls_err)?
        .with_root_certificates(roots(&paths.ca_cert)?)
        .with_client_auth_cert(load_certs(&paths.cert)?, load_key(&paths.key)?)
        .map_err(|e| tls_err(format!("{} / {}: {e}", paths.cert.display(), paths.key.display())))?;
    Ok(Arc::new(config))
}

/// HTTPS for the admin API with the node's certificate; clients are not
/// asked for one (the API authenticates writes with a bearer token).
pub fn api_server_config(paths: &TlsPaths) -> Result<Arc<rustls::ServerConfig>, Error> {
    let config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(tls_err)?
        .with_no_client_auth()
        .with_single_cert(load_certs(&paths.cert)?, load_key(&paths.key)?)
        .map_err(|e| tls_err(format!("{} / {}: {e}", paths.cert.display(), paths.key.display())))?;
    Ok(Arc::new(config))
}

/// Dials peers over TCP, then TLS, expecting the peer's own node id in its
/// certificate (so a node cannot impersonate another).
#[derive(Clone)]
pub struct TlsDialer {
    connector: tokio_rustls::TlsConnector,
}

impl TlsDialer {
    /// A dialer with this client configuration.
    pub fn new(config: Arc<rustls::ClientConfig>) -> Self {
        Self {
            connector: tokio_rustls::TlsConnector::from(config),
        }
    }
}

impl Dialer for TlsDialer {
    fn dial(&self, target: PeerId, addr: &str) -> DialFuture {
        let addr = addr.to_string();
        let connector = self.connector.clone();
        Box::pin(async move {
            let name = ServerName::try_from(node_dns_name(target))
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
            let tcp = TcpStream::connect(&addr).await?;
            tcp.set_nodelay(true)?;
            let tls = tokio::time::timeout(HANDSHAKE_TIMEOUT, connector.connect(name, tcp))
                .await
                .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "tls handshake timed out"))?
                .map_err(|e| {
                    tracing::warn!(peer = target, addr = %addr, error = %e, "tls handshake with peer failed");
                    io::Error::new(e.kind(), format!("tls handshake with node {target} at {addr}: {e}"))
                })?;
            Ok(Box::new(tls) as Box<dyn PeerStream>)
        })
    }
}

/// Wraps accepted peer connections in TLS, requiring a client certificate
/// from the cluster CA that names at least one node; the connection's
/// [`PeerIdentity`] is the set of node ids it names.
#[derive(Clone)]
pub struct TlsPeerAcceptor {
    acceptor: tokio_rustls::TlsAcceptor,
}

impl TlsPeerAcceptor {
    /// An acceptor with this server configuration.
    pub fn new(config: Arc<rustls::ServerConfig>) -> Self {
        Self {
            acceptor: tokio_rustls::TlsAcceptor::from(config),
        }
    }
}

impl Acceptor for TlsPeerAcceptor {
    fn accept(&self, stream: TcpStream, peer: SocketAddr) -> AcceptFuture {
        let acceptor = self.acceptor.clone();
        Box::pin(async move {
            let tls = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream))
                .await
                .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, format!("tls handshake from {peer} timed out")))?
                .map_err(|e| io::Error::new(e.kind(), format!("tls handshake from {peer}: {e}")))?;
            // rustls has verified the chain; a verifier that requires client
            // certificates never completes a handshake without one.
            let leaf = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(<[CertificateDer<'_>]>::first)
                .ok_or_else(|| {
                    io::Error::new(io::ErrorKind::PermissionDenied, format!("{peer} sent no certificate"))
                })?;
            let ids = certificate_node_ids(leaf).map_err(|e| {
                io::Error::new(io::ErrorKind::PermissionDenied, format!("certificate from {peer}: {e}"))
            })?;
            if ids.is_empty() {
                return Err(io::Error::new(
                    io::ErrorKind::PermissionDenied,
                    format!("certificate from {peer} names no node (expected a DNS name node-<id>.cairn)"),
                ));
            }
            Ok(Accepted {
                stream: Box::new(tls),
                identity: PeerIdentity::Nodes(ids),
            })
        })
    }
}

/// An HTTPS listener for axum: TCP accepts and TLS handshakes run on their
/// own tasks, so one slow client never holds up the others.
pub struct TlsApiListener {
    rx: tokio::sync::mpsc::Receiver<(tokio_rustls::server::TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
    _accept: cairn_raft::sync::AbortOnDrop,
}

impl TlsApiListener {
    /// Serve TLS on `listener` with `config`.
    pub fn new(listener: TcpListener, config: Arc<rustls::ServerConfig>) -> io::Result<Self> {
        let local = listener.local_addr()?;
        let acceptor = tokio_rustls::TlsAcceptor::from(config);
        let (tx, rx) = tokio::sync::mpsc::channel(API_ACCEPT_QUEUE);
        let accept = cairn_raft::sync::AbortOnDrop::spawn(async move {
            loop {
                let (tcp, peer) = match listener.accept().await {
                    Ok(x) => x,
                    Err(e) => {
                        tracing::warn!(error = %e, "admin api accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let acceptor = acceptor.clone();
                let tx = tx.clone();
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(tls)) => {
                            let _ = tx.send((tls, peer)).await;
                        }
                        Ok(Err(e)) => tracing::info!(peer = %peer, error = %e, "admin api tls handshake failed"),
                        Err(_) => tracing::info!(peer = %peer, "admin api tls handshake timed out"),
                    }
                });
            }
        });
        Ok(Self {
            rx,
            local,
            _accept: accept,
        })
    }
}

impl axum::serve::Listener for TlsApiListener {
    type Io = tokio_rustls::server::TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.rx.recv().await {
            Some(conn) => conn,
            // The accept task only ends when the listener is dropped.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(self.local)
    }
}

// ---------------------------------------------------------------------------
// Issuing certificates (rcgen)

const CA_COMMON_NAME: &str = "cairn cluster CA";

fn ca_params(days: u32) -> rcgen::CertificateParams {
    let mut p = rcgen::CertificateParams::default();
    p.distinguished_name = rcgen::DistinguishedName::new();
    p.distinguished_name.push(rcgen::DnType::CommonName, CA_COMMON_NAME);
    p.distinguished_name.push(rcgen::DnType::OrganizationName, "cairn");
    p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
    p.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    let now = time::OffsetDateTime::now_utc();
    p.not_before = now - time::Duration::hours(1);
    p.not_after = now + time::Duration::days(i64::from(days));
    p
}

fn write_new(path: &Path, contents: &str, private: bool) -> Result<(), Error> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    if private {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    #[cfg(not(unix))]
    let _ = private;
    let mut f = opts.open(path).map_err(|e| {
        if e.kind() == io::ErrorKind::AlreadyExists {
            tls_err(format!("{} exists already; not overwriting it", path.display()))
        } else {
            tls_err(format!("cannot create {}: {e}", path.display()))
        }
    })?;
    f.write_all(contents.as_bytes())
        .map_err(|e| tls_err(format!("cannot write {}: {e}", path.display())))
}

/// Create a cluster CA in `dir` (`ca.pem`, `ca.key`); refuses to overwrite.
pub fn init_ca(dir: &Path, days: u32) -> Result<PathBuf, Error> {
    std::fs::create_dir_all(dir).map_err(|e| tls_err(format!("cannot create {}: {e}", dir.display())))?;
    let key = rcgen::KeyPair::generate().map_err(tls_err)?;
    let cert = ca_params(days).self_signed(&key).map_err(tls_err)?;
    write_new(&dir.join(CA_KEY), &key.serialize_pem(), true)?;
    write_new(&dir.join(CA_CERT), &cert.pem(), false)?;
    Ok(dir.join(CA_CERT))
}

/// What `issue_node_cert` wrote.
#[derive(Debug)]
pub struct Issued {
    /// Certificate path.
    pub cert: PathBuf,
    /// Key path.
    pub key: PathBuf,
    /// Subject alternative names in the certificate.
    pub names: Vec<String>,
}

/// Issue a certificate for node `id` from the CA in `dir`, valid for `days`
/// (negative in tests only, to make an expired one). `extra_names` are more
/// DNS names or IP addresses (the admin API's host names, say).
pub fn issue_node_cert(dir: &Path, id: u64, extra_names: &[String], days: i64) -> Result<Issued, Error> {
    let ca_key_pem = std::fs::read_to_string(dir.join(CA_KEY)).map_err(|e| {
        tls_err(format!(
            "cannot read {}: {e} (run `cairn certs init` first)",
            dir.join(CA_KEY).display()
        ))
    })?;
    let ca_key = rcgen::KeyPair::from_pem(&ca_key_pem).map_err(tls_err)?;
    // The issuer is rebuilt from the same name and key: a leaf names its
    // issuer by distinguished name and key id, both of which match ca.pem.
    let issuer = rcgen::Issuer::new(ca_params(1), ca_key);

    let mut names = vec![node_dns_name(id), "localhost".to_string(), "127.0.0.1".to_string()];
    for n in extra_names {
        if !names.contains(n) {
            names.push(n.clone());
        }
    }
    let mut p = rcgen::CertificateParams::new(names.clone()).map_err(tls_err)?;
    p.distinguished_name = rcgen::DistinguishedName::new();
    p.distinguished_name
        .push(rcgen::DnType::CommonName, format!("cairn node {id}"));
    p.extended_key_usages = vec![
        rcgen::ExtendedKeyUsagePurpose::ServerAuth,
        rcgen::ExtendedKeyUsagePurpose::ClientAuth,
    ];
    p.key_usages = vec![
        rcgen::KeyUsagePurpose::DigitalSignature,
        rcgen::KeyUsagePurpose::KeyEncipherment,
    ];
    p.use_authority_key_identifier_extension = true;
    let now = time::OffsetDateTime::now_utc();
    if days >= 0 {
        p.not_before = now - time::Duration::hours(1);
        p.not_after = now + time::Duration::days(days);
    } else {
        p.not_before = now - time::Duration::days(-days + 1);
        p.not_after = now + time::Duration::days(days);
    }
    let key = rcgen::KeyPair::generate().map_err(tls_err)?;
    let cert = p.signed_by(&key, &issuer).map_err(tls_err)?;
    let paths = TlsPaths::in_dir(dir, id);
    write_new(&paths.key, &key.serialize_pem(), true)?;
    write_new(&paths.cert, &cert.pem(), false)?;
    Ok(Issued {
        cert: paths.cert,
        key: paths.key,
        names,
    })
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncReadExt;
    use tokio::io::AsyncWriteExt;

    use super::*;

    /// One handshake between a dialer using `client` and an acceptor using
    /// `server`; returns the dialer's and the acceptor's results.
    async fn handshake(
        client: &TlsPaths,
        client_id: u64,
        server: &TlsPaths,
        server_id: u64,
    ) -> (io::Result<()>, io::Result<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let acceptor = TlsPeerAcceptor::new(peer_server_config(server).unwrap());
        let srv = tokio::spawn(async move {
            let (tcp, peer) = listener.accept().await.unwrap();
            let accepted = acceptor.accept(tcp, peer).await?;
            assert_eq!(accepted.identity, PeerIdentity::Nodes([client_id].into()));
            let mut s = accepted.stream;
            let mut b = [0u8; 4];
            s.read_exact(&mut b).await?;
            s.write_all(&b).await?;
            s.flush().await?;
            Ok::<_, io::Error>(())
        });
        let dialer = TlsDialer::new(peer_client_config(client).unwrap());
        let cli = async {
            let mut s = dialer.dial(server_id, &addr.to_string()).await?;
            s.write_all(b"ping").await?;
            s.flush().await?;
            let mut b = [0u8; 4];
            s.read_exact(&mut b).await?;
            assert_eq!(&b, b"ping");
            Ok::<_, io::Error>(())
        };
        let c = cli.await;
        let s = tokio::time::timeout(Duration::from_secs(5), srv)
            .await
            .map(|r| r.unwrap())
            .unwrap_or_else(|_| Err(io::Error::other("server hung")));
        (c, s)
    }

    #[tokio::test]
    async fn t10_mtls_accepts_same_ca_refuses_other_ca_wrong_id_and_expired() {
        let dir = tempfile::TempDir::new().unwrap();
        let a = dir.path().join("a");
        let b = dir.path().join("b");
        init_ca(&a, 365).unwrap();
        init_ca(&b, 365).unwrap();
        issue_node_cert(&a, 1, &[], 30).unwrap();
        issue_node_cert(&a, 2, &[], 30).unwrap();
        issue_node_cert(&b, 3, &[], 30).unwrap();
        issue_node_cert(&a, 4, &[], -1).unwrap();
        let n1 = TlsPaths::in_dir(&a, 1);
        let n2 = TlsPaths::in_dir(&a, 2);
        let n4 = TlsPaths::in_dir(&a, 4);
        // Node 3 holds a certificate of CA b but (to be fair) trusts CA a.
        let n3 = TlsPaths {
            ca_cert: a.join(CA_CERT),
            ..TlsPaths::in_dir(&b, 3)
        };

        tracing::info!("two nodes of the same CA talk");
        let (c, s) = handshake(&n1, 1, &n2, 2).await;
        assert!(c.is_ok() && s.is_ok(), "client {c:?}, server {s:?}");

        tracing::info!("a node with a certificate from another CA is refused");
        let (c, s) = handshake(&n3, 3, &n2, 2).await;
        let err = s.expect_err("server must refuse a foreign client certificate");
        assert!(err.to_string().contains("tls handshake from"), "{err}");
        assert!(c.is_err(), "client must fail too");

        tracing::info!("a node answering with another node's certificate is refused");
        let (c, _) = handshake(&n1, 1, &n2, 7).await;
        let err = c.expect_err("dialing node 7 but talking to node 2 must fail");
        assert!(err.to_string().contains("not valid for name"), "{err}");

        tracing::info!("an expired certificate gives a clear error");
        let (c, s) = handshake(&n4, 4, &n2, 2).await;
        let err = s.expect_err("expired client certificate must be refused");
        assert!(err.to_string().contains("certificate expired"), "{err}");
        assert!(c.is_err());
    }

    #[test]
    fn t15_only_exact_node_names_name_a_node() {
        assert_eq!(node_id_of_dns_name("node-7.cairn"), Some(7));
        for name in [
            "node-07.cairn",
            "node-+7.cairn",
            "*.cairn",
            "node-7.cairn.evil",
            "node-.cairn",
            "localhost",
        ] {
            assert_eq!(node_id_of_dns_name(name), None, "{name}");
        }
        let dir = tempfile::TempDir::new().unwrap();
        init_ca(dir.path(), 365).unwrap();
        issue_node_cert(dir.path(), 2, &["node-9.cairn".into(), "rover.local".into()], 30).unwrap();
        let certs = load_certs(&TlsPaths::in_dir(dir.path(), 2).cert).unwrap();
        assert_eq!(certificate_node_ids(&certs[0]).unwrap(), [2, 9].into());
    }

    #[test]
    fn t20_certs_are_never_overwritten() {
        let dir = tempfile::TempDir::new().unwrap();
        init_ca(dir.path(), 365).unwrap();
        let err = init_ca(dir.path(), 365).unwrap_err();
        assert!(err.to_string().contains("exists already"), "{err}");
        issue_node_cert(dir.path(), 1, &["10.0.0.11".into()], 30).unwrap();
        let err = issue_node_cert(dir.path(), 1, &[], 30).unwrap_err();
        assert!(err.to_string().contains("exists already"), "{err}");
    }
}
