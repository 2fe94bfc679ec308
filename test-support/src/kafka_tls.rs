//! A Kafka-protocol broker that speaks only TLS, for tests of the clients' Kafka security
//! settings: nisshi with `--cert` and `--key` (its listener is then TLS only and refuses
//! plaintext clients in the handshake) on a free loopback port, storing in a database of its
//! own on `deploy/local/infra.sh`'s PostgreSQL (the only storage setup.sh builds nisshi with). nisshi encrypts but does not ask
//! for client certificates; its client authentication is SASL/SCRAM (`--authentication`), whose
//! users live in its PostgreSQL storage.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A TLS-only nisshi; stopped when dropped, then its database dropped.
pub struct TlsBroker {
    /// `127.0.0.1:<port>`: the bootstrap servers to give clients.
    pub address: String,
    broker: Child,
    /// Held to be dropped after `Drop::drop` stopped the broker that used it.
    _database: Database,
}

impl TlsBroker {
    /// Starts one with the server certificate of [`crate::tls::make_certificates`] in `dir`
    /// (`server.pem`, `server.key`, for 127.0.0.1) on a fresh database; its log goes to
    /// `dir/nisshi.log`. Panics with the log when it does not listen within 30 s.
    pub fn start(dir: &Path) -> Self {
        let database = Database::create();
        let (address, broker) = start_broker(&database.url(), &tls_args(dir), &dir.join("nisshi.log"));
        Self {
            address,
            broker,
            _database: database,
        }
    }

    /// [`Self::start`] that also requires SASL/SCRAM, knowing `users` (name, password) for
    /// SCRAM-SHA-512 and SCRAM-SHA-256. nisshi refuses every request but the SASL ones before
    /// authentication, user changes included, so the users are made first by a broker without
    /// authentication on the fresh database, which this one then serves.
    pub fn start_with_scram_users(dir: &Path, users: &[(&str, &str)]) -> Self {
        let database = Database::create();
        let storage = database.url();
        let (address, mut bootstrap) = start_broker(&storage, &[], &dir.join("nisshi-bootstrap.log"));
        for (name, password) in users {
            for mechanism in ["scram512", "scram256"] {
                let output = Command::new(nisshi_binary())
                    .args(["user", "create", "--broker", &format!("tcp://{address}")])
                    .args(["--mechanism", mechanism, name, password])
                    .output()
                    .expect("run nisshi user create");
                assert!(
                    output.status.success(),
                    "nisshi user create {name}: {}{}",
                    String::from_utf8_lossy(&output.stdout),
                    String::from_utf8_lossy(&output.stderr)
                );
            }
        }
        let _ = bootstrap.kill();
        let _ = bootstrap.wait();
        let mut secured = vec!["--authentication".to_owned()];
        secured.extend(tls_args(dir));
        let (address, broker) = start_broker(&storage, &secured, &dir.join("nisshi.log"));
        Self {
            address,
            broker,
            _database: database,
        }
    }
}

/// nisshi's arguments for a TLS-only listener with the server certificate in `dir`.
fn tls_args(dir: &Path) -> Vec<String> {
    vec![
        "--cert".to_owned(),
        dir.join("server.pem").to_string_lossy().into_owned(),
        "--key".to_owned(),
        dir.join("server.key").to_string_lossy().into_owned(),
    ]
}

/// A nisshi broker on `storage` with `extra` arguments, on a free loopback port it also
/// advertises; waits until it listens.
fn start_broker(storage: &str, extra: &[String], log: &Path) -> (String, Child) {
    let port = crate::free_port();
    let address = format!("127.0.0.1:{port}");
    let mut args = vec![
        "broker".to_owned(),
        "--listener-url".to_owned(),
        format!("tcp://{address}"),
        "--advertised-listener-url".to_owned(),
        format!("tcp://{address}"),
        "--storage-engine".to_owned(),
        storage.to_owned(),
        "--group-initial-rebalance-delay".to_owned(),
        "0s".to_owned(),
    ];
    args.extend_from_slice(extra);
    let broker = spawn(&nisshi_binary(), &args, log);
    wait_for_port(port, log);
    (address, broker)
}

/// A database of its own on the local infrastructure's PostgreSQL; dropped when dropped.
struct Database {
    port: String,
    name: String,
}

impl Database {
    fn create() -> Self {
        let run_dir = std::env::var("FRAMEFLEET_RUN_DIR")
            .expect("FRAMEFLEET_RUN_DIR is not set: run the tests through scripts/test.sh");
        let port = std::fs::read_to_string(Path::new(&run_dir).join("ports/postgres"))
            .expect("no PostgreSQL in $FRAMEFLEET_RUN_DIR: start it with `deploy/local/infra.sh up --storage postgres`")
            .trim()
            .to_owned();
        let database = Self {
            port,
            name: format!("sasl_{}", uuid::Uuid::new_v4().simple()),
        };
        database.sql(&format!("CREATE DATABASE {}", database.name));
        database
    }

    fn url(&self) -> String {
        format!("postgres://nisshi@127.0.0.1:{}/{}", self.port, self.name)
    }

    fn sql(&self, statement: &str) {
        crate::tls::run(
            &psql_binary().to_string_lossy(),
            &[
                "-h",
                "127.0.0.1",
                "-p",
                &self.port,
                "-U",
                "nisshi",
                "-d",
                "postgres",
                "-Atc",
                statement,
            ],
            Path::new("/"),
        );
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        self.sql(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name));
    }
}

/// PostgreSQL's own `psql` (as `deploy/local/infra.sh` finds its programs), else the one on
/// the PATH.
fn psql_binary() -> PathBuf {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .filter_map(|entry| entry.ok().map(|entry| entry.path().join("bin/psql")))
        .filter(|path| path.is_file())
        .collect();
    versions.sort();
    versions
        .pop()
        .or_else(|| on_path("psql"))
        .expect("psql is not installed: run scripts/setup.sh")
}

impl Drop for TlsBroker {
    fn drop(&mut self) {
        let _ = self.broker.kill();
        let _ = self.broker.wait();
    }
}

/// `$NISSHI_BIN`, else `nisshi` on the PATH, else where `cargo install` puts it (as
/// `deploy/local/infra.sh` finds it).
fn nisshi_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("NISSHI_BIN") {
        return path.into();
    }
    let cargo_bin = std::env::var_os("HOME").map(|home| Path::new(&home).join(".cargo/bin/nisshi"));
    on_path("nisshi")
        .or(cargo_bin.filter(|path| path.is_file()))
        .expect("nisshi is not installed: run scripts/setup.sh")
}

fn on_path(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(name))
        .find(|path| path.is_file())
}

fn spawn(program: &Path, args: &[String], log: &Path) -> Child {
    let file = std::fs::File::create(log).expect("log file");
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(file.try_clone().expect("log file"))
        .stderr(file)
        .spawn()
        .unwrap_or_else(|error| panic!("cannot start {}: {error}", program.display()))
}

fn wait_for_port(port: u16, log: &Path) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "nothing listens on 127.0.0.1:{port} after 30 s; {}: {}",
            log.display(),
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
