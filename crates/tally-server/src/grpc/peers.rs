//! Rollup routing between instances: `tally.v1.PeerService` (receiving triggers) and
//! [`PeerRouter`] (sending them to each counter's owner).

use std::sync::Arc;
use std::time::Duration;
use tally_core::Operation;

use tally_core::{CounterKey, Timestamp};
use tally_engine::{Engine, LocalTrigger, Rendezvous, RollupRouter};
use tally_proto::v1 as pb;
use tally_proto::v1::peer_service_client::PeerServiceClient;
use tokio::sync::mpsc;
use tonic::transport::Endpoint;
use tonic::{Request, Response, Status};

use crate::convert::{counter_key, timestamp_from_proto, timestamp_to_proto};
use crate::error::ApiError;
use crate::metrics::observe;

/// Triggers queued for one peer before new ones are rolled up locally instead.
const QUEUE: usize = 65_536;
/// Most counters in one `TriggerRollups` call.
const BATCH: usize = 1024;
/// How long a batch waits to fill up: a trigger is due a second or more later anyway.
const LINGER: Duration = Duration::from_millis(20);
/// Longest a `TriggerRollups` call may take before its counters are rolled up locally.
const CALL_TIMEOUT: Duration = Duration::from_secs(1);

/// `tally.v1.PeerService`: queues the rollups other instances hand over.
pub struct GrpcPeers {
    engine: Engine,
}

impl GrpcPeers {
    /// The service over `engine`.
    pub fn new(engine: Engine) -> Self {
        Self { engine }
    }
}

#[tonic::async_trait]
impl pb::peer_service_server::PeerService for GrpcPeers {
    async fn trigger_rollups(
        &self,
        request: Request<pb::TriggerRollupsRequest>,
    ) -> Result<Response<pb::TriggerRollupsResponse>, Status> {
        // Only another instance hands over triggers (the scope `peer`): they schedule work that
        // is correct anywhere, but a client could flood the rollup queues with them.
        super::principal(&request).and_then(|p| p.require_peer()).map_err(ApiError::into_status)?;
        let r = request.into_inner();
        observe("grpc", Operation::TriggerRollups, async {
            let due = r.due.as_ref().map(timestamp_from_proto).transpose()?.unwrap_or(Timestamp::MIN);
            // Validate the whole batch before queueing any of it.
            let keys = r
                .counters
                .iter()
                .map(|c| counter_key(&c.namespace, &c.counter_name))
                .collect::<Result<Vec<_>, ApiError>>()?;
            for key in &keys {
                self.engine.trigger_rollup(key, due);
            }
            metrics::counter!("tally_rollup_triggers_received_total").increment(keys.len() as u64);
            Ok(pb::TriggerRollupsResponse { accepted: u32::try_from(keys.len()).unwrap_or(u32::MAX) })
        })
        .await
        .map(Response::new)
        .map_err(ApiError::into_status)
    }
}

/// Sends each trigger to the counter's owner among `peers`, in batches, one queue and task per
/// peer. Whatever cannot be handed over (a full queue, an owner that does not answer) is rolled
/// up here instead: duplicate work at worst, never a lost rollup.
pub struct PeerRouter {
    rendezvous: Rendezvous,
    me: usize,
    queues: Vec<Option<mpsc::Sender<(CounterKey, Timestamp)>>>,
}

impl PeerRouter {
    /// Routes over `peers` (gRPC `host:port` of every instance, this one included as
    /// `advertise`), and attaches itself to `engine`.
    pub fn attach(
        engine: &Engine,
        peers: Vec<String>,
        advertise: &str,
        token: Option<&str>,
        tls: Option<&crate::tls::Tls>,
    ) -> anyhow::Result<()> {
        let authorization = token
            .map(|t| tonic::metadata::MetadataValue::try_from(format!("Bearer {t}")))
            .transpose()
            .map_err(|e| anyhow::anyhow!("[auth] peer_token cannot be sent as metadata: {e}"))?;
        let me = peers.iter().position(|p| p == advertise).ok_or_else(|| {
            anyhow::anyhow!("advertise address {advertise:?} must be one of the peers {peers:?}")
        })?;
        let local = engine.local_rollup_trigger();
        let mut queues = Vec::with_capacity(peers.len());
        for (i, peer) in peers.iter().enumerate() {
            if i == me {
                queues.push(None);
                continue;
            }
            let scheme = if tls.is_some() { "https" } else { "http" };
            #[allow(unused_mut)]
            let mut endpoint = Endpoint::from_shared(format!("{scheme}://{peer}"))
                .map_err(|e| anyhow::anyhow!("peer address {peer:?}: {e}"))?
                .connect_timeout(CALL_TIMEOUT)
                .timeout(CALL_TIMEOUT);
            #[cfg(feature = "tls")]
            if let Some(tls) = tls {
                let host = peer.rsplit_once(':').map_or(peer.as_str(), |(host, _)| host);
                endpoint = endpoint.tls_config(tls.peer_client(host.trim_matches(['[', ']'])))?;
            }
            let channel = endpoint.connect_lazy();
            let (tx, rx) = mpsc::channel(QUEUE);
            tokio::spawn(forward(
                peer.clone(),
                PeerServiceClient::new(channel),
                authorization.clone(),
                rx,
                local.clone(),
            ));
            queues.push(Some(tx));
        }
        tracing::info!(?peers, me = %advertise, "routing rollups by rendezvous hashing");
        engine.route_rollups_with(Arc::new(Self { rendezvous: Rendezvous::new(peers), me, queues }));
        Ok(())
    }
}

impl RollupRouter for PeerRouter {
    fn route(&self, key: &CounterKey, due: Timestamp) -> bool {
        let Some(owner) = self.rendezvous.owner(key).filter(|&o| o != self.me) else { return false };
        let Some(Some(queue)) = self.queues.get(owner) else { return false };
        match queue.try_send((key.clone(), due)) {
            Ok(()) => true,
            Err(_) => {
                metrics::counter!("tally_rollup_triggers_unrouted_total").increment(1);
                false
            }
        }
    }
}

/// Drains one peer's queue into `TriggerRollups` calls until the router is dropped.
async fn forward(
    peer: String,
    mut client: PeerServiceClient<tonic::transport::Channel>,
    authorization: Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>,
    mut rx: mpsc::Receiver<(CounterKey, Timestamp)>,
    local: LocalTrigger,
) {
    let warnings = tally_engine::LogLimit::new(Duration::from_secs(10));
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        let linger = tokio::time::sleep(LINGER);
        tokio::pin!(linger);
        while batch.len() < BATCH {
            tokio::select! {
                next = rx.recv() => match next {
                    Some(item) => batch.push(item),
                    None => break,
                },
                () = &mut linger => break,
            }
        }
        let due = batch.iter().map(|(_, due)| *due).min().unwrap_or(Timestamp::MIN);
        let request = pb::TriggerRollupsRequest {
            counters: batch
                .iter()
                .map(|(k, _)| pb::CounterRef {
                    namespace: k.namespace.as_str().to_owned(),
                    counter_name: k.counter.as_str().to_owned(),
                })
                .collect(),
            due: Some(timestamp_to_proto(due)),
        };
        let mut request = Request::new(request);
        if let Some(value) = &authorization {
            request.metadata_mut().insert("authorization", value.clone());
        }
        match client.trigger_rollups(request).await {
            Ok(_) => metrics::counter!("tally_rollup_triggers_forwarded_total").increment(batch.len() as u64),
            Err(status) => {
                // A peer that is down fails every batch: one line per 10 s says so.
                if let Some(left_out) = warnings.check() {
                    tracing::warn!(%peer, error = %status.message(), counters = batch.len(), left_out, "peer did not take rollup triggers; rolling them up here (left_out: failed batches not logged since the last line)");
                }
                metrics::counter!("tally_rollup_triggers_unrouted_total").increment(batch.len() as u64);
                for (key, due) in &batch {
                    local(key, *due);
                }
            }
        }
    }
}
