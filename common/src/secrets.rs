//! Where secrets come from: the environment or a file, never a command-line flag, since every
//! local user can read a process's arguments (`ps`, `/proc/<pid>/cmdline`). A secret is held as
//! a [`Token`], whose `Debug` prints `***`, and error messages name the variable or the file,
//! never the value.

use framefleet_proto::client::Token;
use std::path::{Path, PathBuf};

/// Where one secret may come from: an environment variable, or a file a flag names.
#[derive(Debug, Clone, Copy)]
pub struct SecretSource {
    pub variable: &'static str,
    pub file_flag: &'static str,
}

/// The coordinator's bearer token, for the coordinator and every client of it.
pub const AUTH_TOKEN: SecretSource = SecretSource {
    variable: "FRAMEFLEET_AUTH_TOKEN",
    file_flag: "--auth-token-file",
};

/// The password of the coordinator's etcd user (`--etcd-user`).
pub const ETCD_PASSWORD: SecretSource = SecretSource {
    variable: "FRAMEFLEET_ETCD_PASSWORD",
    file_flag: "--etcd-password-file",
};

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("{} and {} are both set; give the secret one way", .0.variable, .0.file_flag)]
    TwoSources(SecretSource),
    #[error("{} is set but empty", .0.variable)]
    EmptyVariable(SecretSource),
    #[error("{} is not valid UTF-8", .0.variable)]
    NotUnicode(SecretSource),
    #[error("cannot read {} {}: {source}", .from.file_flag, path.display())]
    Unreadable {
        from: SecretSource,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{} {}: the secret {source}", .from.file_flag, path.display())]
    BadFile {
        from: SecretSource,
        path: PathBuf,
        source: framefleet_proto::client::EmptyToken,
    },
}

/// The bearer token from `$FRAMEFLEET_AUTH_TOKEN` or from `file` (surrounding whitespace
/// ignored); `None` when neither is given.
///
/// Errors: both given, an empty or non-UTF-8 variable, an unreadable or empty file.
pub fn bearer_token(file: Option<&Path>) -> Result<Option<Token>, SecretError> {
    secret(AUTH_TOKEN, file)
}

/// The secret from `from`'s environment variable or from `file` (surrounding whitespace
/// ignored); `None` when neither is given. Errors as [`bearer_token`]'s.
pub fn secret(from: SecretSource, file: Option<&Path>) -> Result<Option<Token>, SecretError> {
    secret_from(from, std::env::var(from.variable), file)
}

fn secret_from(
    from: SecretSource,
    variable: Result<String, std::env::VarError>,
    file: Option<&Path>,
) -> Result<Option<Token>, SecretError> {
    let from_env = match variable {
        Ok(value) => Some(value),
        Err(std::env::VarError::NotPresent) => None,
        Err(std::env::VarError::NotUnicode(_)) => return Err(SecretError::NotUnicode(from)),
    };
    match (from_env, file) {
        (Some(_), Some(_)) => Err(SecretError::TwoSources(from)),
        (Some(value), None) => value.parse().map(Some).map_err(|_| SecretError::EmptyVariable(from)),
        (None, Some(path)) => {
            let contents = std::fs::read_to_string(path).map_err(|source| SecretError::Unreadable {
                from,
                path: path.to_owned(),
                source,
            })?;
            contents.parse().map(Some).map_err(|source| SecretError::BadFile {
                from,
                path: path.to_owned(),
                source,
            })
        }
        (None, None) => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_comes_from_the_file_or_the_variable_and_no_error_shows_it() {
        use std::env::VarError::NotPresent;
        let dir = std::env::temp_dir().join(format!("framefleet-secrets-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let file = dir.join("token");
        std::fs::write(&file, "  s3cret-from-file\n").expect("write");
        let empty = dir.join("empty");
        std::fs::write(&empty, "\n").expect("write");
        let variable = || Ok("s3cret-from-env".to_owned());

        assert!(
            secret_from(AUTH_TOKEN, Err(NotPresent), None)
                .expect("nothing given")
                .is_none()
        );
        let from_file = secret_from(AUTH_TOKEN, Err(NotPresent), Some(&file)).expect("file");
        assert_eq!(
            from_file.map(|token| token.expose().to_owned()).as_deref(),
            Some("s3cret-from-file")
        );
        let from_env = secret_from(AUTH_TOKEN, variable(), None).expect("variable");
        assert_eq!(
            from_env.map(|token| token.expose().to_owned()).as_deref(),
            Some("s3cret-from-env")
        );

        assert!(matches!(
            secret_from(AUTH_TOKEN, Err(NotPresent), Some(&empty)),
            Err(SecretError::BadFile { .. })
        ));
        let missing = secret_from(AUTH_TOKEN, Err(NotPresent), Some(&dir.join("missing"))).expect_err("no such file");
        assert!(missing.to_string().contains("missing"), "{missing}");
        let both = secret_from(AUTH_TOKEN, variable(), Some(&file)).expect_err("two sources");
        assert!(matches!(both, SecretError::TwoSources(_)));
        assert!(!both.to_string().contains("s3cret"), "{both}");
        assert!(matches!(
            secret_from(AUTH_TOKEN, Ok(" ".to_owned()), None),
            Err(SecretError::EmptyVariable(_))
        ));
        let password = secret_from(ETCD_PASSWORD, Ok(String::new()), None).expect_err("empty");
        assert_eq!(password.to_string(), "FRAMEFLEET_ETCD_PASSWORD is set but empty");
        std::fs::remove_dir_all(&dir).expect("clean up");
    }
}
