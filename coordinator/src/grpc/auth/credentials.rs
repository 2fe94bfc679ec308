//! The credentials file (`--credentials-file`): who may call the coordinator and in which role,
//! proven by a bearer token — the file holds its SHA-256, never the token — or by a client
//! certificate, named by its SHA-256 fingerprint. The file is read again whenever it changes,
//! so a credential is added, rotated or revoked without a restart.
//!
//! ```toml
//! [[credentials]]
//! name = "ops"                      # shown in logs and PERMISSION_DENIED messages
//! role = "admin"                    # admin | ingestor | worker | observer
//! token_sha256 = "9f86d081…"        # printf %s "$TOKEN" | sha256sum
//!
//! [[credentials]]
//! name = "camera-host-1"
//! role = "ingestor"
//! ingestor_id = "ingestor-1"        # the ingestor it acts for (default: the name)
//! token_sha256 = ["<old>", "<new>"] # during a rotation both are accepted
//! cert_sha256 = "AB:CD:…"           # openssl x509 -noout -fingerprint -sha256
//! ```

use super::policy::{Principal, Role};
use framefleet_proto::client::Token;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How often the credentials file is checked for changes.
pub const RELOAD_EVERY: Duration = Duration::from_secs(2);

/// The name the shared token (`FRAMEFLEET_AUTH_TOKEN`, `--auth-token-file`) authenticates as,
/// with the admin role.
pub const SHARED_TOKEN_NAME: &str = "shared token";

#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    #[error("cannot read the credentials file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("the credentials file {path} is not valid TOML of [[credentials]] tables: {reason}")]
    Parse { path: PathBuf, reason: String },
    #[error("the credentials file {path}, credential `{name}`: {reason}")]
    Invalid {
        path: PathBuf,
        name: String,
        reason: String,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CredentialsFile {
    #[serde(default)]
    credentials: Vec<Entry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    name: String,
    role: Role,
    #[serde(default)]
    ingestor_id: Option<String>,
    #[serde(default)]
    token_sha256: OneOrMany,
    #[serde(default)]
    cert_sha256: OneOrMany,
}

#[derive(Deserialize, Default)]
#[serde(untagged)]
enum OneOrMany {
    #[default]
    None,
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    fn values(&self) -> &[String] {
        match self {
            Self::None => &[],
            Self::One(value) => std::slice::from_ref(value),
            Self::Many(values) => values,
        }
    }
}

type Digest32 = [u8; 32];

/// The credentials in force: principals by the SHA-256 of their token and of their client
/// certificate (DER).
#[derive(Debug, Default)]
struct CredentialSet {
    by_token: HashMap<Digest32, Principal>,
    by_certificate: HashMap<Digest32, Principal>,
}

/// Parses a SHA-256 written as 64 hex digits, with or without the colons `openssl` prints.
fn parse_digest(text: &str) -> Option<Digest32> {
    let hex: String = text.trim().chars().filter(|c| *c != ':').collect();
    if hex.len() != 64 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    let mut digest = [0u8; 32];
    for (index, byte) in digest.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[index * 2..index * 2 + 2], 16).ok()?;
    }
    Some(digest)
}

fn sha256(bytes: &[u8]) -> Digest32 {
    Sha256::digest(bytes).into()
}

impl CredentialSet {
    fn parse(path: &Path, text: &str, shared_token: Option<&Token>) -> Result<Self, CredentialsError> {
        let file: CredentialsFile = toml::from_str(text).map_err(|error| CredentialsError::Parse {
            path: path.to_owned(),
            reason: error.to_string(),
        })?;
        let mut set = Self::with_shared_token(shared_token);
        for entry in file.credentials {
            let invalid = |reason: String| CredentialsError::Invalid {
                path: path.to_owned(),
                name: entry.name.clone(),
                reason,
            };
            if entry.name.trim().is_empty() {
                return Err(invalid("`name` must not be empty".into()));
            }
            let ingestor_id = match (entry.role, &entry.ingestor_id) {
                (Role::Ingestor, Some(id)) => id.clone(),
                (Role::Ingestor, None) => entry.name.clone(),
                (_, Some(_)) => return Err(invalid("`ingestor_id` is for the ingestor role only".into())),
                (_, None) => String::new(),
            };
            if entry.role == Role::Ingestor {
                crate::channels::validate::process_id("ingestor_id", &ingestor_id)
                    .map_err(|error| invalid(error.to_string()))?;
            }
            if entry.token_sha256.values().is_empty() && entry.cert_sha256.values().is_empty() {
                return Err(invalid("give `token_sha256`, `cert_sha256` or both".into()));
            }
            let principal = Principal {
                name: entry.name.clone(),
                role: entry.role,
                ingestor_id,
            };
            for (field, values, map) in [
                ("token_sha256", entry.token_sha256.values(), &mut set.by_token),
                ("cert_sha256", entry.cert_sha256.values(), &mut set.by_certificate),
            ] {
                for value in values {
                    let digest = parse_digest(value).ok_or_else(|| {
                        invalid(format!("`{field}` must be a SHA-256: 64 hex digits (colons allowed)"))
                    })?;
                    if let Some(other) = map.insert(digest, principal.clone())
                        && other != principal
                    {
                        return Err(invalid(format!("its `{field}` is also credential `{}`'s", other.name)));
                    }
                }
            }
        }
        Ok(set)
    }

    fn with_shared_token(shared_token: Option<&Token>) -> Self {
        let mut set = Self::default();
        if let Some(token) = shared_token {
            set.by_token.insert(
                sha256(token.expose().as_bytes()),
                Principal {
                    name: SHARED_TOKEN_NAME.to_owned(),
                    role: Role::Admin,
                    ingestor_id: String::new(),
                },
            );
        }
        set
    }

    fn len(&self) -> usize {
        self.by_token.len() + self.by_certificate.len()
    }
}

/// Every credential the coordinator accepts: the shared token (admin) and the credentials
/// file's, kept current as the file changes.
#[derive(Debug)]
pub struct Keyring {
    shared_token: Option<Token>,
    file: Option<PathBuf>,
    current: RwLock<(Arc<CredentialSet>, Vec<u8>)>,
}

impl Keyring {
    /// `None` when there is nothing to authenticate against: authentication is off.
    ///
    /// Errors: the credentials file cannot be read, is not TOML of `[[credentials]]` tables, or
    /// a credential in it is invalid (the error names it and the field).
    pub fn load(shared_token: Option<Token>, file: Option<PathBuf>) -> Result<Option<Arc<Self>>, CredentialsError> {
        if shared_token.is_none() && file.is_none() {
            return Ok(None);
        }
        let (set, bytes) = match &file {
            Some(path) => {
                let bytes = read(path)?;
                (
                    CredentialSet::parse(path, &String::from_utf8_lossy(&bytes), shared_token.as_ref())?,
                    bytes,
                )
            }
            None => (CredentialSet::with_shared_token(shared_token.as_ref()), Vec::new()),
        };
        Ok(Some(Arc::new(Self {
            shared_token,
            file,
            current: RwLock::new((Arc::new(set), bytes)),
        })))
    }

    fn set(&self) -> Arc<CredentialSet> {
        Arc::clone(&self.current.read().unwrap_or_else(std::sync::PoisonError::into_inner).0)
    }

    /// The principal whose token this is.
    pub fn by_token(&self, token: &str) -> Option<Principal> {
        self.set().by_token.get(&sha256(token.trim().as_bytes())).cloned()
    }

    /// The principal whose client certificate (DER) this is, and the certificate's
    /// fingerprint for messages.
    pub fn by_certificate(&self, der: &[u8]) -> (Option<Principal>, String) {
        let digest = sha256(der);
        let fingerprint = digest
            .iter()
            .map(|byte| format!("{byte:02X}"))
            .collect::<Vec<_>>()
            .join(":");
        (self.set().by_certificate.get(&digest).cloned(), fingerprint)
    }

    /// Reads the credentials file again if it changed. A file that became invalid is
    /// reported and the credentials in force are kept.
    fn reload(&self) {
        let Some(path) = &self.file else { return };
        let bytes = match read(path) {
            Ok(bytes) => bytes,
            Err(error) => {
                tracing::error!(%error, "keeping the credentials in force");
                return;
            }
        };
        if self.current.read().unwrap_or_else(std::sync::PoisonError::into_inner).1 == bytes {
            return;
        }
        match CredentialSet::parse(path, &String::from_utf8_lossy(&bytes), self.shared_token.as_ref()) {
            Ok(set) => {
                tracing::info!(file = %path.display(), credentials = set.len(), "credentials file reloaded");
                *self.current.write().unwrap_or_else(std::sync::PoisonError::into_inner) = (Arc::new(set), bytes);
            }
            Err(error) => tracing::error!(%error, "keeping the credentials in force"),
        }
    }

    /// Checks the credentials file every [`RELOAD_EVERY`] until `shutdown`.
    pub fn spawn_reloader(self: &Arc<Self>, shutdown: CancellationToken) -> tokio::task::JoinHandle<()> {
        let keyring = Arc::clone(self);
        tokio::spawn(async move {
            if keyring.file.is_none() {
                return;
            }
            let mut every = tokio::time::interval(RELOAD_EVERY);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    _ = every.tick() => {
                        let keyring = Arc::clone(&keyring);
                        // File reads block: off the async runtime's workers.
                        let _ = tokio::task::spawn_blocking(move || keyring.reload()).await;
                    }
                }
            }
        })
    }
}

fn read(path: &Path) -> Result<Vec<u8>, CredentialsError> {
    std::fs::read(path).map_err(|source| CredentialsError::Read {
        path: path.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(text: &str) -> String {
        sha256(text.as_bytes())
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect()
    }

    fn load(text: &str) -> Result<Option<Arc<Keyring>>, CredentialsError> {
        let dir = std::env::temp_dir().join(format!("framefleet-credentials-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("credentials.toml");
        std::fs::write(&path, text).expect("write");
        let keyring = Keyring::load(None, Some(path));
        std::fs::remove_dir_all(&dir).expect("clean up");
        keyring
    }

    #[test]
    fn tokens_and_certificates_map_to_their_principals() {
        let text = format!(
            "[[credentials]]\nname = \"ops\"\nrole = \"admin\"\ntoken_sha256 = \"{}\"\n\
             [[credentials]]\nname = \"host-1\"\nrole = \"ingestor\"\ningestor_id = \"ingestor-1\"\n\
             token_sha256 = [\"{}\", \"{}\"]\ncert_sha256 = \"{}\"\n",
            hex("admin-token"),
            hex("old"),
            hex("new"),
            hex("certificate der")
                .to_uppercase()
                .as_bytes()
                .chunks(2)
                .map(|pair| String::from_utf8_lossy(pair).into_owned())
                .collect::<Vec<_>>()
                .join(":"),
        );
        let keyring = load(&text).expect("valid").expect("on");
        assert_eq!(keyring.by_token("admin-token").expect("admin").role, Role::Admin);
        for token in ["old", " new\n"] {
            let principal = keyring.by_token(token).expect("ingestor");
            assert_eq!(
                (principal.role, principal.ingestor_id.as_str()),
                (Role::Ingestor, "ingestor-1")
            );
        }
        assert!(keyring.by_token("other").is_none());
        let (principal, fingerprint) = keyring.by_certificate(b"certificate der");
        assert_eq!(principal.expect("by certificate").name, "host-1");
        assert_eq!(fingerprint.len(), 32 * 3 - 1);
        assert!(keyring.by_certificate(b"another").0.is_none());
    }

    #[test]
    fn an_ingestor_acts_for_its_name_by_default_and_no_file_means_no_authentication() {
        let keyring = load(&format!(
            "[[credentials]]\nname = \"ingestor-7\"\nrole = \"ingestor\"\ntoken_sha256 = \"{}\"\n",
            hex("t")
        ))
        .expect("valid")
        .expect("on");
        assert_eq!(keyring.by_token("t").expect("known").ingestor_id, "ingestor-7");
        assert!(Keyring::load(None, None).expect("nothing to read").is_none());
        let shared = Keyring::load(Some(Token::new("shared")), None)
            .expect("ok")
            .expect("on");
        assert_eq!(shared.by_token("shared").expect("admin").name, SHARED_TOKEN_NAME);
    }

    #[test]
    fn invalid_files_are_refused_naming_the_credential_and_field() {
        let cases = [
            (
                "[[credentials]]\nname = \"a\"\nrole = \"root\"\ntoken_sha256 = \"00\"\n",
                "not valid TOML",
            ),
            (
                "[[credentials]]\nname = \"a\"\nrole = \"admin\"\n",
                "credential `a`: give `token_sha256`",
            ),
            (
                "[[credentials]]\nname = \"a\"\nrole = \"admin\"\ntoken_sha256 = \"abc\"\n",
                "credential `a`: `token_sha256` must be a SHA-256",
            ),
            (
                "[[credentials]]\nname = \"a\"\nrole = \"worker\"\ningestor_id = \"x\"\ntoken_sha256 = \"abc\"\n",
                "is for the ingestor role only",
            ),
            (
                "[[credentials]]\nname = \"a\"\nrole = \"admin\"\ntoken = \"plain\"\n",
                "unknown field `token`",
            ),
        ];
        for (text, expected) in cases {
            let error = load(text).expect_err(text).to_string();
            assert!(error.contains(expected), "{error} should contain {expected}");
        }
        let twice = format!(
            "[[credentials]]\nname = \"a\"\nrole = \"admin\"\ntoken_sha256 = \"{0}\"\n[[credentials]]\nname = \"b\"\nrole = \"observer\"\ntoken_sha256 = \"{0}\"\n",
            hex("same")
        );
        assert!(
            load(&twice)
                .expect_err("one token, two credentials")
                .to_string()
                .contains("also credential `a`'s")
        );
    }
}
