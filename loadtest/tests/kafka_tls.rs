//! Kafka's security settings with the real binaries: a broker that speaks only TLS
//! ([`TlsBroker`], nisshi with `--cert`/`--key`), a coordinator, worker, ingestor and CLI given
//! librdkafka's standard settings, and a channel run end to end and audited through it. Clients
//! that cannot verify the broker, speak plaintext, or give the wrong SCRAM password are refused
//! with librdkafka's reason before they register anything. Against real etcd.

use framefleet_test_support::kafka_tls::TlsBroker;
use framefleet_test_support::processes::{cli, spawn_logged, stop};
use framefleet_test_support::tls::make_certificates;
use framefleet_test_support::{FleetNames, Infrastructure, TestCoordinator};
use std::path::{Path, PathBuf};

const FRAMES: u64 = 30;

/// The Kafka security flags of a TLS client that trusts `ca` (a file of `dir`).
fn tls_args(dir: &Path, ca: &str) -> Vec<String> {
    vec![
        "--kafka-security-protocol=ssl".to_owned(),
        format!("--kafka-tls-ca={}", dir.join(ca).display()),
    ]
}

/// The flags of a SASL/SCRAM-over-TLS client `user` whose password is in `password_file`.
fn scram_args(dir: &Path, user: &str, password_file: &Path) -> Vec<String> {
    vec![
        "--kafka-security-protocol=sasl_ssl".to_owned(),
        format!("--kafka-tls-ca={}", dir.join("ca.pem").display()),
        "--kafka-sasl-mechanism=SCRAM-SHA-512".to_owned(),
        format!("--kafka-sasl-username={user}"),
        format!("--kafka-sasl-password-file={}", password_file.display()),
    ]
}

/// A coordinator and a worker on `broker` with `security` flags, under names of their own.
struct SecuredFleet {
    names: FleetNames,
    dir: PathBuf,
    infrastructure: Infrastructure,
    security: Vec<String>,
    coordinator: TestCoordinator,
    worker: std::process::Child,
}

impl SecuredFleet {
    async fn start(names: FleetNames, dir: PathBuf, broker: &TlsBroker, security: Vec<String>) -> Self {
        let infrastructure = Infrastructure {
            kafka_brokers: broker.address.clone(),
            ..Infrastructure::required()
        };
        let mut coordinator_args = names.coordinator_args();
        coordinator_args.extend(security.iter().cloned());
        let coordinator = TestCoordinator::start(&infrastructure, &coordinator_args)
            .await
            .expect("a coordinator whose Kafka clients use the settings");
        let mut worker_args = names.worker_args();
        worker_args.extend(security.iter().cloned());
        let worker = spawn_logged(
            "framefleet-worker",
            &infrastructure.client_args(&coordinator.address, &worker_args),
            &[],
            &dir.join("worker.log"),
        );
        Self {
            names,
            dir,
            infrastructure,
            security,
            coordinator,
            worker,
        }
    }

    fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.join(name)).unwrap_or_default()
    }

    /// Runs an ingestor of `FRAMES` frames on channel `label` with `security` flags; its exit
    /// status and log.
    async fn ingest(&self, label: &str, security: &[String]) -> (std::process::ExitStatus, String) {
        let channel = self.names.channel_id(label);
        let mut args = vec![
            format!("--ingestor-id=ingestor-{channel}"),
            format!("--channel={channel}=synthetic://64x48@10"),
            format!("--max-frames={FRAMES}"),
            "--pace=max".to_owned(),
        ];
        args.extend(security.iter().cloned());
        let log = format!("{label}.log");
        let mut child = spawn_logged(
            "framefleet-ingestor",
            &self.infrastructure.client_args(&self.coordinator.address, &args),
            &[],
            &self.dir.join(&log),
        );
        let status = tokio::task::spawn_blocking(move || child.wait())
            .await
            .expect("join")
            .expect("ingestor");
        (status, self.log(&log))
    }

    /// `framefleet args…` against this fleet's coordinator.
    fn cli(&self, args: &[&str]) -> (i32, String) {
        cli(&self.coordinator.address, args, &[])
    }

    /// The JSON audit of channel `label`, read back from Kafka with `security` flags.
    fn audit(&self, label: &str, security: &[String]) -> (i32, String) {
        let channel = self.names.channel_id(label);
        // The brokers named, not taken from $FRAMEFLEET_KAFKA_BROKERS (the plaintext broker).
        let brokers = format!("--kafka-brokers={}", self.infrastructure.kafka_brokers);
        let mut args = vec!["--json", "audit", &brokers, "--channel-prefix", &channel];
        args.extend(["--read-timeout-secs", "30"]);
        args.extend(security.iter().map(String::as_str));
        self.cli(&args)
    }

    /// Runs channel `label` with the fleet's settings and checks that every frame was
    /// acknowledged, processed and audited.
    async fn run_and_audit(&self, label: &str) {
        // The watch waits for the runs that start after it does.
        let watch = {
            let address = self.coordinator.address.clone();
            tokio::task::spawn_blocking(move || {
                cli(&address, &["watch", "--until-drained", "--timeout-secs", "120"], &[])
            })
        };
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        let (status, log) = self.ingest(label, &self.security).await;
        assert!(status.success(), "the ingestor failed: {log}");
        let (drained, output) = watch.await.expect("watch");
        assert_eq!(drained, 0, "watch: {output}\nworker: {}", self.log("worker.log"));
        let (code, output) = self.audit(label, &self.security);
        assert_eq!(code, 0, "{output}");
        let report: serde_json::Value = serde_json::from_str(output.trim()).expect("audit JSON");
        let run = &report["runs"][0];
        assert_eq!(run["frames_acknowledged"], FRAMES, "{report}");
        assert_eq!(run["frames_processed"], FRAMES, "{report}");
        assert_eq!(report["frames_missing"], 0, "{report}");
    }

    /// An ingestor on channel `label` with `security` flags stops before it registers its
    /// channel, its error naming `reason`.
    async fn refused(&self, label: &str, security: &[String], reason: &str) {
        let (status, output) = self.ingest(label, security).await;
        assert!(!status.success(), "{label}: the ingestor ran: {output}");
        // The error it exits with, not only librdkafka's log lines, gives the reason.
        let error = output
            .lines()
            .find(|line| line.contains("is unreachable"))
            .unwrap_or_else(|| panic!("{label}: no `is unreachable` in: {output}"));
        assert!(error.contains(reason), "{label}: no `{reason}` in: {error}");
        let channel = self.names.channel_id(label);
        let (code, output) = self.cli(&["channels", "get", &channel]);
        assert_eq!(code, 3, "{label}: the channel was registered: {output}");
    }

    async fn stop(self) {
        stop(self.worker);
        self.coordinator.stop().await.expect("clean stop");
        std::fs::remove_dir_all(&self.dir).expect("clean up");
    }
}

fn certificates(names: &FleetNames) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("framefleet-{}", names.suffix));
    std::fs::create_dir_all(&dir).expect("temp dir");
    make_certificates(&dir, &[]);
    dir
}

#[tokio::test(flavor = "multi_thread")]
async fn a_channel_runs_over_tls_and_clients_that_cannot_verify_the_broker_are_refused() {
    let names = FleetNames::unique("kafka-tls");
    let dir = certificates(&names);
    let broker = TlsBroker::start(&dir);
    let security = tls_args(&dir, "ca.pem");
    let fleet = SecuredFleet::start(names, dir.clone(), &broker, security).await;
    fleet.run_and_audit("cam").await;

    // The audit cannot read the results back without the settings.
    let (code, output) = fleet.audit("cam", &[]);
    assert_ne!(code, 0, "a plaintext audit read the TLS broker: {output}");
    assert!(
        output.contains("from Kafka"),
        "the audit failed for another reason: {output}"
    );
    // Refused: a client that cannot verify the broker (another CA signed its certificate), and
    // one that does not speak TLS.
    fleet
        .refused("wrong-ca", &tls_args(&dir, "other-ca.pem"), "certificate verify failed")
        .await;
    fleet.refused("plaintext", &[], "is unreachable").await;
    fleet.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_channel_runs_over_sasl_scram_and_a_wrong_password_is_refused() {
    let names = FleetNames::unique("kafka-scram");
    let dir = certificates(&names);
    let broker = TlsBroker::start_with_scram_users(&dir, &[("fleet", "fleet-password")]);
    let password = dir.join("password");
    std::fs::write(&password, "fleet-password\n").expect("password file");
    let wrong = dir.join("wrong-password");
    std::fs::write(&wrong, "not-the-password").expect("password file");
    let security = scram_args(&dir, "fleet", &password);
    let fleet = SecuredFleet::start(names, dir.clone(), &broker, security).await;
    fleet.run_and_audit("cam").await;

    fleet
        .refused(
            "wrong-password",
            &scram_args(&dir, "fleet", &wrong),
            "SASL SCRAM authentication failed",
        )
        .await;
    fleet
        .refused("no-sasl", &tls_args(&dir, "ca.pem"), "is unreachable")
        .await;
    // The password is in no log of the run.
    for log in ["worker.log", "cam.log", "wrong-password.log", "no-sasl.log"] {
        let text = fleet.log(log);
        assert!(!text.contains("fleet-password"), "{log} holds the password: {text}");
    }
    fleet.stop().await;
}
