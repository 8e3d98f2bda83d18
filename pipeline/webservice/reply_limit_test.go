package webservice

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hl7edge/hl7edge/pipeline/webservice/internal/wstest"
	"github.com/hl7edge/hl7edge/pipeline/webservice/wire"
)

// TestHostileHugeReplyStopsAtItsLimit: a ping reply can only be small, so
// a server that answers a ping with 100 MB (here: streams until the client
// hangs up) is cut off once the reply passes the ping's limit, with an
// error naming the limit; the gateway reads little of it and keeps little
// in memory (the old code read 32 MiB before giving up).
func TestHostileHugeReplyStopsAtItsLimit(t *testing.T) {
	pki := wstest.NewPKI(t)
	var sent atomic.Int64
	chunk := []byte("<PING HL7POSTURL=\"https://x/" + strings.Repeat("A", 64<<10-40) + "\"")
	srv := wstest.StartTLS(t, pki, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		for sent.Load() < 100<<20 {
			n, err := w.Write(chunk)
			sent.Add(int64(n))
			if err != nil {
				return
			}
		}
	}), nil)
	r := newRig(t, nil, nil)
	cfg := r.destConfig(t, srv.URL+"/ping")
	cfg.CAFile = pki.CAFile
	d := r.newDest(t, cfg)
	err := d.Deliver(context.Background(), testMessage(1))
	if !errors.Is(err, ErrTransport) || !strings.Contains(err.Error(), "65536") {
		t.Fatalf("Deliver = %v, want a transport failure naming the 65536-byte limit of a ping reply", err)
	}
	// What the server managed to write before the client hung up: the
	// limit plus what socket buffers hold, far from 100 MB or 32 MiB.
	if s := sent.Load(); s > 16<<20 {
		t.Errorf("the server wrote %d MiB before the client stopped reading; want the read to stop near the limit", s>>20)
	}
	t.Logf("server wrote %d KiB of a 100 MiB reply before the client hung up", sent.Load()>>10)
}

// TestGetReplyLimitFitsOneMessage: a get reply is read up to one message
// of max_message_bytes in Base64 plus its envelope: a reply carrying a
// message of that size is read whole, a 100 MB one is cut off there.
func TestGetReplyLimitFitsOneMessage(t *testing.T) {
	pki := wstest.NewPKI(t)
	const maxMessage = 256 << 10
	msg := "MSH|^~\\&|A|B|C|D|20260101||ADT^A01|CTL-BIG|P|2.5\rNTE|1||" + strings.Repeat("x", maxMessage-100) + "\r"
	var huge atomic.Bool
	srv := wstest.StartTLS(t, pki, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		if huge.Load() {
			pad := []byte(strings.Repeat("QUFB", 16<<10))
			w.Write([]byte(`<HL7 ID="m1"><MESSAGE ID="m1">`))
			for range 100 << 20 / len(pad) {
				if _, err := w.Write(pad); err != nil {
					return
				}
			}
			return
		}
		b, err := wire.Encode(&wire.HL7{ID: "m1", Message: wire.Message{ID: "m1", Data: wire.EncodeMessage([]byte(msg))}})
		if err != nil {
			t.Error(err)
		}
		w.Write(b)
	}), nil)
	client, err := NewHTTPClient(TLSFiles{CAFile: pki.CAFile})
	if err != nil {
		t.Fatal(err)
	}
	x := &exchanger{client: client, timeout: 30 * time.Second}
	target, _ := url.Parse(srv.URL + "/get")
	limit := MaxGetReplyBytes(maxMessage)
	var got wire.HL7
	if err := x.do(context.Background(), "get", target, &wire.Get{ID: "m1"}, &got, limit); err != nil {
		t.Fatalf("a get reply with a message of max_message_bytes: %v", err)
	}
	huge.Store(true)
	err = x.do(context.Background(), "get", target, &wire.Get{ID: "m1"}, &got, limit)
	if !errors.Is(err, ErrTransport) || !strings.Contains(err.Error(), fmt.Sprint(limit)) {
		t.Fatalf("a 100 MB get reply: %v, want a transport failure naming the %d-byte limit", err, limit)
	}
}
