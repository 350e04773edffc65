//! TLS of the outbound HTTP clients (reqwest with rustls): which CAs they trust, and what a
//! failed handshake means in a sentence a person can act on.
//!
//! Trust is the system's store as rustls-native-certs reads it (the bundle and directory that
//! openssl-probe finds, e.g. `/etc/ssl/certs`) or, when `SSL_CERT_FILE` or `SSL_CERT_DIR` is
//! set, only the certificates those name: a private or corporate CA goes there. Owns: checking
//! those variables and explaining rustls's errors. Must not touch: the clients themselves
//! (timeouts, retries); each caller decides what a failure means for its work.

use std::error::Error;
use std::ffi::OsStr;
use std::path::Path;

pub const CERT_FILE_VAR: &str = "SSL_CERT_FILE";
pub const CERT_DIR_VAR: &str = "SSL_CERT_DIR";

/// Checks `SSL_CERT_FILE` and `SSL_CERT_DIR` where set. The loader skips what it cannot read
/// without a word, and a client then trusts nothing: every handshake would fail with "unknown
/// issuer", far from the typo that caused it.
pub fn check_trust_env() -> Result<(), String> {
    check_trust_paths(
        std::env::var_os(CERT_FILE_VAR).as_deref().map(Path::new),
        std::env::var_os(CERT_DIR_VAR).as_deref(),
    )
}

fn check_trust_paths(file: Option<&Path>, dirs: Option<&OsStr>) -> Result<(), String> {
    if let Some(file) = file {
        let pem = std::fs::read(file)
            .map_err(|e| format!("{CERT_FILE_VAR}={} cannot be read: {e}", file.display()))?;
        let marker = b"-----BEGIN CERTIFICATE-----";
        if !pem.windows(marker.len()).any(|w| w == marker) {
            return Err(format!(
                "{CERT_FILE_VAR}={}: no PEM certificate in it (a \"-----BEGIN CERTIFICATE-----\" \
                 block)",
                file.display()
            ));
        }
    }
    for dir in dirs.into_iter().flat_map(std::env::split_paths) {
        if dir.as_os_str().is_empty() {
            continue;
        }
        std::fs::read_dir(&dir)
            .map_err(|e| format!("{CERT_DIR_VAR} names {}: {e}", dir.display()))?;
    }
    Ok(())
}

/// Where the trusted CAs come from, as the explanation of an unknown issuer says it.
fn trust_source() -> &'static str {
    if std::env::var_os(CERT_FILE_VAR).is_some() || std::env::var_os(CERT_DIR_VAR).is_some() {
        "SSL_CERT_FILE / SSL_CERT_DIR (which replace the system's CA store)"
    } else {
        "the system's CA store"
    }
}

/// The rustls error somewhere in `err`'s chain. `io::Error::source` skips the error it wraps
/// (rustls's travels inside one), so the walk looks inside those.
fn rustls_error<'a>(err: &'a (dyn Error + 'static)) -> Option<&'a rustls::Error> {
    let mut next = Some(err);
    while let Some(e) = next {
        if let Some(found) = e.downcast_ref::<rustls::Error>() {
            return Some(found);
        }
        next = match e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            Some(inner) => Some(inner as &(dyn Error + 'static)),
            None => e.source(),
        };
    }
    None
}

/// One sentence for a handshake with `host` that failed in a way trying again does not fix (a
/// certificate this machine does not trust, a server that does not speak TLS, no common
/// protocol); `None` for any other failure, including TLS errors that may pass.
pub fn explain(err: &(dyn Error + 'static), host: &str) -> Option<String> {
    use rustls::CertificateError as C;
    let e = rustls_error(err)?;
    Some(match e {
        rustls::Error::InvalidCertificate(C::UnknownIssuer) => format!(
            "certificate not trusted: {host} presented a certificate from a CA that is not in \
             {}; for a private or corporate CA set SSL_CERT_FILE to a PEM file that holds it",
            trust_source()
        ),
        rustls::Error::InvalidCertificate(
            cert @ (C::Expired
            | C::ExpiredContext { .. }
            | C::NotValidYet
            | C::NotValidYetContext { .. }),
        ) => format!(
            "certificate not trusted: {host}: {cert}; check the upstream's certificate and this \
             machine's clock"
        ),
        rustls::Error::InvalidCertificate(cert) => {
            format!("certificate not trusted: {host}: {cert}")
        }
        rustls::Error::NoCertificatesPresented => {
            format!("certificate not trusted: {host} presented no certificate")
        }
        rustls::Error::InvalidMessage(_) | rustls::Error::InappropriateMessage { .. } => format!(
            "{host} did not answer in TLS ({e}); if it serves plain http, use an http:// url"
        ),
        rustls::Error::PeerIncompatible(_) => format!(
            "{host} and this client share no TLS version or cipher suite ({e}); this client \
             speaks TLS 1.2 and 1.3"
        ),
        rustls::Error::AlertReceived(_) => format!(
            "{host} refused the TLS handshake ({e}); it may require a client certificate, which \
             this client does not send"
        ),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wrapped(e: rustls::Error) -> std::io::Error {
        // As the TLS stream hands it up: an io::Error that wraps the rustls error.
        std::io::Error::new(std::io::ErrorKind::InvalidData, e)
    }

    #[derive(Debug)]
    struct Outer(std::io::Error);
    impl std::fmt::Display for Outer {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("error sending request")
        }
    }
    impl Error for Outer {
        fn source(&self) -> Option<&(dyn Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn certificate_failures_are_explained_from_deep_in_the_chain() {
        let unknown = Outer(wrapped(rustls::Error::InvalidCertificate(
            rustls::CertificateError::UnknownIssuer,
        )));
        let said = explain(&unknown, "example.com:443").unwrap();
        assert!(
            said.starts_with("certificate not trusted: example.com:443"),
            "{said}"
        );
        assert!(said.contains("SSL_CERT_FILE"), "{said}");

        let expired = Outer(wrapped(rustls::Error::InvalidCertificate(
            rustls::CertificateError::Expired,
        )));
        assert!(explain(&expired, "h").unwrap().contains("clock"));

        let not_tls = wrapped(rustls::Error::InvalidMessage(
            rustls::InvalidMessage::InvalidContentType,
        ));
        assert!(explain(&not_tls, "h").unwrap().contains("http://"));

        // Not TLS at all, or a TLS error that may pass: the caller's usual handling.
        let refused = Outer(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        assert_eq!(explain(&refused, "h"), None);
        assert_eq!(explain(&wrapped(rustls::Error::DecryptError), "h"), None);
    }

    #[test]
    fn unusable_trust_variables_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let err = check_trust_paths(Some(&missing), None).unwrap_err();
        assert!(
            err.starts_with("SSL_CERT_FILE=") && err.contains("missing.pem"),
            "{err}"
        );

        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let err = check_trust_paths(Some(&empty), None).unwrap_err();
        assert!(err.contains("no PEM certificate"), "{err}");

        let pem = dir.path().join("ca.pem");
        std::fs::write(
            &pem,
            "-----BEGIN CERTIFICATE-----\nMII=\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        assert_eq!(check_trust_paths(Some(&pem), None), Ok(()));

        let dirs = std::env::join_paths([dir.path(), &dir.path().join("nope")]).unwrap();
        let err = check_trust_paths(None, Some(&dirs)).unwrap_err();
        assert!(
            err.starts_with("SSL_CERT_DIR") && err.contains("nope"),
            "{err}"
        );
        assert_eq!(
            check_trust_paths(None, Some(dir.path().as_os_str())),
            Ok(())
        );
        assert_eq!(check_trust_paths(None, None), Ok(()));
    }
}
