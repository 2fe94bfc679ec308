//! Configuration loading shared by every binary: command-line flags, then `FRAMEFLEET_*`
//! environment variables, then a TOML file (`--config FILE` or `FRAMEFLEET_CONFIG`), then
//! built-in defaults. The file's keys are the long flag names (`kafka-brokers` or
//! `kafka_brokers`); a key that matches no flag is an error, so a typo never passes
//! silently.
//!
//! The file's values become the defaults of the matching arguments, which is what gives
//! flags and environment variables precedence over the file without any merging code.

use clap::{CommandFactory, FromArgMatches};
use std::ffi::OsString;
use std::path::{Path, PathBuf};

pub const CONFIG_ENV: &str = "FRAMEFLEET_CONFIG";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("config file {path} is not valid TOML: {source}")]
    Parse { path: String, source: Box<toml::de::Error> },
    #[error("config file {path}: unknown key `{key}` (valid keys are the long flags of --help)")]
    UnknownKey { path: String, key: String },
    #[error("config file {path}: key `{key}` must be a string, number, boolean or array of those")]
    UnsupportedValue { path: String, key: String },
}

/// Parses `T` from the process's arguments, environment and config file. Exits with
/// clap's usage message on bad arguments, like `T::parse()`.
pub fn parse<T: CommandFactory + FromArgMatches>() -> Result<T, ConfigError> {
    parse_from::<T>(std::env::args_os().collect())
}

pub fn parse_from<T: CommandFactory + FromArgMatches>(args: Vec<OsString>) -> Result<T, ConfigError> {
    let mut command = T::command().arg(
        clap::Arg::new("config")
            .long("config")
            .value_name("FILE")
            .env(CONFIG_ENV)
            .help("TOML file with defaults for any of these flags (keys are the long flag names)"),
    );
    if let Some(path) = config_path(&args) {
        let table = read_table(&path)?;
        for (key, value) in table {
            let long_name = key.replace('_', "-");
            let display_path = path.display().to_string();
            let arg_id = command
                .get_arguments()
                .find(|arg| arg.get_long() == Some(long_name.as_str()) && arg.get_id().as_str() != "config")
                .map(|arg| arg.get_id().clone());
            let Some(arg_id) = arg_id else {
                return Err(ConfigError::UnknownKey {
                    path: display_path,
                    key,
                });
            };
            let values = toml_values(&value).ok_or_else(|| ConfigError::UnsupportedValue {
                path: display_path,
                key: key.clone(),
            })?;
            command = command.mut_arg(arg_id, |arg| arg.default_values(values).required(false));
        }
    }
    let matches = command.get_matches_from(args);
    T::from_arg_matches(&matches).map_err(|error| error.exit())
}

/// `--config FILE`, `--config=FILE`, or the environment variable.
fn config_path(args: &[OsString]) -> Option<PathBuf> {
    let mut iter = args.iter().skip(1);
    while let Some(arg) = iter.next() {
        let text = arg.to_string_lossy();
        if text == "--config" {
            return iter.next().map(PathBuf::from);
        }
        if let Some(value) = text.strip_prefix("--config=") {
            return Some(PathBuf::from(value));
        }
    }
    std::env::var_os(CONFIG_ENV)
        .filter(|value| !value.is_empty())
        .map(PathBuf::from)
}

fn read_table(path: &Path) -> Result<toml::Table, ConfigError> {
    let display_path = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: display_path.clone(),
        source,
    })?;
    text.parse::<toml::Table>().map_err(|source| ConfigError::Parse {
        path: display_path,
        source: Box::new(source),
    })
}

fn toml_values(value: &toml::Value) -> Option<Vec<String>> {
    let scalar = |value: &toml::Value| match value {
        toml::Value::String(text) => Some(text.clone()),
        toml::Value::Integer(number) => Some(number.to_string()),
        toml::Value::Float(number) => Some(number.to_string()),
        toml::Value::Boolean(flag) => Some(flag.to_string()),
        _ => None,
    };
    match value {
        toml::Value::Array(items) => items.iter().map(scalar).collect(),
        other => scalar(other).map(|text| vec![text]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Example {
        #[arg(long, env = "FRAMEFLEET_TEST_CONFIG_BROKERS", default_value = "built-in:9092")]
        kafka_brokers: String,
        #[arg(long, default_value_t = 8)]
        batch_size: usize,
        #[arg(long = "channel")]
        channels: Vec<String>,
    }

    fn write_config(name: &str, text: &str) -> PathBuf {
        let path = std::env::temp_dir().join(format!("framefleet-config-{name}-{}.toml", std::process::id()));
        std::fs::write(&path, text).expect("write config");
        path
    }

    fn args(extra: &[&str]) -> Vec<OsString> {
        std::iter::once("example")
            .chain(extra.iter().copied())
            .map(OsString::from)
            .collect()
    }

    #[test]
    fn file_values_fill_in_and_flags_win() {
        let path = write_config(
            "precedence",
            "kafka-brokers = \"file:9092\"\nbatch_size = 32\nchannel = [\"a=1.avi\", \"b=2.avi\"]\n",
        );
        let path_text = path.display().to_string();
        let from_file: Example = parse_from(args(&["--config", &path_text])).expect("parse");
        assert_eq!(from_file.kafka_brokers, "file:9092");
        assert_eq!(from_file.batch_size, 32);
        assert_eq!(from_file.channels, vec!["a=1.avi", "b=2.avi"]);

        let flag_wins: Example = parse_from(args(&["--config", &path_text, "--batch-size", "4"])).expect("parse");
        assert_eq!(flag_wins.batch_size, 4);

        let defaults: Example = parse_from(args(&[])).expect("parse");
        assert_eq!(
            (defaults.kafka_brokers.as_str(), defaults.batch_size),
            ("built-in:9092", 8)
        );
        std::fs::remove_file(path).ok();
    }

    #[test]
    fn unknown_keys_and_bad_files_are_named() {
        let path = write_config("typo", "kafka_brokerz = \"x\"\n");
        let error = parse_from::<Example>(args(&["--config", &path.display().to_string()])).expect_err("typo");
        assert!(error.to_string().contains("kafka_brokerz"), "{error}");
        std::fs::remove_file(path).ok();

        let path = write_config("broken", "batch_size = \n");
        let error = parse_from::<Example>(args(&["--config", &path.display().to_string()])).expect_err("broken");
        assert!(matches!(error, ConfigError::Parse { .. }), "{error}");
        std::fs::remove_file(path).ok();

        let error = parse_from::<Example>(args(&["--config", "/nonexistent/framefleet.toml"])).expect_err("missing");
        assert!(error.to_string().contains("/nonexistent/framefleet.toml"), "{error}");
    }
}
