package storage

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"github.com/hl7edge/hl7edge/storage/commitlog"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hl7edge/hl7edge/pipeline/logtest"
)

func openTest(t *testing.T, dir string, dests ...string) *Spool {
	t.Helper()
	s, err := Open(Config{Dir: dir, MaxBytes: 64 << 20, SegmentMessages: 64}, Options{Destinations: dests, GCInterval: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func msg(i int) []byte {
	return fmt.Appendf(nil, "MSH|^~\\&|LAB|WARD|EHR|HOSP|20260101120000||ORU^R01|C%06d|P|2.5.1\rOBX|1|NM|GLU||%d\r", i, i)
}

func TestAppendNextDeliveredSurvivesReopen(t *testing.T) {
	dir := t.TempDir()
	s := openTest(t, dir, "a", "b")
	ctx := context.Background()
	var guids []string
	for i := range 10 {
		r, err := s.Append(ctx, Entry{Source: "src", Raw: msg(i), Dests: []string{"a", "b"}})
		if err != nil {
			t.Fatal(err)
		}
		guids = append(guids, r.GUID)
	}
	ms, err := s.Next("a", 0, 100)
	if err != nil || len(ms) != 10 {
		t.Fatalf("next a: %d messages, err %v", len(ms), err)
	}
	for i, m := range ms {
		if string(m.Raw) != string(msg(i)) || m.GUID != guids[i] || m.Source != "src" {
			t.Fatalf("message %d: got guid %s raw %q", i, m.GUID, m.Raw)
		}
	}
	for _, m := range ms[:4] {
		if err := s.Delivered("a", m.Seq); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s = openTest(t, dir, "a", "b")
	defer s.Close()
	st := s.Stats()
	if st.Destinations["a"].Queued != 6 || st.Destinations["b"].Queued != 10 || st.Destinations["a"].Delivered != 4 {
		t.Fatalf("after reopen: %+v", st.Destinations)
	}
	ms, _ = s.Next("a", 0, 100)
	if len(ms) != 6 || ms[0].GUID != guids[4] {
		t.Fatalf("after reopen a resumes at %v, want guid %s", ms[0].GUID, guids[4])
	}
	r, err := s.Append(ctx, Entry{Source: "src", Raw: msg(99), Dests: []string{"a"}})
	if err != nil || r.Seq != 11 {
		t.Fatalf("sequence after reopen: %d (%v), want 11", r.Seq, err)
	}
}

func TestGroupCommitSharesFsyncs(t *testing.T) {
	s := openTest(t, t.TempDir(), "a")
	defer s.Close()
	var wg sync.WaitGroup
	const writers, each = 16, 50
	for w := range writers {
		wg.Go(func() {
			for i := range each {
				if _, err := s.Append(context.Background(), Entry{Source: "s", Raw: msg(w*1000 + i), Dests: []string{"a"}}); err != nil {
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()
	st := s.Stats()
	if st.Appended != writers*each {
		t.Fatalf("appended %d", st.Appended)
	}
	if st.Commits >= st.Appended {
		t.Fatalf("%d commits for %d messages from %d concurrent writers: no grouping", st.Commits, st.Appended, writers)
	}
	t.Logf("%d messages in %d group commits (%.2f fsyncs/message)", st.Appended, st.Commits, float64(st.Commits)/float64(st.Appended))
}

func TestQuotaRefusesThenAcceptsAfterDrain(t *testing.T) {
	s, err := Open(Config{Dir: t.TempDir(), MaxBytes: 16 << 20, SegmentMessages: 16}, Options{Destinations: []string{"a"}, GCInterval: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	big := make([]byte, 512<<10)
	ctx := context.Background()
	n, lastRoomy := 0, -1
	for ; n < 100; n++ {
		var r Result
		r, err = s.Append(ctx, Entry{Source: "s", Raw: big, Dests: []string{"a"}})
		if err != nil {
			break
		}
		if r.Headroom {
			lastRoomy = n
		}
	}
	if !errors.Is(err, ErrFull) || n < 20 || n > 32 {
		t.Fatalf("after %d messages: %v, want ErrFull near 16MiB", n, err)
	}
	// Headroom ends at the low-water mark, 90% of 16 MiB: message 28 of
	// 512 KiB (0-based 27) is the last one at or below it.
	if lastRoomy < 0 || int64(lastRoomy+1)*(512<<10+128) > 16<<20*9/10 || int64(lastRoomy+2)*(512<<10+128) <= 16<<20*9/10 {
		t.Errorf("last write with headroom was message %d of %d; want the last one at or below 90%% of max_bytes", lastRoomy, n)
	}
	// Drain everything: whole segments go, the quota frees up.
	ms, _ := s.Next("a", 0, 1000)
	for len(ms) > 0 {
		for _, m := range ms {
			if err := s.Delivered("a", m.Seq); err != nil {
				t.Fatal(err)
			}
		}
		ms, _ = s.Next("a", ms[len(ms)-1].Seq, 1000)
	}
	// One more message moves writing to a new segment, so the old ones can go.
	deadline := time.Now().Add(10 * time.Second)
	for {
		var r Result
		r, err = s.Append(ctx, Entry{Source: "s", Raw: big, Dests: []string{"a"}})
		if err == nil {
			if !r.Headroom {
				t.Errorf("first write after draining everything has no headroom (stats %+v)", s.Stats())
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("spool still full after draining: %v (stats %+v)", err, s.Stats())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestRemoteIDStoredOnce(t *testing.T) {
	s := openTest(t, t.TempDir(), "a")
	defer s.Close()
	ctx := context.Background()
	r1, err := s.Append(ctx, Entry{Source: "pull", Raw: msg(1), Dests: []string{"a"}, RemoteID: "A1"})
	if err != nil || r1.Duplicate {
		t.Fatal(r1, err)
	}
	r2, err := s.Append(ctx, Entry{Source: "pull", Raw: msg(1), Dests: []string{"a"}, RemoteID: "A1"})
	if err != nil || !r2.Duplicate || r2.GUID != r1.GUID {
		t.Fatalf("second offer: %+v %v", r2, err)
	}
	if q := s.Stats().Destinations["a"].Queued; q != 1 {
		t.Fatalf("queued %d, want 1", q)
	}
}

func TestDeadLettersKillRetryPurge(t *testing.T) {
	s := openTest(t, t.TempDir(), "a")
	defer s.Close()
	ctx := context.Background()
	for i := range 3 {
		if _, err := s.Append(ctx, Entry{Source: "s", Raw: msg(i), Dests: []string{"a"}}); err != nil {
			t.Fatal(err)
		}
	}
	ms, _ := s.Next("a", 0, 10)
	if err := s.Kill("a", ms[0].Seq, "receiver said AR", 5); err != nil {
		t.Fatal(err)
	}
	if err := s.Kill("a", ms[1].Seq, "receiver said AR", 5); err != nil {
		t.Fatal(err)
	}
	dl, _ := s.DeadLetters("a")
	if len(dl) != 2 || dl[0].Reason != "receiver said AR" || dl[0].Attempts != 5 {
		t.Fatalf("dead letters %+v", dl)
	}
	n, err := s.RetryDead("a", dl[0].GUID)
	if err != nil || n != 1 {
		t.Fatal(n, err)
	}
	ms2, _ := s.Next("a", 0, 10)
	if len(ms2) != 2 || ms2[0].GUID != ms[2].GUID || ms2[1].GUID != dl[0].GUID {
		t.Fatalf("after retry queue is %v; want the retried message last with its old GUID", ms2)
	}
	if n, err := s.PurgeDead("a"); err != nil || n != 1 {
		t.Fatal(n, err)
	}
	st := s.Stats().Destinations["a"]
	if st.Dead != 0 || st.Queued != 2 {
		t.Fatalf("stats %+v", st)
	}
}

func TestUndeliverableKept(t *testing.T) {
	s := openTest(t, t.TempDir(), "a")
	defer s.Close()
	r, err := s.Append(context.Background(), Entry{Source: "s", Raw: msg(1)})
	if err != nil || !r.Undeliverable {
		t.Fatal(r, err)
	}
	u, _ := s.Undeliverable(10)
	head, _, _ := bytes.Cut(msg(1), []byte("\r"))
	if len(u) != 1 || string(u[0].Raw) != string(head) || s.Stats().Undeliverable != 1 {
		t.Fatalf("undeliverable %v", u)
	}
}

func TestEncryptionAtRest(t *testing.T) {
	dir := t.TempDir()
	keyFile := filepath.Join(t.TempDir(), "key")
	if err := os.WriteFile(keyFile, []byte("0123456789abcdef0123456789abcdef"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := Config{Dir: dir, MaxBytes: 64 << 20, EncryptionKeyFile: keyFile}
	s, err := Open(cfg, Options{Destinations: []string{"a"}})
	if err != nil {
		t.Fatal(err)
	}
	secret := []byte("MSH|^~\\&|A|B|C|D|20260101||ADT^A01|X1|P|2.5\rPID|||PATIENTSECRET123\r")
	if _, err := s.Append(context.Background(), Entry{Source: "s", Raw: secret, Dests: []string{"a"}}); err != nil {
		t.Fatal(err)
	}
	s.Close()
	_ = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, _ := os.ReadFile(p)
		if containsBytes(b, []byte("PATIENTSECRET123")) {
			t.Errorf("plain text patient data found in %s", p)
		}
		return nil
	})
	if err := os.WriteFile(keyFile, []byte("ffffffffffffffffffffffffffffffff"), 0o600); err != nil {
		t.Fatal(err)
	}
	if s, err := Open(cfg, Options{}); err == nil {
		s.Close()
		t.Fatal("opened an encrypted spool with the wrong key")
	}
	if err := os.WriteFile(keyFile, []byte("short"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(cfg, Options{}); err == nil || !contains(err.Error(), "16, 24 or 32") {
		t.Fatalf("bad key length: %v", err)
	}
}

func TestSecondProcessRefused(t *testing.T) {
	dir := t.TempDir()
	s := openTest(t, dir, "a")
	defer s.Close()
	if s2, err := Open(Config{Dir: dir, MaxBytes: 64 << 20}, Options{}); err == nil {
		s2.Close()
		t.Fatal("a second open of the same spool succeeded")
	} else if !contains(err.Error(), "only one process") {
		t.Fatalf("error does not say what to do: %v", err)
	}
}

// TestDiskStaysFlat pushes 200,000 messages through and checks that the
// directory (blocks actually allocated) stays under 32 MiB.
func TestDiskStaysFlat(t *testing.T) {
	if raceEnabled {
		t.Skip("volume test: run without -race (make test does)")
	}
	total := 200_000
	if testing.Short() {
		total = 20_000
	}
	dir := t.TempDir()
	// Retention and traces on, at small bounds: what they keep is bounded
	// and the disk must stay flat with them.
	retain := time.Hour
	s, err := Open(Config{Dir: dir, MaxBytes: 1 << 30, Retain: &retain, RetainMaxBytes: 4 << 20, TraceMaxBytes: 4 << 20},
		Options{Destinations: []string{"a"}, GCInterval: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	body := make([]byte, 1024)
	for i := range body {
		body[i] = 'A' + byte(i%26)
	}
	var peak, peakOver int64
	var wg sync.WaitGroup
	const writers = 16
	var delivered uint64
	done := make(chan struct{})
	wg.Go(func() {
		var after uint64
		for {
			ms, err := s.Next("a", after, 256)
			if err != nil {
				t.Error(err)
				return
			}
			if len(ms) == 0 {
				select {
				case <-s.Wait("a"):
				case <-done:
					return
				case <-time.After(50 * time.Millisecond):
				}
				continue
			}
			for _, m := range ms {
				if err := s.Delivered("a", m.Seq); err != nil {
					t.Error(err)
					return
				}
				after = m.Seq
				delivered++
			}
		}
	})
	var swg sync.WaitGroup
	for w := range writers {
		swg.Go(func() {
			for i := w; i < total; i += writers {
				raw := append(fmt.Appendf(nil, "MSH|^~\\&|A|B|C|D|20260101||ORU^R01|%d|P|2.5\rOBX|1|TX|||", i), body...)
				if _, err := s.Append(ctx, Entry{Source: "s", Raw: raw, Dests: []string{"a"}}); err != nil {
					t.Error(err)
					return
				}
				if i%20000 == 0 {
					// What the spool holds at the moment is not garbage:
					// its own count of the segments not yet dropped, and
					// each queued message's keys in the tables (queue
					// entry, pointer, trace header, control-ID index:
					// about 256 bytes). How deep the queue runs depends on
					// the machine's speed.
					b := dirBlocks(dir)
					peak = max(peak, b)
					st := s.Stats()
					peakOver = max(peakOver, b-st.Bytes-256*st.Destinations["a"].Queued)
				}
			}
		})
	}
	swg.Wait()
	deadline := time.Now().Add(60 * time.Second)
	for s.Stats().Destinations["a"].Queued > 0 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	close(done)
	wg.Wait()
	// Let the clean-up drop the last closed segments.
	_, _ = s.Append(ctx, Entry{Source: "s", Raw: msg(0), Dests: []string{"a"}})
	time.Sleep(500 * time.Millisecond)
	end := dirBlocks(dir)
	st := s.Stats()
	t.Logf("%d messages of ~1.1 KiB in and delivered (%d); spool dir peak %.1f MiB, end %.1f MiB; retained %d messages (%.1f MiB), traces %.1f MiB",
		total, delivered, float64(peak)/(1<<20), float64(end)/(1<<20), st.RetainedMessages, float64(st.RetainedBytes)/(1<<20), float64(st.TraceBytes)/(1<<20))
	if delivered != uint64(total) {
		t.Fatalf("delivered %d of %d", delivered, total)
	}
	// The commit log's segment files are made once and reused: a fixed
	// amount beside Badger's files, bounded on its own.
	clog := dirBlocks(filepath.Join(dir, commitLogDir))
	t.Logf("of which the commit log %.1f MiB (%d checkpoints)", float64(clog)/(1<<20), s.checkpoints)
	if clog > (maxLiveSegments+3)*commitlog.DefaultSegmentSize {
		t.Fatalf("commit log holds %.1f MiB: its segment files are not reused", float64(clog)/(1<<20))
	}
	// Beside the commit log and the messages still queued, the spool's
	// files are bounded (garbage the value log's clean-up has not reached,
	// memtable logs, tables): with 220 MB through, at most 32 MiB.
	t.Logf("peak beyond what the spool counts %.1f MiB", float64(peakOver)/(1<<20))
	if end-clog > 32<<20 || peakOver-clog > 32<<20 {
		t.Fatalf("spool directory grew to %.1f MiB (peak %.1f, %.1f beyond what it counts) besides the commit log's %.1f: disk is not flat", float64(end)/(1<<20), float64(peak)/(1<<20), float64(peakOver)/(1<<20), float64(clog)/(1<<20))
	}
}

// dirBlocks is the space the directory really occupies (sparse files count
// only what is allocated), as du would report.
func dirBlocks(dir string) int64 {
	var n int64
	_ = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return nil
		}
		var st syscall.Stat_t
		if syscall.Stat(p, &st) == nil {
			n += st.Blocks * 512
		}
		return nil
	})
	return n
}

func contains(s, sub string) bool { return containsBytes([]byte(s), []byte(sub)) }

func containsBytes(b, sub []byte) bool {
	for i := 0; i+len(sub) <= len(b); i++ {
		if string(b[i:i+len(sub)]) == string(sub) {
			return true
		}
	}
	return false
}

// TestLargeMessageRoundTrip: messages over the inline threshold go to
// Badger's value log and must come back byte for byte after a reopen.
func TestLargeMessageRoundTrip(t *testing.T) {
	dir := t.TempDir()
	s := openTest(t, dir, "a")
	big := make([]byte, 900<<10)
	for i := range big {
		big[i] = byte('A' + i%26)
	}
	if _, err := s.Append(context.Background(), Entry{Source: "s", Raw: big, Dests: []string{"a"}}); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s = openTest(t, dir, "a")
	defer s.Close()
	ms, err := s.Next("a", 0, 10)
	if err != nil || len(ms) != 1 || string(ms[0].Raw) != string(big) {
		t.Fatalf("read back %d messages (%v)", len(ms), err)
	}
}

// TestFullDeliveredOpenSegmentIsFreed: a spool filled to its quota inside
// one segment, then fully delivered, must accept messages again without a
// restart (the open segment is closed so clean-up can drop it).
func TestFullDeliveredOpenSegmentIsFreed(t *testing.T) {
	s, err := Open(Config{Dir: t.TempDir(), MaxBytes: 16 << 20}, Options{Destinations: []string{"a"}, GCInterval: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	body := make([]byte, 96<<10)
	for {
		if _, err := s.Append(ctx, Entry{Source: "s", Raw: body, Dests: []string{"a"}}); err != nil {
			if !errors.Is(err, ErrFull) {
				t.Fatal(err)
			}
			break
		}
	}
	var after uint64
	for {
		ms, _ := s.Next("a", after, 1000)
		if len(ms) == 0 {
			break
		}
		for _, m := range ms {
			if err := s.Delivered("a", m.Seq); err != nil {
				t.Fatal(err)
			}
			after = m.Seq
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, err := s.Append(ctx, Entry{Source: "s", Raw: body, Dests: []string{"a"}})
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("spool still refuses after everything was delivered: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestOpensAfterKillBetweenMemtableCreateAndSize: Badger leaves an empty
// .mem file when killed between creating and sizing it; the spool must still
// open, with its data.
func TestOpensAfterKillBetweenMemtableCreateAndSize(t *testing.T) {
	dir := t.TempDir()
	s := openTest(t, dir, "a")
	if _, err := s.Append(context.Background(), Entry{Source: "s", Raw: msg(1), Dests: []string{"a"}}); err != nil {
		t.Fatal(err)
	}
	s.Close()
	if err := os.WriteFile(filepath.Join(dir, "00099.mem"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	s = openTest(t, dir, "a")
	defer s.Close()
	if ms, _ := s.Next("a", 0, 10); len(ms) != 1 {
		t.Fatalf("%d messages after reopen, want 1", len(ms))
	}
}

// A spool recovered after a cut or an outage says, in one line at open, how
// many messages wait for each destination; health carries the same figure.
func TestOpenLogsBacklogPerDestination(t *testing.T) {
	dir := t.TempDir()
	s := openTest(t, dir, "archive", "ehr")
	ctx := context.Background()
	for i := range 7 {
		dests := []string{"archive", "ehr"}
		if i >= 3 {
			dests = dests[1:]
		}
		if _, err := s.Append(ctx, Entry{Source: "src", Raw: msg(i), Dests: dests}); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	var logs logtest.Buffer
	s, err := Open(Config{Dir: dir, MaxBytes: 64 << 20, SegmentMessages: 64},
		Options{Destinations: []string{"archive", "ehr"}, Log: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var line string
	for l := range strings.Lines(logs.String()) {
		if strings.Contains(l, `msg="spool opened"`) {
			line = l
		}
	}
	for _, want := range []string{"waiting=10", "queued.archive=3", "queued.ehr=7", "dead_letters=0"} {
		if !strings.Contains(line, want) {
			t.Fatalf("open logged %q, want %s in a \"spool opened\" line", logs.String(), want)
		}
	}
	if strings.Contains(logs.String(), "GLU") || strings.Contains(logs.String(), "C000001") {
		t.Fatalf("the backlog line carries message content: %q", line)
	}
	h := s.Stats().Destinations
	if h["archive"].QueuedAtStart != 3 || h["ehr"].QueuedAtStart != 7 {
		t.Fatalf("queued_at_start: %+v", h)
	}
	ms, _ := s.Next("ehr", 0, 100)
	for _, m := range ms {
		if err := s.Delivered("ehr", m.Seq); err != nil {
			t.Fatal(err)
		}
	}
	if st := s.Stats().Destinations["ehr"]; st.Queued != 0 || st.QueuedAtStart != 7 {
		t.Fatalf("after draining ehr: %+v, want queued 0 and queued_at_start 7", st)
	}
}

// The largest message the spool stores fits a value-log file with its
// record's other fields at their largest in practice: many destinations
// with the longest names, and a receiver's long error text as the reason
// it is dead. Badger would refuse a bigger value with its content in the error.
func TestTheLargestMessageWithManyDestinationsGoesToTheDeadLetters(t *testing.T) {
	var dests []string
	for i := range 64 {
		dests = append(dests, fmt.Sprintf("%02d", i)+strings.Repeat("d", 61))
	}
	s := openTest(t, t.TempDir(), dests...)
	defer s.Close()
	raw := append(msg(1), make([]byte, MaxStoredMessage-len(msg(1)))...)
	r, err := s.Append(context.Background(), Entry{Source: strings.Repeat("s", 63), Raw: raw, Dests: dests})
	if err != nil {
		t.Fatalf("Append of %d bytes to %d destinations: %v", len(raw), len(dests), err)
	}
	reason := "AR: " + strings.Repeat("the receiver said far too much. ", 1<<15) // 1 MiB
	if err := s.Kill(dests[0], r.Seq, reason, 3); err != nil {
		t.Fatalf("dead-lettering it with a reason of %d bytes: %v", len(reason), err)
	}
	dl, err := s.DeadLetters(dests[0])
	if err != nil || len(dl) != 1 {
		t.Fatalf("dead letters: %d, %v", len(dl), err)
	}
	if len(dl[0].Reason) > maxReason || !strings.HasPrefix(dl[0].Reason, "AR: the receiver") {
		t.Fatalf("dead letter's reason is %d bytes, want at most %d starting with the receiver's text", len(dl[0].Reason), maxReason)
	}
}

// A message larger than a value-log file is refused by the spool itself:
// Badger's own refusal quotes the value's first kilobyte, which would put
// patient data in the sender's AE and the log.
func TestAMessageLargerThanTheSpoolStoresIsRefusedWithoutItsContent(t *testing.T) {
	s := openTest(t, t.TempDir(), "a")
	defer s.Close()
	raw := append(msg(1), []byte("PID|1||SECRETMRN^^^H||DOE^JANE\r")...)
	raw = append(raw, make([]byte, MaxStoredMessage)...)
	_, err := s.Append(context.Background(), Entry{Source: "s", Raw: raw, Dests: []string{"a"}})
	if !errors.Is(err, ErrTooLarge) {
		t.Fatalf("Append of %d bytes: %v, want ErrTooLarge", len(raw), err)
	}
	if strings.Contains(err.Error(), "SECRETMRN") || strings.Contains(err.Error(), "DOE") {
		t.Fatalf("the refusal quotes the message: %v", err)
	}
	// The largest message it takes is taken.
	fit := append(msg(2), make([]byte, MaxStoredMessage-len(msg(2)))...)
	if _, err := s.Append(context.Background(), Entry{Source: "s", Raw: fit, Dests: []string{"a"}}); err != nil {
		t.Fatalf("Append of %d bytes, the most the spool stores: %v", len(fit), err)
	}
}
