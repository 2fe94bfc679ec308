//! The coordinator on an etcd that checks who calls: over TLS against an etcd started with
//! `--client-cert-auth` (a client certificate signed by its CA, which the coordinator checks
//! in turn), and logged in as an etcd user when etcd's authentication is on. A coordinator
//! without the certificate, trusting another CA, or with a wrong password does not start, and
//! says why. Real etcd processes (the Debian package's `etcd`, `etcdctl`), certificates made
//! with the `openssl` command; Kafka from the test infrastructure.

use framefleet_proto::client::{ClientOptions, connect_coordinator};
use framefleet_proto::v1::channel_service_client::ChannelServiceClient;
use framefleet_proto::v1::{FrameEncoding, FrameSchema, PixelFormat, RegisterChannelRequest};
use framefleet_test_support::free_port;
use framefleet_test_support::tls::make_certificates;
use framefleet_test_support::{FleetNames, Infrastructure, TestCoordinator};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// One etcd member on loopback ports of its own, killed when dropped.
struct Etcd {
    child: Child,
    endpoint: String,
    data_dir: PathBuf,
}

impl Etcd {
    fn start(dir: &Path, tls: bool) -> Self {
        let (client_port, peer_port) = (free_port(), free_port());
        let scheme = if tls { "https" } else { "http" };
        let endpoint = format!("{scheme}://127.0.0.1:{client_port}");
        let peer = format!("http://127.0.0.1:{peer_port}");
        let data_dir = dir.join(format!("etcd-{client_port}"));
        let mut command = Command::new("etcd");
        command
            .args(["--name", "solo"])
            .arg("--data-dir")
            .arg(&data_dir)
            .args(["--listen-peer-urls", &peer, "--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &format!("solo={peer}")])
            .args(["--listen-client-urls", &endpoint, "--advertise-client-urls", &endpoint]);
        if tls {
            command
                .args(["--cert-file", "server.pem", "--key-file", "server.key"])
                .args(["--client-cert-auth", "--trusted-ca-file", "ca.pem"]);
        }
        let child = command
            .current_dir(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start etcd (Debian package etcd-server; scripts/setup.sh installs it)");
        Self {
            child,
            endpoint,
            data_dir,
        }
    }

    /// `etcdctl` against this member, retried while it starts.
    fn etcdctl(&self, args: &[&str], dir: &Path) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let output = Command::new("etcdctl")
                .args(["--endpoints", &self.endpoint])
                .args(args)
                .current_dir(dir)
                .output()
                .expect("run etcdctl (Debian package etcd-client)");
            if output.status.success() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "etcdctl {args:?}: {}",
                String::from_utf8_lossy(&output.stderr)
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }
}

fn temp_dir(label: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("framefleet-{label}-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

async fn start(endpoint: &str, names: &FleetNames, extra: &[String]) -> anyhow::Result<TestCoordinator> {
    let infrastructure = Infrastructure {
        etcd_endpoints: endpoint.to_owned(),
        ..Infrastructure::required()
    };
    let mut args = names.coordinator_args();
    args.extend(["--request-timeout-secs".to_owned(), "3".to_owned()]);
    args.extend(extra.iter().cloned());
    TestCoordinator::start(&infrastructure, &args).await
}

/// Waits until the member answers `etcdctl` (with `args` for its security).
fn wait_until_serving(etcd: &Etcd, args: &[&str], dir: &Path) {
    etcd.etcdctl(&[args, &["endpoint", "health"]].concat(), dir);
}

async fn register_a_channel(coordinator: &TestCoordinator, names: &FleetNames) {
    let channel = connect_coordinator(&coordinator.address, Duration::from_secs(5), &ClientOptions::default())
        .await
        .expect("connect");
    let schema = FrameSchema {
        width: 64,
        height: 48,
        channels: 3,
        pixel_format: PixelFormat::Rgb24.into(),
        encoding: FrameEncoding::Jpeg.into(),
        fps: 10.0,
        ..FrameSchema::default()
    };
    ChannelServiceClient::new(channel)
        .register_channel(RegisterChannelRequest {
            channel_id: names.channel_id("cam"),
            source_uri: "synthetic://".to_owned(),
            schema: Some(schema),
            ..RegisterChannelRequest::default()
        })
        .await
        .expect("a channel is stored in the TLS etcd");
}

fn arg(path: &Path, file: &str) -> String {
    path.join(file).to_string_lossy().into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_coordinator_reaches_an_etcd_that_requires_client_certificates() {
    let dir = temp_dir("etcd-tls");
    make_certificates(&dir, &[("client", "framefleet-coordinator")]);
    let etcd = Etcd::start(&dir, true);
    let tls_args = ["--cacert", "ca.pem", "--cert", "client.pem", "--key", "client.key"];
    wait_until_serving(&etcd, &tls_args, &dir);
    let names = FleetNames::unique("etcd-tls");
    let with = |ca: &str, client: bool| {
        let mut args = vec!["--etcd-ca".to_owned(), arg(&dir, ca)];
        if client {
            args.extend(["--etcd-cert".to_owned(), arg(&dir, "client.pem")]);
            args.extend(["--etcd-key".to_owned(), arg(&dir, "client.key")]);
        }
        args
    };

    let coordinator = start(&etcd.endpoint, &names, &with("ca.pem", true))
        .await
        .expect("a coordinator with the CA and a client certificate starts");
    register_a_channel(&coordinator, &names).await;
    coordinator.stop().await.expect("clean stop");

    // Each refusal names etcd and the step or reason: etcd ends a handshake without a client
    // certificate (TLS 1.3 reports it as an alert or a closed connection, whichever comes
    // first), and rustls refuses a server certificate no given CA signed.
    for (what, args, reason) in [
        ("without a client certificate", with("ca.pem", false), "is not healthy"),
        ("trusting another CA", with("other-ca.pem", true), "UnknownIssuer"),
        ("given no CA", Vec::new(), "UnknownIssuer"),
    ] {
        let error = match start(&etcd.endpoint, &names, &args).await {
            Ok(_) => panic!("a coordinator {what} started"),
            Err(error) => format!("{error:#}"),
        };
        assert!(error.contains("etcd") && error.contains(reason), "{what}: {error}");
    }
    drop(etcd);
    std::fs::remove_dir_all(&dir).expect("clean up");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_coordinator_logs_in_as_an_etcd_user() {
    let dir = temp_dir("etcd-auth");
    let etcd = Etcd::start(&dir, false);
    wait_until_serving(&etcd, &[], &dir);
    etcd.etcdctl(&["user", "add", "root:root-pw-4c1d"], &dir);
    etcd.etcdctl(&["auth", "enable"], &dir);
    let names = FleetNames::unique("etcd-auth");
    let password_file = |password: &str| {
        let path = dir.join(format!("password-{password}"));
        std::fs::write(&path, password).expect("write");
        path.to_string_lossy().into_owned()
    };
    let login = |password: &str| {
        vec![
            "--etcd-user".to_owned(),
            "root".to_owned(),
            "--etcd-password-file".to_owned(),
            password_file(password),
        ]
    };

    let coordinator = start(&etcd.endpoint, &names, &login("root-pw-4c1d"))
        .await
        .expect("a coordinator with the user's password starts");
    register_a_channel(&coordinator, &names).await;
    coordinator.stop().await.expect("clean stop");

    // etcd's reasons: the login fails, or (no user) the read at start is refused.
    for (what, args, reason) in [
        ("with a wrong password", login("wrong-pw"), "authentication failed"),
        ("without a user", Vec::new(), "user name is empty"),
    ] {
        let error = match start(&etcd.endpoint, &names, &args).await {
            Ok(_) => panic!("a coordinator {what} started"),
            Err(error) => format!("{error:#}"),
        };
        assert!(error.contains("etcd") && error.contains(reason), "{what}: {error}");
        assert!(
            !error.contains("root-pw-4c1d") && !error.contains("wrong-pw"),
            "{error}"
        );
    }
    drop(etcd);
    std::fs::remove_dir_all(&dir).expect("clean up");
}
