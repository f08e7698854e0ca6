//! TLS for the OTLP exporters: which certificates an https:// endpoint is checked against,
//! and the client identity for mTLS. Built once per exporter, when it starts.
//!
//! Trust, as the OpenTelemetry SDKs do it: the CA bundle the user named
//! (`--otlp-certificate`, `OTEL_EXPORTER_OTLP_[SIGNAL_]CERTIFICATE`) and nothing else.
//! Without one, the system's trust store, read by `rustls-native-certs` (the distribution's
//! bundle, or `SSL_CERT_FILE` / `SSL_CERT_DIR`), and only when that holds no certificate at
//! all (a distroless or scratch image) Mozilla's roots compiled in from `webpki-roots`. The
//! system store comes first because it is where an operator adds a company CA and where the
//! distribution ships removals; the compiled-in list only keeps an agent in a minimal image
//! able to reach a public backend. Both crates are maintained by the rustls project next to
//! rustls itself, so they move with the TLS stack we already ship.
//!
//! Both transports get the same material: reqwest (HTTP/protobuf) a finished rustls
//! `ClientConfig`, tonic (gRPC) the same trust anchors and PEM identity through its own
//! `ClientTlsConfig`, because tonic builds its rustls config itself (adding ALPN `h2`).
//!
//! Files are read here, when an exporter starts, rather than when the configuration is
//! resolved: a missing or bad file is one error line and that exporter's data is dropped and
//! counted, like a backend that is down, instead of a refusal to trace anything. They are read
//! once; a rotated CA or client certificate takes a restart.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore};

use super::config::{TlsConfig, TlsFile};

const CA_FILE: &str = "CA certificate file";
const KEY_FILE: &str = "client key file";
const CERT_FILE: &str = "client certificate file";

/// A TLS file that cannot be used, as one line naming the file and the setting.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum TlsError {
    #[error("OTLP {what} {path} ({setting}): {reason}")]
    File {
        what: &'static str,
        path: String,
        setting: &'static str,
        reason: String,
    },
    #[error(
        "OTLP client certificate {certificate} and key {key} cannot be used together: {reason}"
    )]
    Identity {
        certificate: String,
        key: String,
        reason: String,
    },
}

impl TlsError {
    fn file(what: &'static str, file: &TlsFile, reason: impl Into<String>) -> TlsError {
        TlsError::File {
            what,
            path: file.path.display().to_string(),
            setting: file.setting,
            reason: reason.into(),
        }
    }
}

/// What one exporter needs for an https:// endpoint, loaded from its [`TlsConfig`].
pub struct TlsMaterial {
    roots: Arc<RootCertStore>,
    /// (certificate chain, key), PEM, for tonic, which parses them itself.
    identity_pem: Option<(Vec<u8>, Vec<u8>)>,
    /// For reqwest.
    client_config: ClientConfig,
}

impl TlsMaterial {
    /// Reads and checks the files `cfg` names (or takes the platform roots).
    pub fn load(cfg: &TlsConfig) -> Result<TlsMaterial, TlsError> {
        let roots = match &cfg.certificate {
            Some(file) => Arc::new(ca_bundle(file)?),
            None => platform_roots(),
        };
        let builder =
            ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .expect("the ring provider supports the default TLS versions")
                .with_root_certificates(roots.clone());
        let (client_config, identity_pem) = match &cfg.client {
            None => (builder.with_no_client_auth(), None),
            Some(id) => {
                let cert_pem = read(&id.certificate, CERT_FILE)?;
                let chain = certificates(&cert_pem, &id.certificate, CERT_FILE)?;
                let key_pem = read(&id.key, KEY_FILE)?;
                let key = PrivateKeyDer::from_pem_slice(&key_pem)
                    .map_err(|e| TlsError::file(KEY_FILE, &id.key, pem_reason(e, "private key")))?;
                // Also checks that the key is the certificate's.
                let config =
                    builder
                        .with_client_auth_cert(chain, key)
                        .map_err(|e| TlsError::Identity {
                            certificate: id.certificate.path.display().to_string(),
                            key: id.key.path.display().to_string(),
                            reason: e.to_string(),
                        })?;
                (config, Some((cert_pem, key_pem)))
            }
        };
        Ok(TlsMaterial {
            roots,
            identity_pem,
            client_config,
        })
    }

    /// The rustls config for reqwest (`use_preconfigured_tls`).
    pub fn rustls_config(&self) -> ClientConfig {
        self.client_config.clone()
    }

    /// The same trust and identity for tonic. `domain` is the name (or IP address, without
    /// brackets) the server's certificate must be valid for; `timeout` bounds the handshake.
    pub fn tonic_config(
        &self,
        domain: &str,
        timeout: Duration,
    ) -> tonic::transport::ClientTlsConfig {
        let mut c = tonic::transport::ClientTlsConfig::new()
            .domain_name(domain)
            .trust_anchors(self.roots.roots.iter().cloned())
            .timeout(timeout);
        if let Some((cert, key)) = &self.identity_pem {
            c = c.identity(tonic::transport::Identity::from_pem(cert, key));
        }
        c
    }

    /// How many trust anchors the server's certificate is checked against.
    pub fn root_count(&self) -> usize {
        self.roots.len()
    }
}

fn read(file: &TlsFile, what: &'static str) -> Result<Vec<u8>, TlsError> {
    std::fs::read(&file.path)
        .map_err(|e| TlsError::file(what, file, format!("cannot read it: {e}")))
}

/// Every certificate in a PEM file; an error if there is none.
fn certificates(
    pem: &[u8],
    file: &TlsFile,
    what: &'static str,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::file(what, file, pem_reason(e, "certificate")))?;
    if certs.is_empty() {
        return Err(TlsError::file(what, file, "no PEM certificate in it"));
    }
    Ok(certs)
}

fn pem_reason(e: rustls::pki_types::pem::Error, item: &str) -> String {
    match e {
        rustls::pki_types::pem::Error::NoItemsFound => format!("no PEM {item} in it"),
        e => format!("not valid PEM: {e}"),
    }
}

fn ca_bundle(file: &TlsFile) -> Result<RootCertStore, TlsError> {
    let pem = read(file, CA_FILE)?;
    let mut store = RootCertStore::empty();
    for cert in certificates(&pem, file, CA_FILE)? {
        store.add(cert).map_err(|e| {
            TlsError::file(CA_FILE, file, format!("not a usable CA certificate: {e}"))
        })?;
    }
    Ok(store)
}

/// The system's roots, else Mozilla's; loaded once per process (every signal shares them).
fn platform_roots() -> Arc<RootCertStore> {
    static ROOTS: OnceLock<Arc<RootCertStore>> = OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let native = rustls_native_certs::load_native_certs();
            let mut store = RootCertStore::empty();
            let (added, _unparsable) = store.add_parsable_certificates(native.certs);
            if added > 0 {
                tracing::debug!("OTLP over https: {added} CA certificates from the system store");
            } else {
                store.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
                let why = native
                    .errors
                    .first()
                    .map(|e| format!(" ({e})"))
                    .unwrap_or_default();
                tracing::info!(
                    "OTLP over https: no CA certificate in the system store{why}; \
                     trusting the Mozilla roots built into periscope"
                );
            }
            Arc::new(store)
        })
        .clone()
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use super::*;
    use crate::export::config::ClientIdentity;

    fn file(path: &Path, setting: &'static str) -> TlsFile {
        TlsFile {
            path: path.to_path_buf(),
            setting,
        }
    }

    fn temp(name: &str, contents: &[u8]) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("periscope-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join(name);
        std::fs::write(&p, contents).unwrap();
        p
    }

    #[test]
    fn platform_roots_are_never_empty() {
        let m = TlsMaterial::load(&TlsConfig::default()).unwrap();
        assert!(m.root_count() > 0);
    }

    #[test]
    fn unusable_files_are_one_line_naming_file_and_setting() {
        let missing = TlsConfig {
            certificate: Some(file(
                Path::new("/nonexistent/ca.pem"),
                "OTEL_EXPORTER_OTLP_CERTIFICATE",
            )),
            client: None,
        };
        let e = TlsMaterial::load(&missing).err().unwrap().to_string();
        assert!(
            e.starts_with(
                "OTLP CA certificate file /nonexistent/ca.pem (OTEL_EXPORTER_OTLP_CERTIFICATE): \
                 cannot read it: "
            ),
            "{e}"
        );
        let garbage = temp("garbage.pem", b"this is not a certificate\n");
        let e = TlsMaterial::load(&TlsConfig {
            certificate: Some(file(&garbage, "--otlp-certificate")),
            client: None,
        })
        .err()
        .unwrap();
        assert_eq!(
            e.to_string(),
            format!(
                "OTLP CA certificate file {} (--otlp-certificate): no PEM certificate in it",
                garbage.display()
            )
        );
        let truncated = temp("truncated.pem", b"-----BEGIN CERTIFICATE-----\nMIIB\n");
        let e = TlsMaterial::load(&TlsConfig {
            certificate: Some(file(&truncated, "--otlp-certificate")),
            client: None,
        })
        .err()
        .unwrap()
        .to_string();
        assert!(e.contains("not valid PEM"), "{e}");
        assert!(!e.contains('\n'), "{e}");

        // A client key file without a key in it.
        let e = TlsMaterial::load(&TlsConfig {
            certificate: None,
            client: Some(ClientIdentity {
                key: file(&garbage, "OTEL_EXPORTER_OTLP_CLIENT_KEY"),
                certificate: file(&garbage, "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE"),
            }),
        })
        .err()
        .unwrap()
        .to_string();
        assert!(
            e.starts_with("OTLP client certificate file")
                && e.ends_with("no PEM certificate in it"),
            "{e}"
        );
    }

    /// A CA and a leaf certificate it signed, as PEM: (ca, leaf, leaf key).
    fn pki() -> (String, String, String) {
        use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().unwrap()).unwrap();
        let key = KeyPair::generate().unwrap();
        let leaf = CertificateParams::new(vec!["client".to_string()])
            .unwrap()
            .signed_by(&key, &ca)
            .unwrap();
        (ca.pem(), leaf.pem(), key.serialize_pem())
    }

    #[test]
    fn a_ca_bundle_replaces_the_platform_roots() {
        let (ca, _, _) = pki();
        let (other, _, _) = pki();
        let bundle = temp("bundle.pem", format!("{ca}\n{other}").as_bytes());
        let m = TlsMaterial::load(&TlsConfig {
            certificate: Some(file(&bundle, "--otlp-certificate")),
            client: None,
        })
        .unwrap();
        assert_eq!(m.root_count(), 2, "exactly the bundle's CAs");
    }

    #[test]
    fn client_identity_must_be_a_matching_pair() {
        let (_, cert, key) = pki();
        let (_, _, other_key) = pki();
        let cert = temp("client.pem", cert.as_bytes());
        let key = temp("client.key", key.as_bytes());
        let other_key = temp("other.key", other_key.as_bytes());
        let identity = |key: &Path| TlsConfig {
            certificate: None,
            client: Some(ClientIdentity {
                key: file(key, "--otlp-client-key"),
                certificate: file(&cert, "--otlp-client-certificate"),
            }),
        };
        let m = TlsMaterial::load(&identity(&key)).unwrap();
        assert!(m.identity_pem.is_some());
        let e = TlsMaterial::load(&identity(&other_key)).err().unwrap();
        assert!(matches!(e, TlsError::Identity { .. }), "{e}");
        let e = e.to_string();
        assert!(
            e.contains("cannot be used together") && !e.contains('\n'),
            "{e}"
        );
        // A certificate where the key should be.
        let e = TlsMaterial::load(&identity(&cert))
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.starts_with("OTLP client key file") && e.ends_with("no PEM private key in it"),
            "{e}"
        );
    }
}
