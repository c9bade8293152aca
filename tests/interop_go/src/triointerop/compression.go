package main

import (
	"context"
	"sync"

	"google.golang.org/grpc/stats"
)

// grpc-go 1.33 has no API that says whether a received message carried the compressed flag. Its stats
// handler sees each message's length on the wire (5-byte prefix included) and decoded: a message came
// uncompressed exactly when the two differ by the prefix alone.
const messagePrefixLength = 5

type arrivalsKey struct{}

// arrivals records, for one call, whether each received message was compressed, in order.
type arrivals struct {
	mu         sync.Mutex
	compressed []bool
}

// withArrivals gives a call's context a record of its received messages, for compressionStats to fill.
func withArrivals(ctx context.Context) (context.Context, *arrivals) {
	record := &arrivals{}
	return context.WithValue(ctx, arrivalsKey{}, record), record
}

// last reports whether the latest received message was compressed (false before any message).
func (a *arrivals) last() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.compressed) > 0 && a.compressed[len(a.compressed)-1]
}

// compressionStats fills the arrivals record of a call's context; servers give every call one in TagRPC.
type compressionStats struct{ server bool }

func (h compressionStats) TagRPC(ctx context.Context, _ *stats.RPCTagInfo) context.Context {
	if h.server {
		ctx, _ = withArrivals(ctx)
	}
	return ctx
}

func (compressionStats) HandleRPC(ctx context.Context, s stats.RPCStats) {
	in, ok := s.(*stats.InPayload)
	record, recorded := ctx.Value(arrivalsKey{}).(*arrivals)
	if !ok || !recorded {
		return
	}
	record.mu.Lock()
	defer record.mu.Unlock()
	record.compressed = append(record.compressed, in.WireLength != in.Length+messagePrefixLength)
}

func (compressionStats) TagConn(ctx context.Context, _ *stats.ConnTagInfo) context.Context {
	return ctx
}

func (compressionStats) HandleConn(context.Context, stats.ConnStats) {}

// lastArrivalCompressed reports whether the latest message received on the call of ctx was compressed.
func lastArrivalCompressed(ctx context.Context) bool {
	record, ok := ctx.Value(arrivalsKey{}).(*arrivals)
	return ok && record.last()
}
