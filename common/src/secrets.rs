//! Where secrets come from: the environment or a file, never a command-line flag, since every
//! local user can read a process's arguments (`ps`, `/proc/<pid>/cmdline`). A secret is held as
//! a [`Token`], whose `Debug` prints `***`, and error messages name the variable or the file,
//! never the value.

use framefleet_proto::client::Token;
use std::path::{Path, PathBuf};

/// The environment variable that holds the coordinator's bearer token.
pub const AUTH_TOKEN_ENV: &str = "FRAMEFLEET_AUTH_TOKEN";

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("{AUTH_TOKEN_ENV} and --auth-token-file are both set; give the token one way")]
    TwoSources,
    #[error("{AUTH_TOKEN_ENV} is set but empty")]
    EmptyVariable,
    #[error("{AUTH_TOKEN_ENV} is not valid UTF-8")]
    NotUnicode,
    #[error("cannot read --auth-token-file {}: {source}", path.display())]
    Unreadable { path: PathBuf, source: std::io::Error },
    #[error("--auth-token-file {}: the token {source}", path.display())]
    BadFile {
        path: PathBuf,
        source: framefleet_proto::client::EmptyToken,
    },
}

/// The bearer token from `$FRAMEFLEET_AUTH_TOKEN` or from `file` (surrounding whitespace
/// ignored); `None` when neither is given.
///
/// Errors: both given, an empty or non-UTF-8 variable, an unreadable or empty file.
pub fn bearer_token(file: Option<&Path>) -> Result<Option<Token>, SecretError> {
    token_from(std::env::var(AUTH_TOKEN_ENV), file)
}

fn token_from(variable: Result<String, std::env::VarError>, file: Option<&Path>) -> Result<Option<Token>, SecretError> {
    let from_env = match variable {
        Ok(value) => Some(value),
        Err(std::env::VarError::NotPresent) => None,
        Err(std::env::VarError::NotUnicode(_)) => return Err(SecretError::NotUnicode),
    };
    match (from_env, file) {
        (Some(_), Some(_)) => Err(SecretError::TwoSources),
        (Some(value), None) => value.parse().map(Some).map_err(|_| SecretError::EmptyVariable),
        (None, Some(path)) => {
            let contents = std::fs::read_to_string(path).map_err(|source| SecretError::Unreadable {
                path: path.to_owned(),
                source,
            })?;
            contents.parse().map(Some).map_err(|source| SecretError::BadFile {
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

        assert!(token_from(Err(NotPresent), None).expect("nothing given").is_none());
        let from_file = token_from(Err(NotPresent), Some(&file)).expect("file");
        assert_eq!(
            from_file.map(|token| token.expose().to_owned()).as_deref(),
            Some("s3cret-from-file")
        );
        let from_env = token_from(variable(), None).expect("variable");
        assert_eq!(
            from_env.map(|token| token.expose().to_owned()).as_deref(),
            Some("s3cret-from-env")
        );

        assert!(matches!(
            token_from(Err(NotPresent), Some(&empty)),
            Err(SecretError::BadFile { .. })
        ));
        let missing = token_from(Err(NotPresent), Some(&dir.join("missing"))).expect_err("no such file");
        assert!(missing.to_string().contains("missing"), "{missing}");
        let both = token_from(variable(), Some(&file)).expect_err("two sources");
        assert!(matches!(both, SecretError::TwoSources));
        assert!(!both.to_string().contains("s3cret"), "{both}");
        assert!(matches!(
            token_from(Ok(" ".to_owned()), None),
            Err(SecretError::EmptyVariable)
        ));
        std::fs::remove_dir_all(&dir).expect("clean up");
    }
}
