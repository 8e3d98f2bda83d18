package firmware

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hl7edge/hl7edge/device/trust"
	"github.com/hl7edge/hl7edge/pipeline/throwawayca"
	"github.com/hl7edge/hl7edge/pipeline/vocab/health"
	"github.com/hl7edge/hl7edge/pipeline/vocab/units"
)

func quiet() *slog.Logger { return slog.New(slog.DiscardHandler) }

// TestLaunchSettles: what a stop left behind is settled at the next start
// without running anything: an interrupted download is rejected and its
// partial file removed; a trial image starting a second time is rolled back.
// (Starting an image is exercised end to end by cmd/hl7edge TestFirmwareUpdate.)
func TestLaunchSettles(t *testing.T) {
	t.Setenv(EnvImage, "")
	for _, phase := range []Phase{Downloading, Verifying} {
		dir := t.TempDir()
		if err := Save(nil, dir, State{State: phase, Version: "2.0"}); err != nil {
			t.Fatal(err)
		}
		partial := filepath.Join(dir, downloadPrefix+"2.0")
		if err := os.WriteFile(partial, []byte("half"), 0o640); err != nil {
			t.Fatal(err)
		}
		Launch(dir, "1.0", quiet())
		st, _, err := Load(dir)
		if err != nil || st.State != Rejected || !strings.Contains(st.Reason, "stopped while "+string(phase)) {
			t.Errorf("after a stop while %s: %+v %v, want rejected saying so", phase, st, err)
		}
		if _, err := os.Stat(partial); !os.IsNotExist(err) {
			t.Errorf("the partial download survived the start (%v)", err)
		}
	}

	dir := t.TempDir()
	img := filepath.Join(dir, imagePrefix+"2.0")
	if err := os.WriteFile(img, []byte("#!/bin/sh\n"), 0o750); err != nil {
		t.Fatal(err)
	}
	if err := Save(nil, dir, State{State: Trial, Version: "2.0", Image: imagePrefix + "2.0", Starts: 1, Trial: time.Minute, GoodVersion: "1.0"}); err != nil {
		t.Fatal(err)
	}
	Launch(dir, "1.0", quiet())
	st, _, _ := Load(dir)
	if st.State != RolledBack || !strings.Contains(st.Reason, "stopped during its trial") || st.Announced {
		t.Errorf("trial image starting again: %+v, want rolled back, not yet announced", st)
	}
	if _, err := os.Stat(img); !os.IsNotExist(err) {
		t.Errorf("the rolled-back image is still in firmware.dir (%v)", err)
	}

	// A package upgrade since the update: the installed binary runs, the
	// committed image is dropped rather than shadowing the newer package.
	img2 := filepath.Join(dir, imagePrefix+"2.0")
	if err := os.WriteFile(img2, []byte("#!/bin/sh\n"), 0o750); err != nil {
		t.Fatal(err)
	}
	if err := Save(nil, dir, State{State: Committed, Version: "2.0", Image: imagePrefix + "2.0", Good: imagePrefix + "2.0", GoodVersion: "2.0", Installed: "1.0"}); err != nil {
		t.Fatal(err)
	}
	Launch(dir, "1.1", quiet()) // returns: nothing to exec
	st, _, _ = Load(dir)
	if st.Good != "" || st.GoodVersion != "1.1" || !strings.Contains(st.Reason, "installed package changed from 1.0 to 1.1") {
		t.Errorf("after a package upgrade: %+v", st)
	}
	if _, err := os.Stat(img2); !os.IsNotExist(err) {
		t.Errorf("the image shadowing the upgraded package is still there (%v)", err)
	}

	// An image launched by the launcher never launches again.
	t.Setenv(EnvImage, "/somewhere/hl7edge-2.0")
	if err := Save(nil, dir, State{State: Downloading, Version: "3.0"}); err != nil {
		t.Fatal(err)
	}
	Launch(dir, "1.0", quiet())
	if st, _, _ := Load(dir); st.State != Downloading {
		t.Errorf("an image's own start settled the state (%s): only the launcher may", st.State)
	}
}

func TestTrialProblems(t *testing.T) {
	reg := health.NewRegistry("gw", "1", nil)
	reg.Component(health.Source, "in", "mllp").SetState(health.Up)
	reg.Component(health.Destination, "ehr", "webservice").SetState(health.Down)
	reg.Component(health.Service, "mqtt", "mqtt").SetState(health.Up)
	before := upComponents(reg.Snapshot())
	if strings.Join(before, ",") != "source in,service mqtt" {
		t.Fatalf("up before: %v", before)
	}
	if p := trialProblems(before, reg.Snapshot()); len(p) != 0 {
		t.Errorf("same health: problems %v", p)
	}
	reg.Component(health.Source, "in", "mllp").SetState(health.Down)
	if p := trialProblems(before, reg.Snapshot()); len(p) != 1 || p[0] != "source in is not up" {
		t.Errorf("source down: problems %v", p)
	}
}

func TestConfig(t *testing.T) {
	var c Config
	c.SetDefaults("/var/lib/hl7edge")
	if c.Dir != "/var/lib/hl7edge/firmware" || c.Trial.D() != DefaultTrial || c.MaxBytes != DefaultMaxBytes || c.Validate() != nil {
		t.Errorf("defaults %+v: %v", c, c.Validate())
	}
	c.Trial = units.Duration(time.Millisecond)
	c.MaxBytes = 10
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "trial") || !strings.Contains(err.Error(), "max_bytes") {
		t.Errorf("bad values: %v", err)
	}
}

// TestUpdateRefusals: arguments, trust and TLS are checked before anything
// changes; an oversized image is cut off at max_bytes; an untrusted server
// certificate is refused. Each leaves the running version's state.
func TestUpdateRefusals(t *testing.T) {
	t.Setenv(EnvImage, "")
	signer, pub, err := trust.GenerateSigner()
	if err != nil {
		t.Fatal(err)
	}
	keys, _ := trust.ParseKeys([]string{pub})
	ca, _ := throwawayca.NewCA("fw unit CA")
	leaf, _ := ca.Issue("127.0.0.1", "127.0.0.1")
	big := make([]byte, 2<<20)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Length", "") // no length: the limit must cut the body
		w.Header().Del("Content-Length")
		_, _ = w.Write(big)
	}))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{leaf.TLS}}
	srv.StartTLS()
	defer srv.Close()
	dir := t.TempDir()
	caFile := filepath.Join(dir, "ca.pem")
	_ = os.WriteFile(caFile, ca.CertPEM, 0o644)
	cfg := Config{Dir: filepath.Join(dir, "fw"), CAFile: caFile, Trial: units.Duration(time.Minute), MaxBytes: 1 << 20}
	snap := func() health.Snapshot { return health.NewRegistry("gw", "1", nil).Snapshot() }
	relaunched := false
	m := New(Options{Config: cfg, Keys: keys, Version: "1.0", Snapshot: snap, Relaunch: func(string) { relaunched = true }})
	sum := sha256.Sum256(big)
	good := Args{URL: srv.URL + "/img", Version: "2.0", SHA256: hex.EncodeToString(sum[:]), Minisig: string(signer.Sign(big, "t"))}
	call := func(m *Manager, a Args) error {
		raw, _ := json.Marshal(a)
		_, _, err := m.Update(context.Background(), "c1", raw)
		return err
	}
	cases := []struct {
		what string
		m    *Manager
		args Args
		want string
	}{
		{"http URL", m, func() Args { a := good; a.URL = "http://127.0.0.1/img"; return a }(), "https"},
		{"bad version", m, func() Args { a := good; a.Version = "../x"; return a }(), "version"},
		{"bad sha256", m, func() Args { a := good; a.SHA256 = "xyz"; return a }(), "sha256"},
		{"running version", m, func() Args { a := good; a.Version = "1.0"; return a }(), "already running"},
		{"no keys", New(Options{Config: cfg, Version: "1.0", Snapshot: snap}), good, "no trust.keys"},
		{"over max_bytes", m, good, "max_bytes"},
		{"untrusted server", New(Options{Config: Config{Dir: cfg.Dir, Trial: cfg.Trial, MaxBytes: 4 << 20}, Keys: keys, Version: "1.0", Snapshot: snap}), good, "certificate"},
	}
	for _, c := range cases {
		if err := call(c.m, c.args); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want an error containing %q", c.what, err, c.want)
		}
	}
	if relaunched {
		t.Errorf("a refused update asked for a relaunch")
	}
	if ents, _ := os.ReadDir(cfg.Dir); len(ents) != 1 || ents[0].Name() != StateFile {
		t.Errorf("firmware.dir after refusals: %v, want only %s", ents, StateFile)
	}
	// With the limit above the image and the CA trusted, it goes to trial.
	m2 := New(Options{Config: Config{Dir: cfg.Dir, CAFile: caFile, Trial: cfg.Trial, MaxBytes: 4 << 20}, Keys: keys, Version: "1.0", Snapshot: snap,
		Relaunch: func(string) { relaunched = true }})
	if err := call(m2, good); err != nil || !relaunched {
		t.Fatalf("good update: %v (relaunch %v)", err, relaunched)
	}
	st, _, _ := Load(cfg.Dir)
	if st.State != Trial || st.Starts != 0 || st.Good != "" || st.GoodVersion != "1.0" || st.Previous != "1.0" {
		t.Errorf("state after a good update: %+v", st)
	}
	if fi, err := os.Stat(filepath.Join(cfg.Dir, st.Image)); err != nil || fi.Mode().Perm()&0o100 == 0 || fi.Size() != int64(len(big)) {
		t.Errorf("staged image: %v %v", fi, err)
	}
	if err := call(m2, good); err == nil || !strings.Contains(err.Error(), "wait for it") {
		t.Errorf("a second update during the trial: %v, want refused", err)
	}
}

// TestTrialOutcome: the image on trial commits itself when what was up
// before is up at the end, and rolls back and asks for a relaunch when not;
// the next run announces the roll-back once.
func TestTrialOutcome(t *testing.T) {
	for _, healthy := range []bool{true, false} {
		dir := t.TempDir()
		img := imagePrefix + "2.0"
		if err := os.WriteFile(filepath.Join(dir, img), []byte("x"), 0o750); err != nil {
			t.Fatal(err)
		}
		t.Setenv(EnvImage, filepath.Join(dir, img))
		if err := Save(nil, dir, State{State: Trial, Version: "2.0", Previous: "1.0", Image: img, Starts: 1, Trial: 50 * time.Millisecond,
			TrialEnds: time.Now().Add(50 * time.Millisecond), Before: []string{"source in"}, GoodVersion: "1.0"}); err != nil {
			t.Fatal(err)
		}
		reg := health.NewRegistry("gw", "2.0", nil)
		state := health.Up
		if !healthy {
			state = health.Down
		}
		reg.Component(health.Source, "in", "mllp").SetState(state)
		var alarms []string
		var published []Phase
		relaunched := false
		m := New(Options{Config: Config{Dir: dir, Trial: units.Duration(time.Second), MaxBytes: DefaultMaxBytes}, Version: "2.0", Snapshot: reg.Snapshot,
			Alarm:    func(kind, _ string) { alarms = append(alarms, kind) },
			Publish:  func(p Public) { published = append(published, p.State) },
			Relaunch: func(string) { relaunched = true }})
		if err := m.Run(context.Background()); err != nil {
			t.Fatal(err)
		}
		st, _, _ := Load(dir)
		if healthy {
			if st.State != Committed || st.Good != img || relaunched || len(alarms) != 1 || alarms[0] != AlarmFirmwareCommitted {
				t.Errorf("healthy trial: state %+v, relaunch %v, alarms %v", st, relaunched, alarms)
			}
			continue
		}
		if st.State != RolledBack || !strings.Contains(st.Reason, "source in is not up") || !relaunched || len(alarms) != 0 {
			t.Errorf("unhealthy trial: state %+v, relaunch %v, alarms %v", st, relaunched, alarms)
		}
		if published[len(published)-1] != RolledBack {
			t.Errorf("published %v, want rolled_back last", published)
		}
		// The next version's run announces it, once.
		t.Setenv(EnvImage, "")
		for range 2 {
			_ = New(Options{Config: Config{Dir: dir}, Version: "1.0", Snapshot: reg.Snapshot,
				Alarm: func(kind, _ string) { alarms = append(alarms, kind) }}).Run(context.Background())
		}
		if len(alarms) != 1 || alarms[0] != AlarmFirmwareRolledBack {
			t.Errorf("alarms after two runs of the previous version: %v, want one firmware_rolled_back", alarms)
		}
	}
}
