//! A development certificate authority for a Vergent cluster (`vergent certs`).
//!
//! Layout of a certificates directory: `ca.crt` and `ca.key` for the authority, then
//! `NAME.crt` and `NAME.key` for each node and client. A certificate's subject carries
//! the holder's name (CN) and role (OU: `node`, `client` or `admin`); nodes get the
//! serverAuth and clientAuth usages, clients only clientAuth, so a client certificate
//! can never act as a node. Private keys are written with mode 0600.

use std::fs::OpenOptions;
use std::io::Write;
use std::net::IpAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use time::{Duration, OffsetDateTime};

use crate::base::Role;

/// Default validity of the authority, in days.
pub const CA_DAYS_DEFAULT: u32 = 3650;
/// Default validity of node and client certificates, in days.
pub const LEAF_DAYS_DEFAULT: u32 = 365;
/// Longest node or client name.
pub const NAME_BYTES_MAX: usize = 63;
/// The admin client certificate `vergent certs init` issues.
pub const ADMIN_NAME: &str = "admin";

/// Why a certificate operation failed. Nothing is written unless the whole operation
/// succeeded up to the point named.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// The name cannot be used for a certificate.
    #[error(
        "invalid name {name:?}: use 1 to {NAME_BYTES_MAX} letters, digits, '.', '_' or '-', not starting with '.' or '-', and not \"ca\""
    )]
    InvalidName {
        /// The name given.
        name: String,
    },
    /// The file exists and `--force` was not given; nothing was written.
    #[error("{path} already exists; pass --force to replace it")]
    Exists {
        /// The file.
        path: PathBuf,
    },
    /// A file could not be read or written.
    #[error("{path}: {message}")]
    File {
        /// The file.
        path: PathBuf,
        /// The operating system's message.
        message: String,
    },
    /// The authority is missing.
    #[error("no certificate authority in {dir}: create one with `vergent certs init --dir {dir}`")]
    NoAuthority {
        /// The directory searched.
        dir: PathBuf,
    },
    /// Key or certificate generation or parsing failed.
    #[error("certificate error: {0}")]
    Rcgen(#[from] rcgen::Error),
}

/// Checks a node or client name.
pub fn check_name(name: &str) -> Result<(), CertError> {
    let ok = !name.is_empty()
        && name.len() <= NAME_BYTES_MAX
        && name != "ca"
        && !name.starts_with(['.', '-'])
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(CertError::InvalidName {
            name: name.to_string(),
        })
    }
}

/// The certificate and key files for `name` in `dir`.
pub fn paths(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    (
        dir.join(format!("{name}.crt")),
        dir.join(format!("{name}.key")),
    )
}

/// The authority's certificate file in `dir`.
pub fn ca_path(dir: &Path) -> PathBuf {
    dir.join("ca.crt")
}

/// What to put in a node or client certificate.
#[derive(Debug, Clone)]
pub struct LeafSpec {
    /// The holder's name (subject CN).
    pub name: String,
    /// The holder's role (subject OU).
    pub role: Role,
    /// IP addresses the node is reached at (nodes only).
    pub ips: Vec<IpAddr>,
    /// Extra DNS names the node is reached at (nodes only; its name is always included).
    pub dns: Vec<String>,
    /// Start of validity.
    pub not_before: OffsetDateTime,
    /// End of validity.
    pub not_after: OffsetDateTime,
}

impl LeafSpec {
    /// A certificate valid from an hour ago (to tolerate small clock differences) for `days`.
    pub fn new(name: &str, role: Role, days: u32) -> LeafSpec {
        let now = OffsetDateTime::now_utc();
        LeafSpec {
            name: name.to_string(),
            role,
            ips: Vec::new(),
            dns: Vec::new(),
            not_before: now - Duration::hours(1),
            not_after: now + Duration::days(i64::from(days)),
        }
    }
}

/// A PEM certificate and its PEM private key.
#[derive(Debug, Clone)]
pub struct Issued {
    /// The certificate.
    pub cert_pem: String,
    /// The private key.
    pub key_pem: String,
}

/// A certificate authority that can issue node and client certificates.
pub struct Authority {
    issuer: Issuer<'static, KeyPair>,
    cert_pem: String,
}

impl Authority {
    /// A new authority valid for `days`.
    pub fn create(days: u32) -> Result<Authority, CertError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "Vergent cluster CA");
        dn.push(DnType::OrganizationName, "Vergent");
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let now = OffsetDateTime::now_utc();
        params.not_before = now - Duration::hours(1);
        params.not_after = now + Duration::days(i64::from(days));
        params.serial_number = Some(random_serial());
        let cert = params.self_signed(&key)?;
        Ok(Authority {
            cert_pem: cert.pem(),
            issuer: Issuer::new(params, key),
        })
    }

    /// Loads the authority from `dir` (`ca.crt`, `ca.key`).
    pub fn load(dir: &Path) -> Result<Authority, CertError> {
        let (cert_path, key_path) = (ca_path(dir), dir.join("ca.key"));
        if !cert_path.exists() || !key_path.exists() {
            return Err(CertError::NoAuthority {
                dir: dir.to_path_buf(),
            });
        }
        let cert_pem = read(&cert_path)?;
        let key = KeyPair::from_pem(&read(&key_path)?)?;
        let issuer = Issuer::from_ca_cert_pem(&cert_pem, key)?;
        Ok(Authority { issuer, cert_pem })
    }

    /// The authority's certificate, PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// Writes `ca.crt` and `ca.key` to `dir`; refuses to replace them unless `force`.
    pub fn save(&self, dir: &Path, force: bool) -> Result<(), CertError> {
        create_dir(dir)?;
        let (cert_path, key_path) = (ca_path(dir), dir.join("ca.key"));
        if !force {
            refuse_existing(&[&cert_path, &key_path])?;
        }
        write_file(&key_path, &self.issuer.key().serialize_pem(), true)?;
        write_file(&cert_path, &self.cert_pem, false)
    }

    /// Issues a certificate for `spec`.
    pub fn issue(&self, spec: &LeafSpec) -> Result<Issued, CertError> {
        check_name(&spec.name)?;
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, spec.name.as_str());
        dn.push(DnType::OrganizationalUnitName, spec.role.as_str());
        dn.push(DnType::OrganizationName, "Vergent");
        params.distinguished_name = dn;
        params.not_before = spec.not_before;
        params.not_after = spec.not_after;
        params.serial_number = Some(random_serial());
        params.use_authority_key_identifier_extension = true;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        if spec.role == Role::Node {
            params
                .extended_key_usages
                .push(ExtendedKeyUsagePurpose::ServerAuth);
            let mut names = vec![spec.name.clone()];
            names.extend(spec.dns.iter().cloned());
            for name in names {
                params
                    .subject_alt_names
                    .push(SanType::DnsName(name.as_str().try_into()?));
            }
            for ip in &spec.ips {
                params.subject_alt_names.push(SanType::IpAddress(*ip));
            }
        }
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// Issues a certificate for `spec` and writes `NAME.crt` and `NAME.key` to `dir`.
    pub fn issue_to(
        &self,
        dir: &Path,
        spec: &LeafSpec,
        force: bool,
    ) -> Result<(PathBuf, PathBuf), CertError> {
        check_name(&spec.name)?;
        let (cert_path, key_path) = paths(dir, &spec.name);
        if !force {
            refuse_existing(&[&cert_path, &key_path])?;
        }
        let issued = self.issue(spec)?;
        create_dir(dir)?;
        write_file(&key_path, &issued.key_pem, true)?;
        write_file(&cert_path, &issued.cert_pem, false)?;
        Ok((cert_path, key_path))
    }
}

/// `vergent certs init`: a new authority and the `admin` client certificate.
pub fn init(dir: &Path, force: bool) -> Result<Authority, CertError> {
    if !force {
        refuse_existing(&[&ca_path(dir), &dir.join("ca.key")])?;
    }
    let authority = Authority::create(CA_DAYS_DEFAULT)?;
    authority.save(dir, force)?;
    authority.issue_to(
        dir,
        &LeafSpec::new(ADMIN_NAME, Role::Admin, LEAF_DAYS_DEFAULT),
        true,
    )?;
    Ok(authority)
}

fn random_serial() -> SerialNumber {
    let mut bytes = [0u8; 16];
    // A serial only needs to be unique per authority; fall back to the time if the
    // system has no randomness, rather than failing certificate creation.
    if getrandom::fill(&mut bytes).is_err() {
        let nanos = OffsetDateTime::now_utc().unix_timestamp_nanos();
        bytes = nanos.to_be_bytes();
    }
    bytes[0] &= 0x7f;
    SerialNumber::from_slice(&bytes)
}

fn refuse_existing(paths: &[&Path]) -> Result<(), CertError> {
    match paths.iter().find(|p| p.exists()) {
        Some(path) => Err(CertError::Exists {
            path: path.to_path_buf(),
        }),
        None => Ok(()),
    }
}

fn create_dir(dir: &Path) -> Result<(), CertError> {
    std::fs::create_dir_all(dir).map_err(|e| CertError::File {
        path: dir.to_path_buf(),
        message: e.to_string(),
    })
}

fn read(path: &Path) -> Result<String, CertError> {
    std::fs::read_to_string(path).map_err(|e| CertError::File {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

fn write_file(path: &Path, contents: &str, private: bool) -> Result<(), CertError> {
    let file_err = |e: std::io::Error| CertError::File {
        path: path.to_path_buf(),
        message: e.to_string(),
    };
    let mut options = OpenOptions::new();
    options.write(true).create(true).truncate(true);
    options.mode(if private { 0o600 } else { 0o644 });
    let mut file = options.open(path).map_err(file_err)?;
    if private {
        // `mode` applies only when the file is created; tighten a replaced key too.
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(std::fs::Permissions::from_mode(0o600))
            .map_err(file_err)?;
    }
    file.write_all(contents.as_bytes()).map_err(file_err)?;
    file.sync_all().map_err(file_err)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn init_writes_an_authority_and_an_admin_certificate_with_private_keys() {
        let dir = tempfile::tempdir().unwrap();
        init(dir.path(), false).unwrap();
        for file in ["ca.crt", "ca.key", "admin.crt", "admin.key"] {
            assert!(dir.path().join(file).exists(), "{file}");
        }
        for key in ["ca.key", "admin.key"] {
            let mode = std::fs::metadata(dir.path().join(key))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{key}");
        }
    }

    #[test]
    fn init_refuses_to_replace_an_authority_without_force() {
        let dir = tempfile::tempdir().unwrap();
        init(dir.path(), false).unwrap();
        let before = std::fs::read(dir.path().join("ca.crt")).unwrap();
        let err = init(dir.path(), false).err().unwrap();
        assert!(
            err.to_string().contains("already exists; pass --force"),
            "{err}"
        );
        assert_eq!(std::fs::read(dir.path().join("ca.crt")).unwrap(), before);
        init(dir.path(), true).unwrap();
        assert_ne!(std::fs::read(dir.path().join("ca.crt")).unwrap(), before);
    }

    #[test]
    fn a_loaded_authority_issues_certificates() {
        let dir = tempfile::tempdir().unwrap();
        init(dir.path(), false).unwrap();
        let authority = Authority::load(dir.path()).unwrap();
        let mut spec = LeafSpec::new("n1", Role::Node, 30);
        spec.ips.push("127.0.0.1".parse().unwrap());
        authority.issue_to(dir.path(), &spec, false).unwrap();
        assert!(dir.path().join("n1.crt").exists());
    }

    #[test]
    fn names_are_checked() {
        for bad in ["", "ca", "-x", ".x", "a b", "a/b", &"x".repeat(64)] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
        for good in ["n1", "node-1.example", "A_b"] {
            assert!(check_name(good).is_ok(), "{good:?}");
        }
    }
}
