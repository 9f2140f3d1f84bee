// Tally from Go: an add with an idempotency token over gRPC (grpc-go, with stubs that run.sh
// generates from ../../proto), retried the way Tally asks clients to retry, then read back.
//
//	bash run.sh 127.0.0.1:7090
package main

import (
	"context"
	"crypto/rand"
	"fmt"
	"log"
	"os"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	pb "tally.example/counter/tallypb"
)

const namespace = "example_go"

// retryable says whether an add may be sent again: a refusal after which nothing was
// written, or one a moment may cure. The same token makes a repeat safe, because the server
// applies one token at most once.
func retryable(err error) bool {
	switch status.Code(err) {
	case codes.Unavailable, codes.DeadlineExceeded, codes.ResourceExhausted:
		return true
	}
	return false
}

// add sends AddCount with token, retried with the same token on a refusal that allows it.
func add(ctx context.Context, c pb.CounterServiceClient, counter string, delta int64, token string) (*pb.AddCountResponse, error) {
	req := &pb.AddCountRequest{
		Namespace:        namespace,
		CounterName:      counter,
		Delta:            delta,
		IdempotencyToken: &pb.IdempotencyToken{Token: token},
	}
	for attempt := 0; ; attempt++ {
		callCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
		resp, err := c.AddCount(callCtx, req)
		cancel()
		if err == nil || !retryable(err) || attempt == 4 {
			return resp, err
		}
		time.Sleep(time.Duration(100<<attempt) * time.Millisecond)
	}
}

func main() {
	if len(os.Args) < 2 {
		log.Fatal("usage: main GRPC_ADDR")
	}
	conn, err := grpc.NewClient(os.Args[1], grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		log.Fatal(err)
	}
	defer conn.Close()
	ctx := context.Background()
	counters := pb.NewCounterServiceClient(conn)
	namespaces := pb.NewNamespaceServiceClient(conn)

	_, err = namespaces.CreateNamespace(ctx, &pb.CreateNamespaceRequest{
		Name:   namespace,
		Config: &pb.NamespaceConfig{CounterType: pb.CounterType_COUNTER_TYPE_ACCURATE},
	})
	if err != nil && status.Code(err) != codes.AlreadyExists {
		log.Fatal(err)
	}

	// One token per logical add, made once, before the first attempt.
	token := "order-" + rand.Text()
	first, err := add(ctx, counters, "orders", 3, token)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("add: applied=%v\n", first.Applied)
	again, err := add(ctx, counters, "orders", 3, token) // a client that lost the answer sends it again
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("retry: applied=%v\n", again.Applied)
	count, err := counters.GetCount(ctx, &pb.GetCountRequest{Namespace: namespace, CounterName: "orders"})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("get: count=%d\n", count.Count)
}
