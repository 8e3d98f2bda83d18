package main

import (
	"context"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hl7edge/hl7edge/pipeline/hl7"
	"github.com/hl7edge/hl7edge/pipeline/mllp"
	"github.com/hl7edge/hl7edge/pipeline/throwawayca"
	"github.com/hl7edge/hl7edge/pipeline/vocab/flow"
	"github.com/hl7edge/hl7edge/pipeline/vocab/health"
)

// startTLSReceiver runs an MLLP listener that requires a client certificate
// from ca and answers every message AA. Its own certificate names only
// serverName, so a client dialling 127.0.0.1 must be told the name.
func startTLSReceiver(t *testing.T, dir string, ca *throwawayca.CA, serverName string) string {
	t.Helper()
	leaf, err := ca.Issue("receiver", serverName)
	if err != nil {
		t.Fatal(err)
	}
	files, err := ca.WriteFiles(dir, "receiver", leaf)
	if err != nil {
		t.Fatal(err)
	}
	r := startReceiver(t, mllp.ServerTLS{CertFile: files.Cert, KeyFile: files.Key, ClientCAFile: files.CA}, nil)
	return r.addr
}

// receiver is an MLLP listener standing for a LIS or EHR downstream.
type receiver struct {
	addr string
	mu   sync.Mutex
	took []string // control IDs answered AA, in order
}

func (r *receiver) accepted() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.took)
}

// startReceiver runs an MLLP listener that answers each message with
// answer(control ID), or AA when answer is nil.
func startReceiver(t *testing.T, tlsConf mllp.ServerTLS, answer func(id string) flow.Code) *receiver {
	t.Helper()
	r := &receiver{}
	comp := health.NewRegistry("t", "v0", nil).Component(health.Source, "lab", "mllp")
	h := mllp.HandlerFunc(func(_ context.Context, _ string, f mllp.Frame) []byte {
		m, err := hl7.Parse(f.Data)
		if err != nil {
			return nil
		}
		id, code := m.Header().ControlID, flow.Accepted
		if answer != nil {
			code = answer(id)
		}
		if code == flow.Accepted {
			r.mu.Lock()
			r.took = append(r.took, id)
			r.mu.Unlock()
		}
		return hl7.ACK(m, code, 0, "refused by the test receiver", "ACK-"+id, time.Now())
	})
	srv, err := mllp.NewServer("lab", mllp.ListenerConfig{Listen: "127.0.0.1:0", TLS: tlsConf},
		h, slog.New(slog.NewTextHandler(io.Discard, nil)), comp)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	waitFor(t, "the receiver listening", func() bool { return srv.Addr() != nil && comp.State() == health.Up })
	r.addr = srv.Addr().String()
	return r
}

// TestSendPresentsClientCertificate: `hl7edge send` reaches an MLLP
// listener that requires client certificates, by --cert/--key, and checks
// the receiver by --server-name when its certificate does not name the
// address dialled (issue 28, point 1).
func TestSendPresentsClientCertificate(t *testing.T) {
	dir := t.TempDir()
	ca, err := throwawayca.NewCA("lab CA")
	if err != nil {
		t.Fatal(err)
	}
	addr := startTLSReceiver(t, dir, ca, "lis.lab.example")
	client, err := ca.Issue("gateway")
	if err != nil {
		t.Fatal(err)
	}
	cf, err := ca.WriteFiles(dir, "client", client)
	if err != nil {
		t.Fatal(err)
	}
	msg := filepath.Join(dir, "oru.hl7")
	if err := os.WriteFile(msg, []byte("MSH|^~\\&|LAB|H|GW|H|20260101000000||ORU^R01|C1|P|2.5\rPID|1||123\r"), 0o600); err != nil {
		t.Fatal(err)
	}

	run := func(args ...string) (string, error) {
		out, err := exec.Command(binPath, append([]string{"send", "--to", addr}, args...)...).CombinedOutput()
		return string(out), err
	}
	out, err := run("--ca", cf.CA, "--cert", cf.Cert, "--key", cf.Key, "--server-name", "lis.lab.example", msg)
	if err != nil || !strings.Contains(out, "AA C1") {
		t.Fatalf("send with a client certificate: %v\n%s", err, out)
	}
	// Without the certificate the listener refuses, and send says so.
	if out, err := run("--ca", cf.CA, "--server-name", "lis.lab.example", msg); err == nil || !strings.Contains(out, "--cert") {
		t.Errorf("send without a client certificate: %v, want a refusal that suggests --cert\n%s", err, out)
	}
	// A wrong name is refused: the receiver's certificate is checked.
	if out, err := run("--ca", cf.CA, "--cert", cf.Cert, "--key", cf.Key, msg); err == nil || !strings.Contains(out, "--server-name") {
		t.Errorf("send to 127.0.0.1 whose certificate names lis.lab.example: %v, want a refusal that suggests --server-name\n%s", err, out)
	}
	// A certificate without its key is a usage mistake, said before dialling.
	if out, err := run("--cert", cf.Cert, msg); err == nil || !strings.Contains(out, "--key") {
		t.Errorf("--cert without --key: %v\n%s", err, out)
	}
}
