package powercut

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/hl7edge/hl7edge/storage"
)

// TestProbeMarkReachesTheCommitLog: what the EIO faults match of a probe
// (probeMark) is in the bytes the spool writes to its commit log for it,
// though the log compresses its records and the probe shares its group
// commit with the load's lab results and notes; and nowhere else there.
// The rig's EIO targeting rests on it. One probe in 40 may lose its mark:
// the rig then marks the next one (armAndProbe); about one in 40,000 did
// when this was written.
func TestProbeMarkReachesTheCommitLog(t *testing.T) {
	cfg := storage.Config{Dir: t.TempDir()}
	cfg.SetDefaults()
	s, err := storage.Open(cfg, storage.Options{Destinations: []string{"ehr"}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for conn := 1; conn <= 3; conn++ {
		wg.Go(func() {
			for n := 1; ctx.Err() == nil; n++ {
				if n%largeEvery != 0 { // no reports: the value log has them
					id, msg := message(conn, n)
					spoolOne(ctx, t, s, id, msg)
				}
			}
		})
	}
	const probes = 40
	for n := 1; n <= probes; n++ {
		id, msg := probe(n)
		spoolOne(context.Background(), t, s, id, msg)
	}
	cancel()
	wg.Wait()
	clog := commitLogBytes(t, filepath.Join(cfg.Dir, "commitlog"))
	lost, ids := 0, 0
	for n := 1; n <= probes; n++ {
		if id, _ := probe(n); bytes.Contains(clog, []byte(id)) {
			ids++
		}
		switch m := probeMark(n); bytes.Count(clog, m) {
		case 1:
		case 0:
			lost++
			t.Logf("probe %d: its mark %q is not in the commit log's writes", n, m)
		default:
			t.Errorf("probe %d: its mark %q is %d times in the commit log's writes, want once", n, m, bytes.Count(clog, m))
		}
	}
	t.Logf("%d of %d probes' control IDs are in the commit log's writes whole (compression takes the rest)", ids, probes)
	if lost > 1 {
		t.Errorf("%d of %d probes' marks are not in the commit log's writes, want at most 1", lost, probes)
	}
}

// spoolOne appends one message as the gateway's intake would.
func spoolOne(ctx context.Context, t *testing.T, s *storage.Spool, id string, msg []byte) {
	_, err := s.Append(ctx, storage.Entry{Source: "mllp-in", Raw: msg, Dests: []string{"ehr"}, ControlID: id, Type: "ORU^R01"})
	if err != nil && ctx.Err() == nil {
		t.Errorf("%s: %v", id, err)
	}
}

// commitLogBytes is every segment file of the commit log in dir, end to
// end.
func commitLogBytes(t *testing.T, dir string) []byte {
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var all []byte
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, b...)
	}
	return all
}
