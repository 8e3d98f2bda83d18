package main

import (
	"context"
	"encoding/json"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hl7edge/hl7edge/device/admin"
	"github.com/hl7edge/hl7edge/device/command"
)

// TestStatsLine: the rig's "stats" answer is the daemon's spool-stats data
// as one JSON line through a real admin socket, and an error object, still
// one line, when no daemon answers. The rig parses both.
func TestStatsLine(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "admin.sock")
	if got := statsLine(sock); !strings.HasPrefix(got, `{"error":`) || strings.Contains(got, "\n") {
		t.Fatalf("with no daemon: %q, want one line with an error key", got)
	}

	d := command.NewDispatcher(nil)
	d.Register(command.SpoolStats, func(context.Context, json.RawMessage) (any, string, error) {
		return map[string]any{"messages": 3, "destinations": map[string]any{"archive": map[string]any{"queued": 2}}}, "", nil
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- admin.NewServer(sock, d, nil).Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })

	var got map[string]any
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		line := statsLine(sock)
		got = nil // Unmarshal would merge into the last answer's keys
		if err := json.Unmarshal([]byte(line), &got); err != nil {
			t.Fatalf("not one JSON object: %q", line)
		}
		if _, failed := got["error"]; !failed || time.Now().After(deadline) {
			break
		}
	}
	if got["messages"] != float64(3) || got["destinations"].(map[string]any)["archive"].(map[string]any)["queued"] != float64(2) {
		t.Fatalf("stats line = %v, want the handler's figures", got)
	}
}

// TestAdminLineFailure: a command that fails (an unreadable dead letter
// makes dead-list fail, issue 23) comes back as an error object the rig
// reports, not as an empty list.
func TestAdminLineFailure(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "admin.sock")
	d := command.NewDispatcher(nil)
	d.Register(command.DeadList, func(_ context.Context, raw json.RawMessage) (any, string, error) {
		var a struct{ Name string }
		_ = json.Unmarshal(raw, &a)
		if a.Name == "reports" {
			return []map[string]string{{"control_id": "R1-0000008"}}, "1 dead letters", nil
		}
		return nil, "", errors.New("list dead letters of " + a.Name + ": unreadable")
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- admin.NewServer(sock, d, nil).Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	ask := func(dest string) string {
		args, _ := json.Marshal(map[string]string{"name": dest})
		var line string
		for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
			if line = adminLine(sock, command.Request{ID: "t", Name: command.DeadList, Args: args}); !strings.Contains(line, "no daemon") && !strings.Contains(line, "connect") {
				break
			}
		}
		return line
	}
	if got := ask("reports"); got != `[{"control_id":"R1-0000008"}]` {
		t.Errorf("dead list of reports = %s", got)
	}
	if got := ask("archive"); !strings.HasPrefix(got, `{"error":"dead-list failed: `) || !strings.Contains(got, "unreadable") {
		t.Errorf("a failed dead list = %s, want an error object with the detail", got)
	}
}

// TestTraceLineFailure: a trace command that cannot run comes back as one
// error object the rig fails on, not as an empty page.
func TestTraceLineFailure(t *testing.T) {
	got := traceLine(filepath.Join(t.TempDir(), "no-hl7edge"), "2000-01-01T00:00:00Z")
	var v map[string]string
	if err := json.Unmarshal([]byte(got), &v); err != nil || !strings.HasPrefix(v["error"], "hl7edge trace: ") || strings.Contains(got, "\n") {
		t.Errorf("trace line = %s, want one error object", got)
	}
}
