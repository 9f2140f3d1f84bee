//! The namespace control plane.

use std::time::Duration;

use tally_core::{CounterType, ErrorCode, Namespace, NamespaceConfig};
use tally_engine::EngineError;

use crate::support::{TestEngine, key};

#[tokio::test]
async fn default_namespace_exists_and_is_permanent() {
    let t = TestEngine::memory().await;
    let default = Namespace::default_namespace();
    assert_eq!(t.engine.get_namespace(&default).await.expect("get"), NamespaceConfig::default());
    let err = t.engine.delete_namespace(&default).await.expect_err("permanent");
    assert_eq!(err, EngineError::DefaultNamespaceIsPermanent);
    assert_eq!(err.code(), ErrorCode::FailedPrecondition);
    t.engine.add_count(&key(&default, "c"), 1, None).await.expect("default namespace takes writes");
}

#[tokio::test]
async fn create_list_update_delete() {
    let t = TestEngine::memory().await;
    let ns = t.namespace("ads", CounterType::Accurate).await;
    let err = t.engine.create_namespace(&ns, NamespaceConfig::default()).await.expect_err("exists");
    assert_eq!(err.code(), ErrorCode::AlreadyExists);
    let names: Vec<_> =
        t.engine.list_namespaces().await.expect("list").into_iter().map(|(n, _)| n.to_string()).collect();
    assert_eq!(names, ["ads", "default"]);
    let wider = NamespaceConfig {
        counter_type: CounterType::Accurate,
        accept_limit: Duration::from_secs(30),
        ..Default::default()
    };
    t.engine.update_namespace(&ns, wider.clone()).await.expect("update");
    assert_eq!(t.engine.get_namespace(&ns).await.expect("get"), wider);
    let retyped = NamespaceConfig { counter_type: CounterType::Eventual, ..Default::default() };
    let err = t.engine.update_namespace(&ns, retyped).await.expect_err("type is fixed");
    assert!(matches!(err, EngineError::CounterTypeIsFixed { .. }), "{err}");
    t.engine.add_count(&key(&ns, "c"), 5, None).await.expect("add");
    t.engine.delete_namespace(&ns).await.expect("delete");
    assert_eq!(t.engine.get_namespace(&ns).await.expect_err("gone").code(), ErrorCode::NotFound);
    assert_eq!(t.engine.delete_namespace(&ns).await.expect_err("gone").code(), ErrorCode::NotFound);
    // Recreated under the same name, it starts empty.
    let ns = t.namespace("ads", CounterType::Accurate).await;
    assert_eq!(t.engine.get_count(&key(&ns, "c")).await.expect("get").value, 0);
}

#[tokio::test]
async fn an_invalid_configuration_is_refused_with_its_rule() {
    let t = TestEngine::memory().await;
    let ns = Namespace::new("bad").expect("ns");
    let config = NamespaceConfig { coalesce: Duration::ZERO, ..Default::default() };
    let err = t.engine.create_namespace(&ns, config).await.expect_err("invalid");
    assert_eq!(err.code(), ErrorCode::InvalidArgument);
    assert!(err.to_string().contains("coalesce 0ns must be between 1ms and 1h"), "{err}");
    assert!(t.engine.get_namespace(&ns).await.is_err(), "nothing was created");
}

#[tokio::test]
async fn a_namespace_created_again_does_not_answer_the_checkpoints_memory_kept_of_the_old_one() {
    let t = TestEngine::memory().await;
    let ns = t.namespace("gone", CounterType::Eventual).await;
    let k = key(&ns, "c");
    t.engine.add_count(&k, 5, None).await.expect("add");
    t.converge(&NamespaceConfig::default()).await;
    // Rolled up: the counter's events left memory, which keeps only its checkpoint.
    assert_eq!(t.engine.stored_checkpoint(&k).await.expect("cp").map(|cp| cp.count), Some(5));
    assert_eq!(t.engine.get_count(&k).await.expect("get").value, 5);
    t.engine.delete_namespace(&ns).await.expect("delete");
    let ns = t.namespace("gone", CounterType::Eventual).await;
    assert_eq!(t.engine.get_count(&k).await.expect("get").value, 0, "read of the new namespace");
    let (_, count) = t.engine.add_and_get_count(&key(&ns, "c"), 1, None).await.expect("add");
    assert_eq!(count.value, 1, "an add to the new namespace counts from zero");
}
