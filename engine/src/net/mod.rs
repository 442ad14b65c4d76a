//! QUIC with mutual TLS: endpoint configuration and certificate roles.
//!
//! Every connection, client or internode, is QUIC (quinn) with TLS 1.3 (rustls, ring
//! provider) and a client certificate verified against the cluster CA. There is no
//! plaintext mode. The peer's certificate names it (CN) and its role (OU), which the
//! node checks on every request.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;

pub mod seal;

use crate::certs;
use crate::protocol::{ALPN, Role};

/// Most concurrent request streams one connection may have open.
pub const STREAMS_PER_CONNECTION_MAX: u32 = 256;
/// Keep-alive interval: a silent peer is noticed within the idle timeout.
pub const KEEP_ALIVE_INTERVAL: Duration = Duration::from_millis(1000);
/// A connection that hears nothing for this long is closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(5);

/// Why TLS material could not be loaded or a peer could not be identified.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// A certificate or key file could not be read.
    #[error("cannot read {path}: {message}{hint}")]
    Read {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
        /// How to fix it, if known.
        hint: String,
    },
    /// TLS configuration was refused by rustls or quinn.
    #[error("TLS configuration: {0}")]
    Config(String),
    /// The peer's certificate does not identify a Vergent node, client or admin.
    #[error("peer certificate: {0}")]
    Identity(String),
}

/// A node's or client's certificate chain and key, and the cluster CA.
pub struct TlsMaterial {
    ca: Vec<CertificateDer<'static>>,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

impl TlsMaterial {
    /// Loads `ca.crt`, `NAME.crt` and `NAME.key` from `dir`.
    pub fn load(dir: &Path, name: &str) -> Result<TlsMaterial, NetError> {
        let (cert_path, key_path) = certs::paths(dir, name);
        let looked = format!(
            " (looked in {} for ca.crt, {name}.crt and {name}.key: point --certs or \
             VERGENT_CERTS at the directory holding the cluster's CA certificate and \
             {name}'s certificate and key",
            dir.display()
        );
        let hint = |what: &str| {
            format!(
                "{looked}; {})",
                if what == "the CA" {
                    "only a new cluster starts with `vergent certs init`".to_string()
                } else {
                    format!("the CA's holder issues one with `vergent certs node|client {name}`")
                }
            )
        };
        let ca = read_certs(&certs::ca_path(dir), &hint("the CA"))?;
        let chain = read_certs(&cert_path, &hint("it"))?;
        let key = PrivateKeyDer::from_pem_file(&key_path).map_err(|e| NetError::Read {
            path: key_path.clone(),
            message: e.to_string(),
            hint: hint("it"),
        })?;
        Ok(TlsMaterial { ca, chain, key })
    }

    /// Builds material from PEM strings (for tests and in-process tools).
    pub fn from_pem(ca: &str, cert: &str, key: &str) -> Result<TlsMaterial, NetError> {
        let parse =
            |what: &str, e: rustls::pki_types::pem::Error| NetError::Config(format!("{what}: {e}"));
        let certs = |pem: &str, what: &str| -> Result<Vec<CertificateDer<'static>>, NetError> {
            CertificateDer::pem_slice_iter(pem.as_bytes())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| parse(what, e))
        };
        Ok(TlsMaterial {
            ca: certs(ca, "CA certificate")?,
            chain: certs(cert, "certificate")?,
            key: PrivateKeyDer::from_pem_slice(key.as_bytes())
                .map_err(|e| parse("private key", e))?,
        })
    }

    /// Who this material's own certificate says its holder is.
    pub fn identity(&self) -> Result<PeerIdentity, NetError> {
        let leaf = self.chain.first().ok_or_else(|| {
            NetError::Identity("the certificate file holds no certificate".into())
        })?;
        identity_of(leaf)
    }

    fn roots(&self) -> Result<RootCertStore, NetError> {
        let mut roots = RootCertStore::empty();
        for ca in &self.ca {
            roots
                .add(ca.clone())
                .map_err(|e| NetError::Config(format!("CA certificate: {e}")))?;
        }
        Ok(roots)
    }
}

fn read_certs(path: &Path, hint: &str) -> Result<Vec<CertificateDer<'static>>, NetError> {
    let read_err = |message: String| NetError::Read {
        path: path.to_path_buf(),
        message,
        hint: hint.to_string(),
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| read_err(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| read_err(e.to_string()))?;
    if certs.is_empty() {
        return Err(read_err("no certificate in the file".into()));
    }
    Ok(certs)
}

/// The TLS provider every endpoint and the status seal use: rustls's *ring* provider,
/// chosen to keep the build free of a C toolchain for aws-lc. rustls 0.23.48 marks it
/// deprecated only because it offers no post-quantum key exchange; moving to one that
/// does is a choice for the cluster as a whole (every member must speak it), not a
/// dependency bump.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    #[allow(deprecated)]
    Arc::new(rustls::crypto::ring::default_provider())
}

fn transport() -> quinn::TransportConfig {
    let mut transport = quinn::TransportConfig::default();
    transport
        .max_concurrent_bidi_streams(STREAMS_PER_CONNECTION_MAX.into())
        .max_concurrent_uni_streams(0u32.into())
        .keep_alive_interval(Some(KEEP_ALIVE_INTERVAL))
        .max_idle_timeout(Some(
            IDLE_TIMEOUT
                .try_into()
                .expect("a few seconds fit a QUIC idle timeout"),
        ));
    transport
}

fn config_err(e: &dyn std::fmt::Display) -> NetError {
    NetError::Config(e.to_string())
}

/// TLS 1.3 for a server: its certificate, and client certificates required and
/// verified against the CA; `alpn` the one protocol it speaks.
fn server_tls(material: &TlsMaterial, alpn: &[u8]) -> Result<rustls::ServerConfig, NetError> {
    let verifier =
        WebPkiClientVerifier::builder_with_provider(Arc::new(material.roots()?), provider())
            .build()
            .map_err(|e| config_err(&e))?;
    let mut tls = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| config_err(&e))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(material.chain.clone(), material.key.clone_key())
        .map_err(|e| config_err(&e))?;
    tls.alpn_protocols = vec![alpn.to_vec()];
    Ok(tls)
}

/// TLS 1.3 for a client: the CA as the only root, this material's certificate as the
/// client's; `alpn` the one protocol it speaks.
fn client_tls(material: &TlsMaterial, alpn: &[u8]) -> Result<rustls::ClientConfig, NetError> {
    let mut tls = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| config_err(&e))?
        .with_root_certificates(material.roots()?)
        .with_client_auth_cert(material.chain.clone(), material.key.clone_key())
        .map_err(|e| config_err(&e))?;
    tls.alpn_protocols = vec![alpn.to_vec()];
    Ok(tls)
}

/// The ALPN name of HTTP/1.1.
const HTTP1: &[u8] = b"http/1.1";

/// The server side of a node: its certificate, and client certificates required and
/// verified against the CA.
pub fn server_config(material: &TlsMaterial) -> Result<quinn::ServerConfig, NetError> {
    let quic =
        QuicServerConfig::try_from(server_tls(material, ALPN)?).map_err(|e| config_err(&e))?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(quic));
    config.transport_config(Arc::new(transport()));
    Ok(config)
}

/// The HTTPS side of a node: the same certificate, and client certificates required
/// and verified against the same CA; HTTP/1.1.
pub fn https_config(material: &TlsMaterial) -> Result<rustls::ServerConfig, NetError> {
    server_tls(material, HTTP1)
}

/// The client side of the HTTPS API, for load generators and programs in Rust that
/// speak HTTP rather than the QUIC protocol.
pub fn https_client_config(material: &TlsMaterial) -> Result<rustls::ClientConfig, NetError> {
    client_tls(material, HTTP1)
}

/// The client side, for both clients and nodes dialling each other.
pub fn client_config(material: &TlsMaterial) -> Result<quinn::ClientConfig, NetError> {
    let quic =
        QuicClientConfig::try_from(client_tls(material, ALPN)?).map_err(|e| config_err(&e))?;
    let mut config = quinn::ClientConfig::new(Arc::new(quic));
    config.transport_config(Arc::new(transport()));
    Ok(config)
}

/// Who a verified certificate says its holder is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerIdentity {
    /// The holder's name.
    pub name: String,
    /// The holder's role.
    pub role: Role,
}

/// The identity of the peer on `connection`, from its verified certificate.
pub fn peer_identity(connection: &quinn::Connection) -> Result<PeerIdentity, NetError> {
    identity_of(&peer_certificate(connection)?)
}

/// The certificate the peer on `connection` presented (verified in the handshake).
pub fn peer_certificate(
    connection: &quinn::Connection,
) -> Result<CertificateDer<'static>, NetError> {
    let identity = connection
        .peer_identity()
        .ok_or_else(|| NetError::Identity("the peer presented no certificate".into()))?;
    let certs = identity
        .downcast::<Vec<CertificateDer<'static>>>()
        .map_err(|_| NetError::Identity("the peer's identity is not an X.509 chain".into()))?;
    certs
        .first()
        .cloned()
        .ok_or_else(|| NetError::Identity("the peer presented an empty chain".into()))
}

/// Reads name (CN) and role (OU) from a certificate.
pub fn identity_of(cert: &CertificateDer<'_>) -> Result<PeerIdentity, NetError> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref())
        .map_err(|e| NetError::Identity(format!("cannot parse the certificate: {e}")))?;
    let subject = parsed.subject();
    let name = subject
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .ok_or_else(|| NetError::Identity("the certificate has no common name".into()))?;
    let role = subject
        .iter_organizational_unit()
        .filter_map(|ou| ou.as_str().ok())
        .find_map(Role::parse)
        .ok_or_else(|| {
            NetError::Identity(format!(
                "the certificate of {name:?} names no Vergent role (OU node, client or admin)"
            ))
        })?;
    Ok(PeerIdentity {
        name: name.to_string(),
        role,
    })
}
