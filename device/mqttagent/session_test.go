package mqttagent

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/hl7edge/hl7edge/storage/syncgate"
	"github.com/hl7edge/hl7edge/storage/syncgate/syncgatetest"
)

func TestSessionCounter(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	p := filepath.Join(dir, "mqtt.session")
	for want := uint64(1); want <= 3; want++ {
		got, err := nextSession(nil, p)
		if err != nil || got != want {
			t.Fatalf("nextSession = %d, %v; want %d", got, err, want)
		}
	}
	if b, _ := os.ReadFile(p); string(b) != "3\n" {
		t.Fatalf("file holds %q", b)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Fatalf("temporary files left behind: %v", entries)
	}

	if err := os.WriteFile(p, []byte("garbage\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := nextSession(nil, p)
	if err == nil || !strings.Contains(err.Error(), p) || !strings.Contains(err.Error(), "remove it") {
		t.Fatalf("corrupt file: %v", err)
	}
	if b, _ := os.ReadFile(p); string(b) != "garbage\n" {
		t.Fatal("a corrupt session file was overwritten")
	}

	if _, err := nextSession(nil, filepath.Join(dir, "missing-dir", "s")); err == nil {
		t.Fatal("a session file in a missing directory gave no error")
	}
}

func FuzzParseSession(f *testing.F) {
	for _, s := range []string{"1\n", "0", "18446744073709551615", "18446744073709551616", "-1", " 7 \n", "", "x", "1e3"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		n, err := parseSession(b)
		if err != nil {
			if len(err.Error()) > 120 {
				t.Fatalf("error is %d bytes: it must clip what it quotes", len(err.Error()))
			}
			return
		}
		back, err := parseSession([]byte(strconv.FormatUint(n, 10) + "\n"))
		if err != nil || back != n {
			t.Fatalf("%d does not round-trip: %d, %v", n, back, err)
		}
	})
}

// The session file lives beside the spool. When the spool's flush fails
// while the new counter is written, the card may have dropped it: the
// write is refused and made once more, so the agent starts with a counter
// the card holds, one above the last.
func TestSessionCounterWrittenAgainAfterAnotherSyncFailed(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	p := filepath.Join(dir, "mqtt.session")
	if err := os.WriteFile(p, []byte("41\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	gates := syncgate.NewGates()
	gate, err := gates.For(dir)
	if err != nil {
		t.Fatal(err)
	}
	var n uint64
	err = syncgatetest.FailMeanwhile(t, gate, filepath.Join(dir, ".mqtt.session.tmp-*"), func() (err error) {
		n, err = nextSession(gates, p)
		return err
	})
	if err != nil || n != 42 {
		t.Fatalf("nextSession while the spool's flush failed = %d, %v; want 42, written again after the failure", n, err)
	}
	if b, _ := os.ReadFile(p); string(b) != "42\n" {
		t.Fatalf("file holds %q, want 42", b)
	}
}
