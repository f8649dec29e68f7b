//! rustls's errors as pgreplica meets them, in its two TLS clients (the source node over
//! tokio-postgres, pg-backup-api over reqwest): found inside a library's error chain, and read
//! for what the operator can fix. Each client names its own settings in the message.

use rustls::AlertDescription as Alert;

/// rustls's error inside `error`'s chain, if TLS is what failed. rustls's error travels inside
/// `io::Error`s, whose `source()` skips the error they wrap (their Display shows it), so an
/// `io::Error` link is descended into rather than past.
pub fn rustls_error<'a>(error: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    let mut link = Some(error);
    while let Some(error) = link {
        if let Some(tls) = error.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        link = match error
            .downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::get_ref)
        {
            Some(inner) => Some(inner as &(dyn std::error::Error + 'static)),
            None => error.source(),
        };
    }
    None
}

/// Whether the server's alert says it refused (or required) the client certificate.
pub fn client_certificate_refused(error: &rustls::Error) -> bool {
    matches!(
        error,
        rustls::Error::AlertReceived(
            Alert::CertificateRequired
                | Alert::HandshakeFailure
                | Alert::BadCertificate
                | Alert::UnsupportedCertificate
                | Alert::CertificateRevoked
                | Alert::CertificateExpired
                | Alert::CertificateUnknown
                | Alert::UnknownCA
                | Alert::AccessDenied
        )
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::CertificateError;

    #[test]
    fn the_rustls_error_is_found_inside_io_errors() {
        let inner = rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer);
        let io = std::io::Error::new(std::io::ErrorKind::InvalidData, inner.clone());
        assert_eq!(rustls_error(&io), Some(&inner));
        let plain = std::io::Error::other("no");
        assert_eq!(rustls_error(&plain), None);
    }

    #[test]
    fn refused_client_certificates_are_recognised() {
        assert!(client_certificate_refused(&rustls::Error::AlertReceived(
            Alert::CertificateRequired
        )));
        assert!(!client_certificate_refused(&rustls::Error::AlertReceived(
            Alert::ProtocolVersion
        )));
    }
}
