package webservice

import (
	"context"
	"testing"
)

// BenchmarkPost measures delivered posts per second from a destination to
// the reference server over loopback HTTPS (TLS 1.3, one kept-alive
// connection). The server fsyncs each stored message and its directory, so
// the figure is bounded by the disk as much as by the protocol.
func BenchmarkPost(b *testing.B) {
	r := newRig(b, nil, nil)
	msgs := messages(b.N)
	ctx := context.Background()
	b.ResetTimer()
	for _, m := range msgs {
		if err := r.dest.Deliver(ctx, m); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "posts/s")
	if n := r.srv.Conns(); n != 1 {
		b.Errorf("%d connections, want 1", n)
	}
}
