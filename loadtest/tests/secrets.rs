//! The coordinator's bearer token never shows: a fleet of real processes (coordinator,
//! ingestor, worker, CLI) runs with the token from a file and from the environment, debug
//! logging on, and the token appears in no process's arguments, no log line, no metrics page
//! and no error; a token given as a flag is refused. Against real etcd and the real broker.

use framefleet_test_support::free_port;
use framefleet_test_support::processes::{argv, cli, spawn_logged as spawn, stop};
use framefleet_test_support::{FleetNames, Infrastructure};
use std::time::{Duration, Instant};

const SECRET: &str = "sEcReT-7f3a9c-never-print-me";

fn scrape(port: u16) -> String {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime
        .block_on(framefleet_common::metrics::scrape(
            format!("127.0.0.1:{port}").parse().expect("address"),
        ))
        .unwrap_or_else(|error| panic!("scrape :{port}: {error}"))
}

#[test]
fn the_token_shows_in_no_argument_log_metric_or_error() {
    let infrastructure = Infrastructure::required();
    let names = FleetNames::unique("secrets");
    let dir = std::env::temp_dir().join(format!("framefleet-{}", names.suffix));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let token_file = dir.join("token");
    std::fs::write(&token_file, format!("{SECRET}\n")).expect("token file");
    let (grpc_port, coordinator_metrics, worker_metrics) = (free_port(), free_port(), free_port());
    let address = format!("http://127.0.0.1:{grpc_port}");
    let ready = dir.join("ready");

    let mut coordinator_args = vec![
        "--listen".to_owned(),
        format!("127.0.0.1:{grpc_port}"),
        "--etcd-endpoints".to_owned(),
        infrastructure.etcd_endpoints.clone(),
        "--kafka-brokers".to_owned(),
        infrastructure.kafka_brokers.clone(),
        "--metrics-addr".to_owned(),
        format!("127.0.0.1:{coordinator_metrics}"),
        "--ready-file".to_owned(),
        ready.to_string_lossy().into_owned(),
        "--auth-token-file".to_owned(),
        token_file.to_string_lossy().into_owned(),
    ];
    coordinator_args.extend(names.coordinator_args());
    let coordinator = spawn(
        "framefleet-coordinator",
        &coordinator_args,
        &[],
        &dir.join("coordinator.log"),
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while !ready.exists() {
        assert!(Instant::now() < deadline, "the coordinator never got ready");
        std::thread::sleep(Duration::from_millis(100));
    }

    let with_token = [("FRAMEFLEET_AUTH_TOKEN", SECRET)];
    let common = |extra: &[String]| infrastructure.client_args(&address, extra);
    let worker = spawn(
        "framefleet-worker",
        &common(
            &[
                names.worker_args(),
                vec!["--metrics-addr".to_owned(), format!("127.0.0.1:{worker_metrics}")],
            ]
            .concat(),
        ),
        &with_token,
        &dir.join("worker.log"),
    );
    // The watch starts before the run, so it has the run's channel to wait for.
    let watch = {
        let address = address.clone();
        std::thread::spawn(move || {
            cli(
                &address,
                &["watch", "--until-drained", "--timeout-secs", "120"],
                &[("FRAMEFLEET_AUTH_TOKEN", SECRET)],
            )
        })
    };
    std::thread::sleep(Duration::from_millis(500));
    let mut ingestor = spawn(
        "framefleet-ingestor",
        &common(&[
            format!("--channel={}=synthetic://64x48@10", names.channel_id("cam")),
            "--max-frames=30".to_owned(),
            "--pace=max".to_owned(),
        ]),
        &with_token,
        &dir.join("ingestor.log"),
    );
    // The ingestor may finish within a second: its arguments are read at once, best effort.
    let ingestor_arguments = argv(&ingestor);
    let ingested = ingestor.wait().expect("ingestor");
    assert!(
        ingested.success(),
        "the ingestor failed: {:?}",
        std::fs::read_to_string(dir.join("ingestor.log"))
    );

    let (drained, watch) = watch.join().expect("watch thread");
    assert_eq!(drained, 0, "{watch}");
    let mut outputs = vec![watch];
    let (status, output) = cli(&address, &["--json", "status"], &with_token);
    assert_eq!(status, 0, "{output}");
    outputs.push(output);
    // A wrong token is refused without being echoed, and so is the right one given as a flag.
    let (refused, output) = cli(
        &address,
        &[
            "schemas",
            "add",
            &names.channel_id("cam"),
            "--width",
            "32",
            "--height",
            "24",
        ],
        &[("FRAMEFLEET_AUTH_TOKEN", "wrong-token-3b1e")],
    );
    assert_eq!(refused, 9, "{output}");
    assert!(!output.contains("wrong-token-3b1e"), "{output}");
    outputs.push(output);
    let (flag, output) = cli(&address, &["--auth-token", SECRET, "status"], &[]);
    assert_eq!(flag, 2, "a token flag is refused: {output}");
    outputs.push(output);
    let metrics = [scrape(coordinator_metrics), scrape(worker_metrics)];
    // Read from the running programs (a check of a process not yet exec'd would read the
    // test's own arguments and prove nothing).
    let arguments = [argv(&coordinator), argv(&worker), ingestor_arguments];
    assert!(arguments[0].contains("framefleet-coordinator") && arguments[0].contains("--auth-token-file"));
    assert!(arguments[1].contains("framefleet-worker"), "{}", arguments[1]);

    stop(worker);
    stop(coordinator);
    let mut logs = String::new();
    for name in ["coordinator.log", "worker.log", "ingestor.log"] {
        let log = std::fs::read_to_string(dir.join(name)).expect("log");
        assert!(
            log.contains("DEBUG"),
            "{name} has no debug lines: is RUST_LOG honoured?"
        );
        logs.push_str(&log);
    }
    for (what, text) in [
        ("process arguments", arguments.join("\n")),
        ("logs", logs),
        ("CLI output", outputs.join("\n")),
        ("metrics", metrics.join("\n")),
    ] {
        assert!(!text.contains(SECRET), "the token shows in the {what}");
    }
    std::fs::remove_dir_all(&dir).expect("clean up");
}
