//! How a Kafka client proves who it talks to and who it is: librdkafka's standard security
//! settings (`security.protocol`, `ssl.*`, `sasl.*`; see librdkafka's CONFIGURATION.md), checked
//! together once at start-up so a half-configured client fails with the setting to fix instead
//! of falling back to plaintext or failing later inside librdkafka.

use crate::secrets::{SecretError, SecretSource};
use framefleet_proto::client::Token;
use rdkafka::ClientConfig;
use std::path::{Path, PathBuf};

/// The SASL password of `--kafka-sasl-username`.
pub const SASL_PASSWORD: SecretSource = SecretSource {
    variable: "FRAMEFLEET_KAFKA_SASL_PASSWORD",
    file_flag: "--kafka-sasl-password-file",
};

/// librdkafka's `security.protocol`: whether the connection is TLS, and whether the client
/// authenticates with SASL on it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
#[value(rename_all = "snake_case")]
pub enum SecurityProtocol {
    /// No TLS, no SASL (librdkafka's default).
    #[default]
    Plaintext,
    /// TLS; the broker's certificate is checked against `--kafka-tls-ca` (else the system's
    /// roots) and its name against the address.
    Ssl,
    /// SASL over plaintext: the password crosses the network unencrypted with PLAIN.
    SaslPlaintext,
    /// SASL over TLS.
    SaslSsl,
}

impl SecurityProtocol {
    /// The value librdkafka takes.
    pub fn as_librdkafka(self) -> &'static str {
        match self {
            Self::Plaintext => "plaintext",
            Self::Ssl => "ssl",
            Self::SaslPlaintext => "sasl_plaintext",
            Self::SaslSsl => "sasl_ssl",
        }
    }

    fn uses_tls(self) -> bool {
        matches!(self, Self::Ssl | Self::SaslSsl)
    }

    fn uses_sasl(self) -> bool {
        matches!(self, Self::SaslPlaintext | Self::SaslSsl)
    }
}

impl std::fmt::Display for SecurityProtocol {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(self.as_librdkafka())
    }
}

/// librdkafka's `sasl.mechanism`s that need no Kerberos library.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SaslMechanism {
    #[value(name = "PLAIN")]
    Plain,
    #[value(name = "SCRAM-SHA-256")]
    ScramSha256,
    #[value(name = "SCRAM-SHA-512")]
    ScramSha512,
}

impl SaslMechanism {
    pub fn as_librdkafka(self) -> &'static str {
        match self {
            Self::Plain => "PLAIN",
            Self::ScramSha256 => "SCRAM-SHA-256",
            Self::ScramSha512 => "SCRAM-SHA-512",
        }
    }
}

/// How a process's Kafka clients secure their connections: librdkafka's standard settings
/// (`security.protocol`, `ssl.ca.location`, `ssl.certificate.location`, `ssl.key.location`,
/// `sasl.mechanism`, `sasl.username`, `sasl.password`), one flag and variable each, the same in
/// every service and the CLI.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct KafkaSecurityArgs {
    /// Kafka's security.protocol: plaintext, ssl (TLS), sasl_ssl (SASL over TLS) or
    /// sasl_plaintext.
    #[arg(
        id = "kafka_security_protocol", long = "kafka-security-protocol",
        env = "FRAMEFLEET_KAFKA_SECURITY_PROTOCOL",
        value_enum,
        ignore_case = true,
        default_value_t = SecurityProtocol::Plaintext
    )]
    pub protocol: SecurityProtocol,

    /// PEM CA certificate(s) the brokers' TLS certificates must chain to (default: the
    /// system's roots).
    #[arg(id = "kafka_tls_ca", long = "kafka-tls-ca", env = "FRAMEFLEET_KAFKA_TLS_CA")]
    pub tls_ca: Option<PathBuf>,

    /// PEM client certificate, for brokers that require one (mutual TLS; needs
    /// --kafka-tls-client-key).
    #[arg(
        id = "kafka_tls_client_cert",
        long = "kafka-tls-client-cert",
        env = "FRAMEFLEET_KAFKA_TLS_CLIENT_CERT"
    )]
    pub tls_client_cert: Option<PathBuf>,

    /// Unencrypted PEM private key of --kafka-tls-client-cert.
    #[arg(
        id = "kafka_tls_client_key",
        long = "kafka-tls-client-key",
        env = "FRAMEFLEET_KAFKA_TLS_CLIENT_KEY"
    )]
    pub tls_client_key: Option<PathBuf>,

    /// SASL mechanism, for sasl_ssl and sasl_plaintext.
    #[arg(
        id = "kafka_sasl_mechanism",
        long = "kafka-sasl-mechanism",
        env = "FRAMEFLEET_KAFKA_SASL_MECHANISM",
        value_enum
    )]
    pub sasl_mechanism: Option<SaslMechanism>,

    /// SASL username.
    #[arg(
        id = "kafka_sasl_username",
        long = "kafka-sasl-username",
        env = "FRAMEFLEET_KAFKA_SASL_USERNAME"
    )]
    pub sasl_username: Option<String>,

    /// File holding the SASL password; or set FRAMEFLEET_KAFKA_SASL_PASSWORD. No flag takes
    /// the password itself: every local user can read a process's arguments.
    #[arg(
        id = "kafka_sasl_password_file",
        long = "kafka-sasl-password-file",
        env = "FRAMEFLEET_KAFKA_SASL_PASSWORD_FILE"
    )]
    pub sasl_password_file: Option<PathBuf>,
}

/// Why the Kafka security settings cannot be used. Each names the flag to change.
#[derive(Debug, thiserror::Error)]
pub enum KafkaSecurityError {
    #[error(
        "{flag} is set but --kafka-security-protocol is {protocol}: TLS settings need ssl or sasl_ssl (refused rather than ignored, so a client never speaks plaintext by mistake)"
    )]
    TlsWithoutTls {
        flag: &'static str,
        protocol: SecurityProtocol,
    },
    #[error("{flag} is set but --kafka-security-protocol is {protocol}: SASL settings need sasl_ssl or sasl_plaintext")]
    SaslWithoutSasl {
        flag: &'static str,
        protocol: SecurityProtocol,
    },
    #[error("--kafka-security-protocol {protocol} needs {missing}")]
    SaslIncomplete {
        protocol: SecurityProtocol,
        missing: &'static str,
    },
    #[error("--kafka-tls-client-cert and --kafka-tls-client-key go together; only {given} is set")]
    HalfIdentity { given: &'static str },
    #[error("cannot read {flag} {}: {source}", path.display())]
    Unreadable {
        flag: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Secret(#[from] SecretError),
}

/// Checked settings, ready to apply to every client of a process.
#[derive(Debug, Clone, Default)]
pub struct KafkaSecurity {
    protocol: SecurityProtocol,
    tls: Option<Tls>,
    sasl: Option<Sasl>,
}

#[derive(Debug, Clone)]
struct Tls {
    ca: Option<PathBuf>,
    identity: Option<(PathBuf, PathBuf)>,
}

#[derive(Debug, Clone)]
struct Sasl {
    mechanism: SaslMechanism,
    username: String,
    /// `Debug` prints `***`.
    password: Token,
}

impl KafkaSecurity {
    /// Checks `settings` together, reading the SASL password from `$FRAMEFLEET_KAFKA_SASL_PASSWORD`
    /// or `--kafka-sasl-password-file`.
    ///
    /// Errors: a TLS file with a protocol without TLS, a SASL setting with one without SASL, a
    /// SASL protocol without its mechanism, username or password, half a client identity, an
    /// unreadable file, or a password given both ways or empty.
    pub fn new(settings: &KafkaSecurityArgs) -> Result<Self, KafkaSecurityError> {
        let password = crate::secrets::secret(SASL_PASSWORD, settings.sasl_password_file.as_deref())?;
        Self::checked(settings, password)
    }

    /// Plaintext, as a client without settings.
    pub fn plaintext() -> Self {
        Self::default()
    }

    pub fn protocol(&self) -> SecurityProtocol {
        self.protocol
    }

    fn checked(settings: &KafkaSecurityArgs, password: Option<Token>) -> Result<Self, KafkaSecurityError> {
        let protocol = settings.protocol;
        let tls_flags = [
            ("--kafka-tls-ca", settings.tls_ca.is_some()),
            ("--kafka-tls-client-cert", settings.tls_client_cert.is_some()),
            ("--kafka-tls-client-key", settings.tls_client_key.is_some()),
        ];
        if !protocol.uses_tls()
            && let Some((flag, _)) = tls_flags.iter().find(|(_, set)| *set)
        {
            return Err(KafkaSecurityError::TlsWithoutTls { flag, protocol });
        }
        let sasl_flags = [
            ("--kafka-sasl-mechanism", settings.sasl_mechanism.is_some()),
            ("--kafka-sasl-username", settings.sasl_username.is_some()),
            ("a SASL password", password.is_some()),
        ];
        if !protocol.uses_sasl()
            && let Some((flag, _)) = sasl_flags.iter().find(|(_, set)| *set)
        {
            return Err(KafkaSecurityError::SaslWithoutSasl { flag, protocol });
        }
        let tls = if protocol.uses_tls() {
            let identity = match (&settings.tls_client_cert, &settings.tls_client_key) {
                (Some(cert), Some(key)) => Some((
                    readable("--kafka-tls-client-cert", cert)?,
                    readable("--kafka-tls-client-key", key)?,
                )),
                (Some(_), None) => {
                    return Err(KafkaSecurityError::HalfIdentity {
                        given: "--kafka-tls-client-cert",
                    });
                }
                (None, Some(_)) => {
                    return Err(KafkaSecurityError::HalfIdentity {
                        given: "--kafka-tls-client-key",
                    });
                }
                (None, None) => None,
            };
            let ca = settings
                .tls_ca
                .as_deref()
                .map(|ca| readable("--kafka-tls-ca", ca))
                .transpose()?;
            Some(Tls { ca, identity })
        } else {
            None
        };
        let sasl = if protocol.uses_sasl() {
            let incomplete = |missing| KafkaSecurityError::SaslIncomplete { protocol, missing };
            Some(Sasl {
                mechanism: settings
                    .sasl_mechanism
                    .ok_or_else(|| incomplete("--kafka-sasl-mechanism"))?,
                username: settings
                    .sasl_username
                    .clone()
                    .ok_or_else(|| incomplete("--kafka-sasl-username"))?,
                password: password.ok_or_else(|| {
                    incomplete("a password: $FRAMEFLEET_KAFKA_SASL_PASSWORD or --kafka-sasl-password-file")
                })?,
            })
        } else {
            None
        };
        Ok(Self { protocol, tls, sasl })
    }

    /// Sets librdkafka's `security.protocol`, `ssl.*` and `sasl.*` on `config`. librdkafka keeps
    /// `sasl.password` out of its own logs and configuration dumps.
    pub fn apply(&self, config: &mut ClientConfig) {
        config.set("security.protocol", self.protocol.as_librdkafka());
        if let Some(tls) = &self.tls {
            // librdkafka's default since 2.0, stated so that no build or override turns off the
            // check of the broker's name against its certificate.
            config.set("ssl.endpoint.identification.algorithm", "https");
            if let Some(ca) = &tls.ca {
                config.set("ssl.ca.location", ca.to_string_lossy());
            }
            if let Some((cert, key)) = &tls.identity {
                config
                    .set("ssl.certificate.location", cert.to_string_lossy())
                    .set("ssl.key.location", key.to_string_lossy());
            }
        }
        if let Some(sasl) = &self.sasl {
            config
                .set("sasl.mechanism", sasl.mechanism.as_librdkafka())
                .set("sasl.username", &sasl.username)
                .set("sasl.password", sasl.password.expose());
        }
    }
}

/// `path`, once it is known to be readable: librdkafka's own error for a missing file comes
/// only when the client is created and does not name the flag.
fn readable(flag: &'static str, path: &Path) -> Result<PathBuf, KafkaSecurityError> {
    std::fs::File::open(path)
        .map(|_| path.to_owned())
        .map_err(|source| KafkaSecurityError::Unreadable {
            flag,
            path: path.to_owned(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(protocol: SecurityProtocol) -> KafkaSecurityArgs {
        KafkaSecurityArgs {
            protocol,
            ..KafkaSecurityArgs::default()
        }
    }

    fn applied(security: &KafkaSecurity) -> ClientConfig {
        let mut config = ClientConfig::new();
        security.apply(&mut config);
        config
    }

    #[test]
    fn plaintext_sets_only_the_protocol() {
        let config = applied(&KafkaSecurity::checked(&settings(SecurityProtocol::Plaintext), None).expect("valid"));
        assert_eq!(config.get("security.protocol"), Some("plaintext"));
        assert_eq!(config.config_map().len(), 1);
    }

    #[test]
    fn tls_files_are_refused_without_a_tls_protocol() {
        for protocol in [SecurityProtocol::Plaintext, SecurityProtocol::SaslPlaintext] {
            let mut given = settings(protocol);
            given.tls_ca = Some("/etc/hostname".into());
            let error = KafkaSecurity::checked(&given, None).expect_err("refused");
            assert!(error.to_string().contains("--kafka-tls-ca is set"), "{error}");
        }
    }

    #[test]
    fn sasl_needs_mechanism_username_and_password() {
        let mut given = settings(SecurityProtocol::SaslSsl);
        let error = KafkaSecurity::checked(&given, None).expect_err("no mechanism");
        assert!(error.to_string().contains("needs --kafka-sasl-mechanism"), "{error}");
        given.sasl_mechanism = Some(SaslMechanism::ScramSha512);
        given.sasl_username = Some("camera-host".into());
        let error = KafkaSecurity::checked(&given, None).expect_err("no password");
        assert!(error.to_string().contains("FRAMEFLEET_KAFKA_SASL_PASSWORD"), "{error}");
        let security = KafkaSecurity::checked(&given, Some(Token::new("hunter2"))).expect("complete");
        let config = applied(&security);
        assert_eq!(config.get("security.protocol"), Some("sasl_ssl"));
        assert_eq!(config.get("sasl.mechanism"), Some("SCRAM-SHA-512"));
        assert_eq!(config.get("sasl.password"), Some("hunter2"));
        assert!(!format!("{security:?}").contains("hunter2"), "{security:?}");
    }

    #[test]
    fn a_sasl_password_without_a_sasl_protocol_is_refused() {
        let error =
            KafkaSecurity::checked(&settings(SecurityProtocol::Ssl), Some(Token::new("x"))).expect_err("refused");
        assert!(error.to_string().contains("a SASL password is set"), "{error}");
    }

    #[test]
    fn tls_files_must_be_readable_and_the_identity_whole() {
        let mut given = settings(SecurityProtocol::Ssl);
        given.tls_ca = Some("/nonexistent/ca.pem".into());
        let error = KafkaSecurity::checked(&given, None).expect_err("unreadable");
        assert!(
            error
                .to_string()
                .contains("cannot read --kafka-tls-ca /nonexistent/ca.pem"),
            "{error}"
        );
        given.tls_ca = None;
        given.tls_client_cert = Some("/etc/hostname".into());
        let error = KafkaSecurity::checked(&given, None).expect_err("half");
        assert!(
            error.to_string().contains("only --kafka-tls-client-cert is set"),
            "{error}"
        );
        given.tls_client_key = Some("/etc/hostname".into());
        let config = applied(&KafkaSecurity::checked(&given, None).expect("whole"));
        assert_eq!(config.get("ssl.certificate.location"), Some("/etc/hostname"));
        assert_eq!(config.get("ssl.endpoint.identification.algorithm"), Some("https"));
    }
}
