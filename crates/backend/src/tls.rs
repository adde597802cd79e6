//! Outbound PostgreSQL connections (the backend, the PostgreSQL ledger)
//! encrypted with rustls, with libpq's `sslmode` in the URL:
//!
//! - `disable` (or no sslmode): plaintext, as before;
//! - `prefer`, `require`: TLS, the server's certificate not checked
//!   (libpq's meaning; `prefer` falls back to plaintext);
//! - `verify-ca`: TLS, the certificate must chain to `sslrootcert`;
//! - `verify-full`: as `verify-ca`, and it must name the host.
//!
//! tokio-postgres reads only disable/prefer/require, so dpgate takes
//! `sslmode` and `sslrootcert` out of the URL and configures rustls itself.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, Error as TlsError, RootCertStore, SignatureScheme};
use tokio_postgres::config::SslMode;
use tokio_postgres_rustls::MakeRustlsConnect;

/// Where an outbound connection goes and how it is encrypted.
#[derive(Clone)]
pub struct Outbound {
    /// Host, port, user, database and options (without sslmode).
    pub config: tokio_postgres::Config,
    /// The TLS connector, unless the connection is plaintext.
    pub tls: Option<MakeRustlsConnect>,
}

impl std::fmt::Debug for Outbound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbound")
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

impl Outbound {
    /// A plaintext connection with `config` (loopback, dpgate's own).
    pub fn plain(config: tokio_postgres::Config) -> Outbound {
        Outbound { config, tls: None }
    }

    /// Reads a PostgreSQL URL with libpq's `sslmode` and `sslrootcert`.
    pub fn parse(url: &str) -> Result<Outbound, String> {
        let (base, query) = url.split_once('?').unwrap_or((url, ""));
        let (mut mode, mut root) = (None, None);
        let kept: Vec<&str> = query
            .split('&')
            .filter(|p| !p.is_empty())
            .filter(|p| match p.split_once('=') {
                Some(("sslmode", v)) => {
                    mode = Some(v.to_string());
                    false
                }
                Some(("sslrootcert", v)) => {
                    root = Some(v.to_string());
                    false
                }
                _ => true,
            })
            .collect();
        let rebuilt = if kept.is_empty() {
            base.to_string()
        } else {
            format!("{base}?{}", kept.join("&"))
        };
        let mut config: tokio_postgres::Config = rebuilt
            .parse()
            .map_err(|e| format!("cannot read the URL: {e}"))?;
        let verify = match mode.as_deref() {
            None | Some("disable") => return Ok(Outbound::plain(config)),
            Some("allow") | Some("prefer") => {
                config.ssl_mode(SslMode::Prefer);
                Verify::Nothing
            }
            Some("require") => Verify::Nothing,
            Some("verify-ca") => Verify::Chain,
            Some("verify-full") => Verify::ChainAndName,
            Some(other) => {
                return Err(format!(
                    "sslmode={other} is not one of disable, prefer, require, verify-ca, verify-full"
                ))
            }
        };
        if mode.as_deref() != Some("prefer") && mode.as_deref() != Some("allow") {
            config.ssl_mode(SslMode::Require);
        }
        let roots = match (&verify, root) {
            (Verify::Nothing, _) => None,
            (_, Some(path)) => Some(load_roots(&path)?),
            (_, None) => {
                return Err(format!(
                    "sslmode={} needs sslrootcert=<CA file> in the URL, to know which certificates to trust",
                    mode.unwrap_or_default()
                ))
            }
        };
        Ok(Outbound {
            config,
            tls: Some(MakeRustlsConnect::new(client_config(verify, roots)?)),
        })
    }

    /// Opens one connection and drives it in the background.
    pub async fn connect(&self) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
        let client = match &self.tls {
            None => {
                let (client, connection) = self.config.connect(tokio_postgres::NoTls).await?;
                tokio::spawn(drive(connection));
                client
            }
            Some(tls) => {
                let (client, connection) = self.config.connect(tls.clone()).await?;
                tokio::spawn(drive(connection));
                client
            }
        };
        Ok(client)
    }
}

impl Outbound {
    /// A task that asks the server to cancel what `token`'s session is
    /// running, over the same kind of connection as the session (a
    /// plaintext cancel is refused before it is sent where `sslmode`
    /// asks for TLS). Failures are ignored: the caller is closing the
    /// session anyway.
    pub fn cancel(
        &self,
        token: tokio_postgres::CancelToken,
    ) -> impl std::future::Future<Output = ()> {
        let tls = self.tls.clone();
        async move {
            let _ = match tls {
                None => token.cancel_query(tokio_postgres::NoTls).await,
                Some(tls) => token.cancel_query(tls).await,
            };
        }
    }
}

async fn drive<F: std::future::Future<Output = Result<(), tokio_postgres::Error>>>(connection: F) {
    if let Err(e) = connection.await {
        tracing::debug!("database connection closed: {e}");
    }
}

/// How much of the server's certificate is checked.
enum Verify {
    Nothing,
    Chain,
    ChainAndName,
}

fn load_roots(path: &str) -> Result<RootCertStore, String> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("cannot read sslrootcert {path}: {e}"))?;
    for cert in certs {
        let cert = cert.map_err(|e| format!("bad certificate in {path}: {e}"))?;
        roots
            .add(cert)
            .map_err(|e| format!("cannot trust a certificate in {path}: {e}"))?;
    }
    if roots.is_empty() {
        return Err(format!("sslrootcert {path} holds no certificate"));
    }
    Ok(roots)
}

fn client_config(
    verify: Verify,
    roots: Option<RootCertStore>,
) -> Result<rustls::ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let webpki = |roots: RootCertStore| {
        WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
            .build()
            .map_err(|e| e.to_string())
    };
    let verifier: Arc<dyn ServerCertVerifier> = match (verify, roots) {
        (Verify::ChainAndName, Some(r)) => webpki(r)?,
        (Verify::Chain, Some(r)) => Arc::new(ChainOnly(webpki(r)?)),
        _ => Arc::new(EncryptOnly(provider)),
    };
    Ok(builder
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth())
}

/// `verify-ca`: the chain must lead to a trusted root; the name is not
/// checked (libpq's meaning).
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, TlsError> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            Err(TlsError::InvalidCertificate(rustls::CertificateError::NotValidForName))
            | Err(TlsError::InvalidCertificate(
                rustls::CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// `require`: encrypted, any certificate (libpq's meaning without a root
/// certificate); the handshake signatures are still checked.
#[derive(Debug)]
struct EncryptOnly(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for EncryptOnly {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, TlsError> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sslmode_is_read_and_taken_out_of_the_url() {
        let plain = Outbound::parse("postgres://u@h/db").unwrap();
        assert!(plain.tls.is_none());
        let req = Outbound::parse("postgres://u@h/db?sslmode=require&connect_timeout=5").unwrap();
        assert!(req.tls.is_some());
        assert_eq!(req.config.get_ssl_mode(), SslMode::Require);
        let e = Outbound::parse("postgres://u@h/db?sslmode=verify-full").unwrap_err();
        assert!(e.contains("sslrootcert"), "{e}");
        let e = Outbound::parse("postgres://u@h/db?sslmode=sometimes").unwrap_err();
        assert!(e.contains("sslmode=sometimes"), "{e}");
    }
}
