package storage

import (
	"context"
	"fmt"
	"strings"
	"testing"
)

// TestUndeliverableRetryAndPurge: messages that matched no destination are
// routed again by the rules of the moment and queued under their GUIDs;
// those that still match nothing stay; purge deletes them. The counts hold
// across a reopen (issue 28, point 4).
func TestUndeliverableRetryAndPurge(t *testing.T) {
	dir := t.TempDir()
	cfg := Config{Dir: dir, MaxBytes: 64 << 20, SegmentMessages: 64}
	sp, err := Open(cfg, Options{Destinations: []string{"lis"}})
	if err != nil {
		t.Fatal(err)
	}
	var guids []string
	for i, typ := range []string{"ORU", "ADT", "ORU", "ZZZ"} {
		r, err := sp.Append(context.Background(), Entry{Source: "lab", Raw: fmt.Appendf(nil, "MSH|^~\\&|A|B|C|D|1||%s^R01|U%d|P|2.5\r", typ, i)})
		if err != nil || !r.Undeliverable {
			t.Fatalf("append %d: %+v %v", i, r, err)
		}
		guids = append(guids, r.GUID)
	}
	route := func(raw []byte) ([]string, bool) {
		switch {
		case strings.Contains(string(raw), "|ORU^"):
			return []string{"lis"}, false
		case strings.Contains(string(raw), "|ADT^"):
			return nil, true // a rubbish bin takes it now
		}
		return nil, false
	}
	got, err := sp.RetryUndeliverable(route)
	if err != nil || got.Queued != 2 || got.Discarded != 1 || got.Unmatched != 1 {
		t.Fatalf("RetryUndeliverable: %+v, %v; want 2 queued, 1 discarded, 1 unmatched", got, err)
	}
	q, err := sp.Next("lis", 0, 10)
	if err != nil || len(q) != 2 || q[0].GUID != guids[0] || q[1].GUID != guids[2] {
		t.Fatalf("lis queue after the retry: %+v (%v), want %s and %s", q, err, guids[0], guids[2])
	}
	left, err := sp.Undeliverable(10)
	if err != nil || len(left) != 1 || left[0].GUID != guids[3] || sp.Stats().Undeliverable != 1 {
		t.Fatalf("undeliverable after the retry: %+v (%v), count %d; want %s alone", left, err, sp.Stats().Undeliverable, guids[3])
	}
	if n, err := sp.PurgeUndeliverable("not-a-guid"); err != nil || n != 0 {
		t.Errorf("purge of an unknown GUID: %d, %v", n, err)
	}
	if n, err := sp.PurgeUndeliverable(guids[3]); err != nil || n != 1 {
		t.Fatalf("purge: %d, %v", n, err)
	}
	if err := sp.Close(); err != nil {
		t.Fatal(err)
	}
	sp, err = Open(cfg, Options{Destinations: []string{"lis"}})
	if err != nil {
		t.Fatal(err)
	}
	defer sp.Close()
	if st := sp.Stats(); st.Undeliverable != 0 || st.Destinations["lis"].Queued != 2 {
		t.Errorf("after reopening: undeliverable %d, lis queued %d; want 0 and 2", st.Undeliverable, st.Destinations["lis"].Queued)
	}
}
