// Tally from Node.js: an add with an idempotency token over gRPC (@grpc/grpc-js, loading
// ../../proto at run time with @grpc/proto-loader), retried the way Tally asks clients to
// retry, then read back; and a counter over the Redis protocol (ioredis).
//
//   npm ci && node counter.js 127.0.0.1:7090 127.0.0.1:7379

"use strict";

const path = require("node:path");
const crypto = require("node:crypto");
const grpc = require("@grpc/grpc-js");
const protoLoader = require("@grpc/proto-loader");
const Redis = require("ioredis");

const [grpcAddr, respAddr] = process.argv.slice(2);
const NAMESPACE = "example_node";

const definition = protoLoader.loadSync(["tally/v1/counter.proto", "tally/v1/namespace.proto"], {
  includeDirs: [path.join(__dirname, "../../proto")],
  keepCase: true,
  longs: Number,
  enums: String,
  defaults: true,
});
const v1 = grpc.loadPackageDefinition(definition).tally.v1;
const credentials = grpc.credentials.createInsecure();
const counters = new v1.CounterService(grpcAddr, credentials);
const namespaces = new v1.NamespaceService(grpcAddr, credentials);

// Refusals after which nothing was written, or that a moment may cure: sending the add again
// with the same token is safe, because the server applies one token at most once.
const RETRY = new Set([grpc.status.UNAVAILABLE, grpc.status.DEADLINE_EXCEEDED, grpc.status.RESOURCE_EXHAUSTED]);

function call(client, method, request) {
  const deadline = new Date(Date.now() + 5000);
  return new Promise((resolve, reject) =>
    client[method](request, { deadline }, (err, response) => (err ? reject(err) : resolve(response))),
  );
}

// AddCount with `token`, retried with the same token on a refusal that allows it.
async function add(counter, delta, token, attempts = 5) {
  const request = { namespace: NAMESPACE, counter_name: counter, delta, idempotency_token: { token } };
  for (let attempt = 0; ; attempt++) {
    try {
      return await call(counters, "AddCount", request);
    } catch (err) {
      if (!RETRY.has(err.code) || attempt === attempts - 1) throw err;
      await new Promise((r) => setTimeout(r, 100 * 2 ** attempt));
    }
  }
}

async function main() {
  try {
    await call(namespaces, "CreateNamespace", {
      name: NAMESPACE,
      config: { counter_type: "COUNTER_TYPE_ACCURATE" },
    });
  } catch (err) {
    if (err.code !== grpc.status.ALREADY_EXISTS) throw err;
  }

  // One token per logical add, made once, before the first attempt.
  const token = `order-${crypto.randomUUID()}`;
  const first = await add("orders", 3, token);
  console.log(`add: applied=${first.applied}`);
  const again = await add("orders", 3, token); // a client that lost the answer sends it again
  console.log(`retry: applied=${again.applied}`);
  const count = await call(counters, "GetCount", { namespace: NAMESPACE, counter_name: "orders" });
  console.log(`get: count=${count.count}`);

  const [host, port] = [respAddr.slice(0, respAddr.lastIndexOf(":")), respAddr.slice(respAddr.lastIndexOf(":") + 1)];
  const redis = new Redis({ host, port: Number(port), lazyConnect: true });
  await redis.connect();
  await redis.incrby(`${NAMESPACE}:visits`, 2);
  console.log(`redis: visits=${await redis.get(`${NAMESPACE}:visits`)}`);
  redis.disconnect();
  counters.close();
  namespaces.close();
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
