//! Tally from Rust with `tally-client`: an add with an idempotency token over gRPC, retried the
//! way Tally asks clients to retry, then read back; and a counter over the Redis protocol
//! through the same `Client` API.
//!
//!     cargo run -p tally-client --example counter -- 127.0.0.1:7090 127.0.0.1:7379

use std::time::Duration;

use tally_client::{Client, ClientError, ConnectOptions, Door, Token};
use tally_proto::v1 as pb;

const NAMESPACE: &str = "example_rust";

/// AddCount with `token`, retried with the same token while the error allows it.
async fn add(client: &Client, counter: &str, delta: i64, token: &Token) -> Result<bool, ClientError> {
    let mut attempt = 0;
    loop {
        match client.add(NAMESPACE, counter, delta, Some(token)).await {
            Ok(answer) => return Ok(answer.applied),
            Err(e) if e.is_retriable() && attempt < 4 => {
                tokio::time::sleep(Duration::from_millis(100 << attempt)).await;
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [grpc_addr, resp_addr] = args.as_slice() else {
        anyhow::bail!("usage: counter GRPC_ADDR RESP_ADDR");
    };
    let options = ConnectOptions { timeout: Some(Duration::from_secs(5)), ..ConnectOptions::default() };
    let grpc = Client::connect(Door::Grpc, grpc_addr, &options).await?;

    // Namespace settings are beyond the four counter calls: the generated client does them.
    let mut namespaces = grpc.grpc().expect("a gRPC client").namespaces_service();
    let config = pb::NamespaceConfig { counter_type: pb::CounterType::Accurate as i32, ..Default::default() };
    let create = pb::CreateNamespaceRequest { name: NAMESPACE.into(), config: Some(config) };
    match namespaces.create_namespace(create).await {
        Err(status) if status.code() != tonic::Code::AlreadyExists => return Err(status.into()),
        _ => {}
    }

    // One token per logical add, made once, before the first attempt.
    let token = Token::new(format!(
        "order-{}-{}",
        std::process::id(),
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_micros()
    ));
    println!("add: applied={}", add(&grpc, "orders", 3, &token).await?);
    // A client that lost the answer sends it again: it is not counted twice.
    println!("retry: applied={}", add(&grpc, "orders", 3, &token).await?);
    println!("get: count={}", grpc.get(NAMESPACE, "orders").await?);

    let resp = Client::connect(Door::Resp, resp_addr, &options).await?;
    resp.add(NAMESPACE, "visits", 2, None).await?;
    println!("redis: visits={}", resp.get(NAMESPACE, "visits").await?);
    Ok(())
}
