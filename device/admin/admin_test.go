package admin

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/hl7edge/hl7edge/device/command"
)

func TestCallRoundTripAndCleanStop(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "admin.sock")
	d := command.NewDispatcher(nil)
	d.Register("echo", func(_ context.Context, args json.RawMessage) (any, string, error) {
		return json.RawMessage(args), "echoed", nil
	})
	d.Register("boom", func(context.Context, json.RawMessage) (any, string, error) {
		return nil, "", errors.New("destination \"ehr\" is unknown")
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- NewServer(sock, d, nil).Run(ctx) }()
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, err := os.Stat(sock); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("socket never appeared")
		}
		time.Sleep(5 * time.Millisecond)
	}
	cctx, ccancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer ccancel()
	r, err := Call(cctx, sock, command.Request{ID: "1", Name: "echo", Args: json.RawMessage(`{"x":1}`)})
	if err != nil || r.Status != command.Successful || r.Detail != "echoed" || r.ID != "1" {
		t.Fatalf("echo: %+v %v", r, err)
	}
	r, _ = Call(cctx, sock, command.Request{ID: "2", Name: "boom"})
	if r.Status != command.Failed || r.Detail == "" {
		t.Fatalf("boom: %+v", r)
	}
	past := time.Now().Add(-time.Minute)
	r, _ = Call(cctx, sock, command.Request{ID: "3", Name: "echo", Expires: &past})
	if r.Status != command.Rejected {
		t.Fatalf("expired: %+v", r)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(sock); !os.IsNotExist(err) {
		t.Fatal("socket left behind after stop")
	}
	if _, err := Call(cctx, sock, command.Request{ID: "4", Name: "echo"}); !errors.Is(err, ErrNoDaemon) {
		t.Fatalf("call with no daemon: %v", err)
	}
}
