//! A three-member etcd carries the loss of one member unnoticed by the coordinator's store:
//! once a member stops answering (cut off: its open connections go silent and new ones are
//! refused), requests and watches go to the two that answer. Before HTTP/2 pings, the store's
//! client kept routing a share of the requests to the silent member until each timed out, and
//! a watch that happened to be on it went quiet for good — in the compose fault suite, channels
//! whose topics became ready during such a cut never started.
//!
//! Real etcd processes (the Debian package's `etcd`) on loopback ports of their own; each
//! member's client port is reached through a proxy this test can cut.

use framefleet_coordinator::store::{CommitOutcome, EtcdStore, EtcdStoreConfig, MetadataStore, WatchBatch, Write};
use framefleet_test_support::free_port;
use framefleet_test_support::proxy::CuttableProxy;
use futures::StreamExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Three etcd members, killed when dropped.
struct EtcdCluster {
    members: Vec<Child>,
    client_ports: Vec<u16>,
    data_dirs: Vec<std::path::PathBuf>,
}

impl EtcdCluster {
    fn start() -> Self {
        let peer_ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let client_ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let initial_cluster = peer_ports
            .iter()
            .enumerate()
            .map(|(index, port)| format!("m{index}=http://127.0.0.1:{port}"))
            .collect::<Vec<_>>()
            .join(",");
        let token = uuid::Uuid::new_v4().simple().to_string();
        let mut members = Vec::new();
        let mut data = Vec::new();
        for index in 0..3 {
            let dir = std::env::temp_dir().join(format!("framefleet-etcd-cut-{token}-{index}"));
            let peer = format!("http://127.0.0.1:{}", peer_ports[index]);
            let client = format!("http://127.0.0.1:{}", client_ports[index]);
            let child = Command::new("etcd")
                .args(["--name", &format!("m{index}")])
                .arg("--data-dir")
                .arg(&dir)
                .args(["--listen-peer-urls", &peer, "--initial-advertise-peer-urls", &peer])
                .args(["--listen-client-urls", &client, "--advertise-client-urls", &client])
                .args(["--initial-cluster", &initial_cluster, "--initial-cluster-token", &token])
                .args(["--initial-cluster-state", "new"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start etcd (Debian package etcd-server; scripts/setup.sh installs it)");
            members.push(child);
            data.push(dir);
        }
        Self {
            members,
            client_ports,
            data_dirs: data,
        }
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for member in &mut self.members {
            let _ = member.kill();
            let _ = member.wait();
        }
        for dir in &self.data_dirs {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

async fn connect(endpoints: Vec<String>, prefix: &str) -> EtcdStore {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let config = EtcdStoreConfig {
            endpoints: endpoints.clone(),
            key_prefix: prefix.to_owned(),
            request_timeout: Duration::from_secs(3),
            access: Default::default(),
        };
        match EtcdStore::connect(config).await {
            Ok(store) => return store,
            // The members may still be starting and electing their first leader.
            Err(_) if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(300)).await,
            Err(error) => panic!("the three-member etcd never answered: {error}"),
        }
    }
}

async fn put(store: &EtcdStore, key: &str) -> Result<i64, String> {
    match store
        .commit(Vec::new(), vec![Write::Put(key.to_owned(), b"v".to_vec())])
        .await
    {
        Ok(CommitOutcome::Committed { revision }) => Ok(revision),
        Ok(CommitOutcome::Conflict) => Err("conflict without a condition".to_owned()),
        Err(error) => Err(error.to_string()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_member_cut_off_leaves_requests_and_watches_unharmed() {
    let cluster = EtcdCluster::start();
    let mut proxies = Vec::new();
    for port in &cluster.client_ports {
        proxies.push(CuttableProxy::start(*port).await.expect("start a proxy"));
    }
    let endpoints = proxies
        .iter()
        .map(|proxy| format!("http://{}", proxy.address))
        .collect();
    let store = connect(endpoints, "/framefleet-test/etcd-cut/").await;
    // Every member has answered before the cut (the client holds a connection to each), and
    // the cluster has its leader.
    let warm_deadline = Instant::now() + Duration::from_secs(30);
    let mut answered = 0;
    while answered < 30 {
        match put(&store, "warm").await {
            Ok(_) => answered += 1,
            Err(error) => {
                assert!(Instant::now() < warm_deadline, "the cluster never served: {error}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    let baseline = put(&store, "before").await.expect("a write before the cut");
    // One watch per member is the worst case for a quiet watch: at least one sits on the
    // member that is cut.
    let mut watches = Vec::new();
    for _ in 0..6 {
        watches.push(store.watch("after/", baseline + 1).await.expect("watch before the cut"));
    }

    let cut_member = 1;
    proxies[cut_member].cut();
    let cut_at = Instant::now();

    // Requests: from the moment the client's pings could have noticed (2 × 2 s) plus one
    // request timeout, every call succeeds, and quickly.
    let mut late_failures = Vec::new();
    let mut slow = Vec::new();
    let mut call = 0;
    while cut_at.elapsed() < Duration::from_secs(20) {
        call += 1;
        let started = Instant::now();
        let outcome = put(&store, &format!("after/{call}")).await;
        let took = started.elapsed();
        let settled = cut_at.elapsed() > Duration::from_secs(8);
        match outcome {
            Err(error) if settled => late_failures.push(format!("call {call} at {:?}: {error}", cut_at.elapsed())),
            Ok(_) if settled && took > Duration::from_secs(1) => slow.push(format!("call {call} took {took:?}")),
            _ => {}
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        late_failures.is_empty(),
        "calls failed 8 s and more after member {cut_member} was cut off: {late_failures:#?}"
    );
    assert!(slow.is_empty(), "calls waited on the cut-off member: {slow:#?}");

    // Watches: each either delivers the writes made after the cut or ends with an error (on
    // which the coordinator watches again, from its last revision, on a member that answers)
    // — none stays quiet.
    let last = put(&store, "after/last").await.expect("a last write");
    for (index, mut watch) in watches.into_iter().enumerate() {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let mut seen_last = false;
        while !seen_last {
            match tokio::time::timeout_at(deadline, watch.next()).await {
                Ok(Some(Ok(WatchBatch::Changes { revision, .. }))) => seen_last = revision >= last,
                Ok(Some(Ok(WatchBatch::Compacted { .. }))) => panic!("nothing was compacted"),
                // Ended with an error: the caller resumes elsewhere.
                Ok(Some(Err(_)) | None) => break,
                Err(_) => panic!("watch {index} went quiet after member {cut_member} was cut off"),
            }
        }
    }
    drop(cluster);
}
