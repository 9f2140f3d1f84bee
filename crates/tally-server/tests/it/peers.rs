//! `tally.v1.PeerService`: rollup triggers handed over by other instances.

use tally_proto::v1 as pb;
use tally_proto::v1::peer_service_client::PeerServiceClient;
use tally_server::convert::timestamp_to_proto;

use crate::support::TestServer;

fn counter(namespace: &str, name: &str) -> pb::CounterRef {
    pb::CounterRef { namespace: namespace.to_owned(), counter_name: name.to_owned() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handed_over_triggers_roll_up_here_and_a_bad_name_refuses_the_whole_batch() {
    // Peers share a store: another instance's events reach it without this one.
    let server = TestServer::start_shared().await;
    server.namespace("peer", "eventual").await;
    let key = tally_core::CounterKey::parse_joined("peer:views").expect("key");
    // An event written straight to the store, as another instance would: nothing here knows
    // to roll it up until the peer's trigger arrives.
    let token = tally_core::IdempotencyToken::new("from-a-peer", server.now()).expect("token");
    let event = tally_core::Event { key: key.clone(), token, kind: tally_core::EventKind::Add(4) };
    server.store.append_new(&event, tally_core::Timestamp::MAX).await.expect("append");
    server.converge().await;
    // Read without triggering (a GetCount would trigger a rollup itself).
    assert_eq!(
        server.engine.stored_checkpoint(&key).await.expect("checkpoint"),
        None,
        "rolled up untriggered"
    );
    let mut client = PeerServiceClient::new(server.channel().await);

    let bad = pb::TriggerRollupsRequest {
        counters: vec![counter("peer", "views"), counter("no spaces allowed", "x")],
        due: Some(timestamp_to_proto(server.now())),
    };
    let status = client.trigger_rollups(bad).await.expect_err("invalid namespace");
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");

    let good = pb::TriggerRollupsRequest {
        counters: vec![counter("peer", "views")],
        due: Some(timestamp_to_proto(server.now())),
    };
    assert_eq!(client.trigger_rollups(good).await.expect("accepted").into_inner().accepted, 1);
    // The serving loop's own workers may take the trigger; give them a bounded while.
    let mut checkpoint = None;
    for _ in 0..100 {
        server.converge().await;
        checkpoint = server.engine.stored_checkpoint(&key).await.expect("checkpoint");
        if checkpoint.is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(checkpoint.map(|c| c.count), Some(4));
    server.stop().await;
}
