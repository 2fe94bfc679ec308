//! [`MetadataStore`] on etcd. Every call has a deadline so an unreachable etcd becomes
//! `UNAVAILABLE`, never a hang.

use super::contract::{
    CommitOutcome, Condition, CreateOutcome, LeasedOutcome, Listing, MetadataStore, StoreError, StoredValue,
    WatchBatch, WatchEvent, WatchStream, Write,
};
use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, EventType, GetOptions, PutOptions, Txn, TxnOp, TxnOpResponse,
    TxnResponse, WatchOptions,
};
use futures::StreamExt;
use std::time::Duration;

/// HTTP/2 ping interval to each etcd member, and how long a ping may go unanswered before
/// the connection is dropped.
pub const ETCD_KEEP_ALIVE: Duration = Duration::from_secs(2);

/// How the coordinator proves itself to etcd and checks etcd: TLS with etcd's CA (and a client
/// certificate for `--client-cert-auth`), and etcd's own user authentication.
#[derive(Debug, Clone, Default)]
pub struct EtcdAccess {
    /// PEM CA certificate; TLS when set.
    pub ca: Option<Vec<u8>>,
    /// PEM client certificate and key.
    pub identity: Option<(Vec<u8>, Vec<u8>)>,
    /// User name and password (`Token`: its `Debug` prints `***`).
    pub user: Option<(String, framefleet_proto::client::Token)>,
}

impl EtcdAccess {
    fn apply(&self, mut options: ConnectOptions) -> ConnectOptions {
        if let Some(ca) = &self.ca {
            let mut tls = etcd_client::TlsOptions::new().ca_certificate(etcd_client::Certificate::from_pem(ca));
            if let Some((cert, key)) = &self.identity {
                tls = tls.identity(etcd_client::Identity::from_pem(cert, key));
            }
            options = options.with_tls(tls);
        }
        if let Some((user, password)) = &self.user {
            options = options.with_user(user.clone(), password.expose());
        }
        options
    }
}

#[derive(Debug, Clone)]
pub struct EtcdStoreConfig {
    pub endpoints: Vec<String>,
    /// Every key lives under this prefix, e.g. `/framefleet/v1/`.
    pub key_prefix: String,
    pub request_timeout: Duration,
    pub access: EtcdAccess,
}

#[derive(Clone)]
pub struct EtcdStore {
    client: Client,
    key_prefix: String,
    request_timeout: Duration,
    /// The member prober runs while any clone of the store lives.
    _alive: std::sync::Arc<()>,
}

/// One step of [`EtcdStore::connect`]: `future` within `deadline`, a late or failed answer as
/// UNAVAILABLE in the words of `late` and `failed` (at start, unlike the calls of
/// `EtcdStore::bounded`, a slow etcd is as unusable as a down one).
async fn within_start_deadline<T>(
    deadline: Duration,
    future: impl std::future::Future<Output = Result<T, etcd_client::Error>>,
    late: impl FnOnce() -> String,
    failed: impl FnOnce(etcd_client::Error) -> String,
) -> Result<T, StoreError> {
    match tokio::time::timeout(deadline, future).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(error)) => Err(StoreError::Unavailable(failed(error))),
        Err(_) => Err(StoreError::Unavailable(late())),
    }
}

impl EtcdStore {
    /// Connects and checks that etcd answers, within the request timeout.
    pub async fn connect(config: EtcdStoreConfig) -> Result<Self, StoreError> {
        let endpoints = config.endpoints.join(",");
        // A member cut off the network keeps its TCP connection open as far as this side can
        // tell, so without HTTP/2 pings watches on it simply went quiet: pings close such a
        // connection within `ETCD_KEEP_ALIVE` × 2, ending its watches with an error (their
        // callers watch again). Requests are kept away from it by the member prober
        // (`etcd_members`). `require_leader` makes a member that lost its peers refuse requests
        // and cancel watches ("no leader") instead of serving a frozen view.
        let options = ConnectOptions::new()
            .with_connect_timeout(config.request_timeout)
            .with_timeout(config.request_timeout)
            .with_keep_alive(ETCD_KEEP_ALIVE, ETCD_KEEP_ALIVE)
            .with_keep_alive_while_idle(true)
            .with_require_leader(true);
        let options = config.access.apply(options);
        let deadline = config.request_timeout;
        let late = |what: &str| format!("etcd at {endpoints} did not answer{what} within {deadline:?}");
        let connect = Client::connect(config.endpoints.clone(), Some(options.clone()));
        let mut client = within_start_deadline(
            deadline,
            connect,
            || late(""),
            |error| format!("cannot connect to etcd at {endpoints}: {error:?}"),
        )
        .await?;
        // `connect` can succeed lazily; a status call proves etcd really answers.
        within_start_deadline(
            deadline,
            client.status(),
            || late(""),
            |error| format!("etcd at {endpoints} is not healthy: {error}"),
        )
        .await?;
        // Status answers anyone; a read under the prefix proves this client may use its keys
        // (etcd's authentication refuses it without a user, or for a user without the role).
        let read = client.get(
            config.key_prefix.as_str(),
            Some(GetOptions::new().with_prefix().with_count_only()),
        );
        within_start_deadline(
            deadline,
            read,
            || late(" a read"),
            |error| {
                format!(
                    "etcd at {endpoints} refused a read under {}: {error}",
                    config.key_prefix
                )
            },
        )
        .await?;
        let alive = std::sync::Arc::new(());
        if config.endpoints.len() > 1 {
            super::etcd_members::spawn_prober(
                client.clone(),
                config.endpoints.clone(),
                options,
                std::sync::Arc::downgrade(&alive),
            );
        }
        Ok(Self {
            client,
            key_prefix: config.key_prefix,
            request_timeout: config.request_timeout,
            _alive: alive,
        })
    }

    fn full_key(&self, key: &str) -> String {
        format!("{}{key}", self.key_prefix)
    }

    fn relative_key(&self, full_key: &[u8]) -> String {
        let text = String::from_utf8_lossy(full_key);
        text.strip_prefix(&self.key_prefix).unwrap_or(&text).to_owned()
    }

    async fn bounded<T>(
        &self,
        operation: &str,
        future: impl std::future::Future<Output = Result<T, etcd_client::Error>>,
    ) -> Result<T, StoreError> {
        match tokio::time::timeout(self.request_timeout, future).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(error)) => Err(StoreError::Unavailable(format!("etcd {operation} failed: {error}"))),
            Err(_) => Err(StoreError::Timeout(format!(
                "etcd {operation} did not answer within {:?}",
                self.request_timeout
            ))),
        }
    }

    fn to_stored(&self, kv: &etcd_client::KeyValue) -> StoredValue {
        StoredValue {
            key: self.relative_key(kv.key()),
            value: kv.value().to_vec(),
            mod_revision: kv.mod_revision(),
            create_revision: kv.create_revision(),
        }
    }

    fn compare(&self, condition: Condition) -> Compare {
        match condition {
            Condition::Absent(key) => Compare::create_revision(self.full_key(&key), CompareOp::Equal, 0),
            Condition::ModifiedAt(key, revision) => {
                Compare::mod_revision(self.full_key(&key), CompareOp::Equal, revision)
            }
            Condition::CreatedAt(key, revision) => {
                Compare::create_revision(self.full_key(&key), CompareOp::Equal, revision)
            }
        }
    }

    fn to_batch(&self, response: &etcd_client::WatchResponse) -> Option<WatchBatch> {
        if response.compact_revision() > 0 {
            return Some(WatchBatch::Compacted {
                compact_revision: response.compact_revision(),
            });
        }
        let events: Vec<WatchEvent> = response
            .events()
            .iter()
            .filter_map(|event| {
                let kv = event.kv()?;
                let previous = event.prev_kv().map(|kv| self.to_stored(kv));
                Some(match event.event_type() {
                    EventType::Put => WatchEvent::Put {
                        value: self.to_stored(kv),
                        previous,
                    },
                    EventType::Delete => WatchEvent::Delete {
                        key: self.relative_key(kv.key()),
                        previous,
                    },
                })
            })
            .collect();
        // One transaction is one revision; etcd sends all its events in one response.
        let revision = response
            .events()
            .iter()
            .filter_map(|event| event.kv().map(|kv| kv.mod_revision()))
            .max()?;
        Some(WatchBatch::Changes { revision, events })
    }
}

impl MetadataStore for EtcdStore {
    async fn get(&self, key: &str) -> Result<Option<StoredValue>, StoreError> {
        let mut kv = self.client.kv_client();
        let response = self.bounded("get", kv.get(self.full_key(key), None)).await?;
        Ok(response.kvs().first().map(|kv| self.to_stored(kv)))
    }

    async fn list(&self, key_prefix: &str) -> Result<Vec<StoredValue>, StoreError> {
        let mut kv = self.client.kv_client();
        let options = GetOptions::new().with_prefix();
        let response = self
            .bounded("list", kv.get(self.full_key(key_prefix), Some(options)))
            .await?;
        Ok(response.kvs().iter().map(|kv| self.to_stored(kv)).collect())
    }

    async fn snapshot(&self, key_prefix: &str) -> Result<Listing, StoreError> {
        let mut kv = self.client.kv_client();
        let options = GetOptions::new().with_prefix();
        let response = self
            .bounded("list", kv.get(self.full_key(key_prefix), Some(options)))
            .await?;
        Ok(Listing {
            values: response.kvs().iter().map(|kv| self.to_stored(kv)).collect(),
            revision: response.header().map(|header| header.revision()).unwrap_or_default(),
        })
    }

    async fn commit(&self, conditions: Vec<Condition>, writes: Vec<Write>) -> Result<CommitOutcome, StoreError> {
        let compares: Vec<Compare> = conditions
            .into_iter()
            .map(|condition| self.compare(condition))
            .collect();
        let operations: Vec<TxnOp> = writes
            .into_iter()
            .map(|write| match write {
                Write::Put(key, value) => TxnOp::put(self.full_key(&key), value, None),
                Write::Delete(key) => TxnOp::delete(self.full_key(&key), None),
            })
            .collect();
        let txn = Txn::new().when(compares).and_then(operations);
        let mut kv = self.client.kv_client();
        let response = self.bounded("commit", kv.txn(txn)).await?;
        if !response.succeeded() {
            return Ok(CommitOutcome::Conflict);
        }
        let revision = response.header().map(|header| header.revision()).unwrap_or_default();
        Ok(CommitOutcome::Committed { revision })
    }

    async fn watch(&self, key_prefix: &str, from_revision: i64) -> Result<WatchStream, StoreError> {
        let mut watcher = self.client.watch_client();
        let options = WatchOptions::new()
            .with_prefix()
            .with_prev_key()
            .with_start_revision(from_revision.max(1));
        let stream = self
            .bounded("watch", watcher.watch(self.full_key(key_prefix), Some(options)))
            .await?;
        let (sender, responses) = stream.split();
        let store = self.clone();
        let batches = futures::stream::unfold(
            (store, sender, responses, false),
            |(store, sender, mut responses, done)| async move {
                if done {
                    return None;
                }
                loop {
                    match responses.message().await {
                        Ok(Some(response)) => {
                            if let Some(batch) = store.to_batch(&response) {
                                let compacted = matches!(batch, WatchBatch::Compacted { .. });
                                return Some((Ok(batch), (store, sender, responses, compacted)));
                            }
                            if response.canceled() {
                                let error = StoreError::Unavailable(format!(
                                    "etcd cancelled the watch: {}",
                                    response.cancel_reason()
                                ));
                                return Some((Err(error), (store, sender, responses, true)));
                            }
                        }
                        Ok(None) => {
                            let error = StoreError::Unavailable("etcd closed the watch".to_owned());
                            return Some((Err(error), (store, sender, responses, true)));
                        }
                        Err(error) => {
                            let error = StoreError::Unavailable(format!("etcd watch failed: {error}"));
                            return Some((Err(error), (store, sender, responses, true)));
                        }
                    }
                }
            },
        );
        Ok(batches.boxed())
    }

    async fn create(&self, key: &str, value: Vec<u8>) -> Result<CreateOutcome, StoreError> {
        let full_key = self.full_key(key);
        // create_revision == 0 means "the key does not exist": the write and the check are one
        // transaction, so two coordinators can never both create the same key.
        let txn = Txn::new()
            .when([Compare::create_revision(full_key.clone(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(full_key.clone(), value, None)])
            .or_else([TxnOp::get(full_key, None)]);
        let mut kv = self.client.kv_client();
        let response = self.bounded("create", kv.txn(txn)).await?;
        if response.succeeded() {
            let mod_revision = response.header().map(|header| header.revision()).unwrap_or_default();
            return Ok(CreateOutcome::Created { mod_revision });
        }
        self.existing_from(&response, key).map(CreateOutcome::Exists)
    }

    async fn create_leased(&self, key: &str, value: Vec<u8>, ttl: Duration) -> Result<LeasedOutcome, StoreError> {
        let ttl_secs = i64::try_from(ttl.as_secs().max(1)).unwrap_or(i64::MAX);
        let mut leases = self.client.lease_client();
        let lease = self.bounded("lease grant", leases.grant(ttl_secs, None)).await?.id();
        let full_key = self.full_key(key);
        let txn = Txn::new()
            .when([Compare::create_revision(full_key.clone(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(
                full_key.clone(),
                value,
                Some(PutOptions::new().with_lease(lease)),
            )])
            .or_else([TxnOp::get(full_key, None)]);
        let mut kv = self.client.kv_client();
        let response = match self.bounded("create", kv.txn(txn)).await {
            Ok(response) => response,
            Err(error) => {
                // The lease would expire on its own; revoking just tidies up sooner.
                let _ = self.revoke(lease).await;
                return Err(error);
            }
        };
        if response.succeeded() {
            let revision = response.header().map(|header| header.revision()).unwrap_or_default();
            return Ok(LeasedOutcome::Created { lease, revision });
        }
        let _ = self.revoke(lease).await;
        self.existing_from(&response, key).map(LeasedOutcome::Exists)
    }

    async fn keep_alive(&self, lease: i64) -> Result<bool, StoreError> {
        let mut leases = self.client.lease_client();
        let renewed = async {
            let (mut keeper, mut responses) = self.bounded("lease keep-alive", leases.keep_alive(lease)).await?;
            self.bounded("lease keep-alive", keeper.keep_alive()).await?;
            self.bounded("lease keep-alive", responses.message()).await
        };
        match renewed.await {
            // etcd answers an expired or unknown lease with a TTL of 0…
            Ok(response) => Ok(response.is_some_and(|response| response.ttl() > 0)),
            // …or, through another member, with an error saying so.
            Err(StoreError::Unavailable(reason)) if reason.contains("lease not found") => Ok(false),
            Err(error) => Err(error),
        }
    }

    async fn revoke(&self, lease: i64) -> Result<(), StoreError> {
        let mut leases = self.client.lease_client();
        match self.bounded("lease revoke", leases.revoke(lease)).await {
            Ok(_) => Ok(()),
            Err(StoreError::Unavailable(reason)) if reason.contains("lease not found") => Ok(()),
            Err(error) => Err(error),
        }
    }
}

impl EtcdStore {
    /// The value a failed create-if-absent transaction read back instead of writing.
    fn existing_from(&self, response: &TxnResponse, key: &str) -> Result<StoredValue, StoreError> {
        for op_response in response.op_responses() {
            if let TxnOpResponse::Get(get) = op_response
                && let Some(kv) = get.kvs().first()
            {
                return Ok(self.to_stored(kv));
            }
        }
        Err(StoreError::Unavailable(format!(
            "etcd create of `{key}` failed its comparison but the key vanished; retry"
        )))
    }
}
