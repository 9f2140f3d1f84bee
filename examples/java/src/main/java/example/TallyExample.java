package example;

import io.grpc.ManagedChannel;
import io.grpc.ManagedChannelBuilder;
import io.grpc.Status;
import io.grpc.StatusRuntimeException;
import java.util.Set;
import java.util.UUID;
import java.util.concurrent.TimeUnit;
import tally.v1.Counter.AddCountRequest;
import tally.v1.Counter.AddCountResponse;
import tally.v1.Counter.CounterType;
import tally.v1.Counter.GetCountRequest;
import tally.v1.Counter.IdempotencyToken;
import tally.v1.CounterServiceGrpc;
import tally.v1.NamespaceOuterClass.CreateNamespaceRequest;
import tally.v1.NamespaceOuterClass.NamespaceConfig;
import tally.v1.NamespaceServiceGrpc;

/**
 * Tally from Java: an add with an idempotency token over gRPC (grpc-java), retried the way
 * Tally asks clients to retry, then read back. {@code bash run.sh 127.0.0.1:7090}
 */
public final class TallyExample {
    private static final String NAMESPACE = "example_java";

    /**
     * Refusals after which nothing was written, or that a moment may cure: sending the add again
     * with the same token is safe, because the server applies one token at most once.
     */
    private static final Set<Status.Code> RETRY =
            Set.of(Status.Code.UNAVAILABLE, Status.Code.DEADLINE_EXCEEDED, Status.Code.RESOURCE_EXHAUSTED);

    private TallyExample() {}

    /** AddCount with {@code token}, retried with the same token on a refusal that allows it. */
    static AddCountResponse add(
            CounterServiceGrpc.CounterServiceBlockingStub counters, String counter, long delta, String token)
            throws InterruptedException {
        AddCountRequest request = AddCountRequest.newBuilder()
                .setNamespace(NAMESPACE)
                .setCounterName(counter)
                .setDelta(delta)
                .setIdempotencyToken(IdempotencyToken.newBuilder().setToken(token))
                .build();
        for (int attempt = 0; ; attempt++) {
            try {
                return counters.withDeadlineAfter(5, TimeUnit.SECONDS).addCount(request);
            } catch (StatusRuntimeException e) {
                if (!RETRY.contains(e.getStatus().getCode()) || attempt == 4) {
                    throw e;
                }
                Thread.sleep(100L << attempt);
            }
        }
    }

    public static void main(String[] args) throws InterruptedException {
        ManagedChannel channel = ManagedChannelBuilder.forTarget(args[0]).usePlaintext().build();
        try {
            var counters = CounterServiceGrpc.newBlockingStub(channel);
            var namespaces = NamespaceServiceGrpc.newBlockingStub(channel);
            try {
                namespaces.createNamespace(CreateNamespaceRequest.newBuilder()
                        .setName(NAMESPACE)
                        .setConfig(NamespaceConfig.newBuilder().setCounterType(CounterType.COUNTER_TYPE_ACCURATE))
                        .build());
            } catch (StatusRuntimeException e) {
                if (e.getStatus().getCode() != Status.Code.ALREADY_EXISTS) {
                    throw e;
                }
            }

            // One token per logical add, made once, before the first attempt.
            String token = "order-" + UUID.randomUUID();
            System.out.println("add: applied=" + add(counters, "orders", 3, token).getApplied());
            // A client that lost the answer sends it again.
            System.out.println("retry: applied=" + add(counters, "orders", 3, token).getApplied());
            var count = counters.getCount(
                    GetCountRequest.newBuilder().setNamespace(NAMESPACE).setCounterName("orders").build());
            System.out.println("get: count=" + count.getCount());
        } finally {
            channel.shutdownNow().awaitTermination(5, TimeUnit.SECONDS);
        }
    }
}
