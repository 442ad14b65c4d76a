//! Status seals made with the node certificate's private key and checked against the
//! certificates peers present on their connections ([`StatusSeal`]).
//!
//! A member's certificate is learned when a connection with it is verified (either
//! side may have dialed); a later certificate of the same name replaces the earlier
//! one. A status whose author has not been met yet cannot be checked and is not taken
//! second-hand; its author's own copy, on its own connection, is.

use std::collections::HashMap;
use std::sync::Mutex;

use rustls::SignatureScheme;
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::CertificateDer;
use rustls::sign::Signer;

use super::{NetError, TlsMaterial};
use crate::membership::seal::{Seal, SealCheck, StatusSeal};

/// The signature schemes a seal is made with, best first: their signatures are small
/// enough to ride in a membership datagram (an RSA signature is not).
const SEAL_SCHEMES: [SignatureScheme; 3] = [
    SignatureScheme::ED25519,
    SignatureScheme::ECDSA_NISTP256_SHA256,
    SignatureScheme::ECDSA_NISTP384_SHA384,
];
/// The largest signature of those schemes (DER-encoded ECDSA P-384), and its scheme.
const SEAL_BYTES_MAX: usize = 104 + 2 + 2;

/// Signs with this node's key; checks with the certificates of the peers met.
pub struct CertSeal {
    signer: Option<Box<dyn Signer>>,
    algorithms: WebPkiSupportedAlgorithms,
    certs: Mutex<HashMap<String, CertificateDer<'static>>>,
}

impl CertSeal {
    /// A seal for the holder of `material`. A key whose signatures do not fit a
    /// datagram (RSA) seals nothing: its statuses are taken only from the node itself
    /// ([`CertSeal::can_sign`] tells).
    pub fn new(material: &TlsMaterial) -> Result<CertSeal, NetError> {
        let provider = super::provider();
        let key = provider
            .key_provider
            .load_private_key(material.key.clone_key())
            .map_err(|e| NetError::Config(format!("private key: {e}")))?;
        Ok(CertSeal {
            signer: key.choose_scheme(&SEAL_SCHEMES),
            algorithms: provider.signature_verification_algorithms,
            certs: Mutex::new(HashMap::new()),
        })
    }

    /// Whether this node's key can seal statuses.
    pub fn can_sign(&self) -> bool {
        self.signer.is_some()
    }

    /// Remembers `cert` as `name`'s: it was presented on a verified connection.
    pub fn learn(&self, name: &str, cert: &CertificateDer<'_>) {
        let mut certs = self.certs.lock().expect("seal certificates lock");
        if certs
            .get(name)
            .is_none_or(|known| known.as_ref() != cert.as_ref())
        {
            certs.insert(name.to_string(), cert.clone().into_owned());
        }
    }
}

impl StatusSeal for CertSeal {
    fn seal(&self, message: &[u8]) -> Option<Seal> {
        let signer = self.signer.as_ref()?;
        let signature = signer.sign(message).ok()?;
        Some(Seal {
            scheme: u16::from(signer.scheme()),
            signature,
        })
    }

    fn check(&self, member: &str, message: &[u8], seal: Option<&Seal>) -> SealCheck {
        let Some(seal) = seal else {
            return SealCheck::Invalid;
        };
        let scheme = SignatureScheme::from(seal.scheme);
        let Some((_, algorithms)) = self
            .algorithms
            .mapping
            .iter()
            .find(|(s, _)| *s == scheme && SEAL_SCHEMES.contains(s))
        else {
            return SealCheck::Invalid;
        };
        let cert = {
            let certs = self.certs.lock().expect("seal certificates lock");
            match certs.get(member) {
                Some(cert) => cert.clone(),
                None => return SealCheck::UnknownKey,
            }
        };
        let Ok(cert) = webpki::EndEntityCert::try_from(&cert) else {
            return SealCheck::Invalid;
        };
        let valid = algorithms.iter().any(|alg| {
            cert.verify_signature(*alg, message, &seal.signature)
                .is_ok()
        });
        if valid {
            SealCheck::Valid
        } else {
            SealCheck::Invalid
        }
    }

    fn seal_bytes_max(&self) -> usize {
        if self.signer.is_some() {
            SEAL_BYTES_MAX
        } else {
            0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::certs::{Authority, LeafSpec};
    use crate::membership::seal::sealed_message;
    use crate::protocol::Role;

    fn material(ca: &Authority, name: &str) -> (TlsMaterial, CertificateDer<'static>) {
        let issued = ca.issue(&LeafSpec::new(name, Role::Node, 1)).unwrap();
        let material =
            TlsMaterial::from_pem(ca.cert_pem(), &issued.cert_pem, &issued.key_pem).unwrap();
        let cert = material.chain[0].clone();
        (material, cert)
    }

    #[test]
    fn a_seal_checks_only_for_its_author_and_its_message() {
        let ca = Authority::create(1).unwrap();
        let (m1, c1) = material(&ca, "n1");
        let (m2, c2) = material(&ca, "n2");
        let (s1, s2) = (CertSeal::new(&m1).unwrap(), CertSeal::new(&m2).unwrap());
        assert!(s1.can_sign());
        let checker = CertSeal::new(&m2).unwrap();
        let message = sealed_message(b"status of n1");
        let seal = s1.seal(&message).unwrap();
        assert_eq!(
            checker.check("n1", &message, Some(&seal)),
            SealCheck::UnknownKey,
            "n1 not met yet"
        );
        checker.learn("n1", &c1);
        checker.learn("n2", &c2);
        assert_eq!(checker.check("n1", &message, Some(&seal)), SealCheck::Valid);
        assert_eq!(checker.check("n1", &message, None), SealCheck::Invalid);
        let other = sealed_message(b"status of n1, altered");
        assert_eq!(checker.check("n1", &other, Some(&seal)), SealCheck::Invalid);
        // n2 signing a status in n1's name.
        let by_n2 = s2.seal(&message).unwrap();
        assert_eq!(
            checker.check("n1", &message, Some(&by_n2)),
            SealCheck::Invalid
        );
        assert_eq!(
            checker.check("n2", &message, Some(&by_n2)),
            SealCheck::Valid
        );
        let mut garbled = seal.clone();
        garbled.scheme = 0x0401; // RSA PKCS#1 SHA-256: not a seal scheme
        assert_eq!(
            checker.check("n1", &message, Some(&garbled)),
            SealCheck::Invalid
        );
    }
}
