package firmware

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hl7edge/hl7edge/device/trust"
	"github.com/hl7edge/hl7edge/pipeline/throwawayca"
	"github.com/hl7edge/hl7edge/pipeline/vocab/health"
	"github.com/hl7edge/hl7edge/pipeline/vocab/units"
	"github.com/hl7edge/hl7edge/storage/syncgate"
	"github.com/hl7edge/hl7edge/storage/syncgate/syncgatetest"
)

// The state file sits on the card beside the spool. When the spool's flush
// fails while a new state is written, the card may have dropped it (a lost
// trial state breaks the roll-back): the write is refused and made once
// more, begun after the failure.
func TestStateSavedAgainAfterAnotherSyncFailed(t *testing.T) {
	dir := t.TempDir()
	if err := Save(nil, dir, State{State: Committed, Version: "1.0"}); err != nil {
		t.Fatal(err)
	}
	gates := syncgate.NewGates()
	gate, err := gates.For(dir)
	if err != nil {
		t.Fatal(err)
	}
	err = syncgatetest.FailMeanwhile(t, gate, filepath.Join(dir, "."+StateFile+".tmp-*"), func() error {
		return Save(gates, dir, State{State: Trial, Version: "2.0"})
	})
	if err != nil {
		t.Fatalf("Save while the spool's flush failed: %v, want it written again", err)
	}
	if st, _, err := Load(dir); err != nil || st.State != Trial || st.Version != "2.0" {
		t.Fatalf("state after the second write: %+v, %v", st, err)
	}
}

// An image written while the spool's flush fails may be gone from the card
// though its own fsync succeeds: it must not go on trial. The update is
// rejected with nothing changed and the command may come again.
func TestImageRejectedWhenAnotherSyncFailsDuringDownload(t *testing.T) {
	img := make([]byte, 256<<10)
	var relaunched bool
	r := newGatedDownload(t, img, 1<<20, func(string) { relaunched = true }, func(gate *syncgate.Gate) {
		// The spool's flush fails while half the image is in the cache.
		_ = gate.Sync(gate.Epoch(), func() error { return syscall.EIO })
	})
	m, raw, cfg := r.m, r.raw, r.cfg
	_, _, err := m.Update(context.Background(), "c1", raw)
	if err == nil || !strings.Contains(err.Error(), syncgate.ErrFailedSince.Error()) || !strings.Contains(err.Error(), "send the command again") {
		t.Fatalf("Update while the spool's flush failed: %v, want rejected, saying a sync failed meanwhile and to send it again", err)
	}
	if !strings.Contains(err.Error(), "download failed") {
		t.Errorf("Update while the spool's flush failed: %v, want the image's own sync refused (download failed), before it is checked and renamed", err)
	}
	if relaunched {
		t.Fatal("an image the card may have lost went on trial")
	}
	st, _, err := Load(cfg.Dir)
	if err != nil || st.State != Rejected {
		t.Fatalf("state after the refused image: %+v, %v; want rejected", st, err)
	}
	if ents, _ := os.ReadDir(cfg.Dir); len(ents) != 1 || ents[0].Name() != StateFile {
		t.Errorf("firmware.dir after the refused image: %v, want only %s", ents, StateFile)
	}
}

// gatedDownload is a firmware manager whose file system's sync gate the
// test holds, and the signed arguments of an update to img, served over
// HTTPS in two halves with midway run between them.
type gatedDownload struct {
	m    *Manager
	raw  []byte
	cfg  Config
	gate *syncgate.Gate
}

func newGatedDownload(t *testing.T, img []byte, maxBytes int64, relaunch func(string), midway func(*syncgate.Gate)) *gatedDownload {
	t.Helper()
	t.Setenv(EnvImage, "")
	signer, pub, err := trust.GenerateSigner()
	if err != nil {
		t.Fatal(err)
	}
	keys, _ := trust.ParseKeys([]string{pub})
	ca, _ := throwawayca.NewCA("fw unit CA")
	leaf, _ := ca.Issue("127.0.0.1", "127.0.0.1")
	dir := t.TempDir()
	gates := syncgate.NewGates()
	gate, err := gates.For(dir)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write(img[:len(img)/2])
		w.(http.Flusher).Flush()
		midway(gate)
		_, _ = w.Write(img[len(img)/2:])
	}))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{leaf.TLS}}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	caFile := filepath.Join(dir, "ca.pem")
	_ = os.WriteFile(caFile, ca.CertPEM, 0o644)
	cfg := Config{Dir: filepath.Join(dir, "fw"), CAFile: caFile, Trial: units.Duration(time.Minute), MaxBytes: units.Size(maxBytes)}
	m := New(Options{Config: cfg, Keys: keys, Version: "1.0", Gates: gates, Relaunch: relaunch,
		Snapshot: func() health.Snapshot { return health.NewRegistry("gw", "1", nil).Snapshot() }})
	sum := sha256.Sum256(img)
	raw, _ := json.Marshal(Args{URL: srv.URL + "/img", Version: "2.0", SHA256: hex.EncodeToString(sum[:]), Minisig: string(signer.Sign(img, "t"))})
	return &gatedDownload{m: m, raw: raw, cfg: cfg, gate: gate}
}
