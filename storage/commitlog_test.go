package storage

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/klauspost/compress/s2"
)

// copyTree copies dir's regular files (and one level of sub-directories).
func copyTree(t *testing.T, from, to string) {
	t.Helper()
	ents, err := os.ReadDir(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(to, 0o700); err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		src, dst := filepath.Join(from, e.Name()), filepath.Join(to, e.Name())
		if e.IsDir() {
			copyTree(t, src, dst)
			continue
		}
		b, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(dst, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

// cutAfter makes a spool as a cut can leave it and returns its
// directory: Badger's files as a checkpoint left them after before ran,
// and the commit log as the card held it after after ran (and synced).
func cutAfter(t *testing.T, before, after func(ctx context.Context, s *Spool)) string {
	t.Helper()
	dir, old := t.TempDir(), t.TempDir()
	ctx := context.Background()
	s := openTest(t, dir, "a")
	before(ctx, s)
	must(t, s.Close())
	copyTree(t, dir, old) // Badger as durable before what follows
	s = openTest(t, dir, "a")
	after(ctx, s)
	must(t, s.syncLogs(false))
	logNow := t.TempDir()
	copyTree(t, filepath.Join(dir, commitLogDir), logNow)
	must(t, s.Close())
	must(t, os.RemoveAll(filepath.Join(old, commitLogDir)))
	copyTree(t, logNow, filepath.Join(old, commitLogDir))
	return old
}

// appendN appends messages from..to-1 for "a".
func appendN(t *testing.T, ctx context.Context, s *Spool, from, to int) {
	t.Helper()
	for i := from; i < to; i++ {
		if _, err := s.Append(ctx, Entry{Source: "s", Raw: msg(i), Dests: []string{"a"}}); err != nil {
			t.Fatal(err)
		}
	}
}

// cutSpool: 200 messages ACKed, the first 50 marked delivered, Badger's
// files as the first 100's checkpoint left them (see
// TestCommitLogBringsBadgerForward).
func cutSpool(t *testing.T) string {
	return cutAfter(t, func(ctx context.Context, s *Spool) { appendN(t, ctx, s, 0, 100) }, func(ctx context.Context, s *Spool) {
		// (No large message here: its group syncs Badger's own logs, which
		// makes Badger durable up to it; the rig's cuts cover those.)
		appendN(t, ctx, s, 100, 200)
		ms, err := s.Next("a", 0, 50)
		must(t, err)
		for _, m := range ms {
			must(t, s.Delivered("a", m.Seq))
		}
	})
}

// TestCommitLogBringsBadgerForward is the crash argument of the commit
// log in one test: Badger no longer syncs per commit, so after a cut its
// files may hold only what the last checkpoint made durable, and the
// commit log must bring it forward to every acknowledged message and every
// delivery mark synced since. The spool's Badger files are taken as they
// were at a clean close (the oldest state a checkpoint leaves), and the
// commit log as it was after later messages were ACKed and half of the
// earlier ones marked delivered.
func TestCommitLogBringsBadgerForward(t *testing.T) {
	old := cutSpool(t)
	s := openTest(t, old, "a")
	defer s.Close()
	if s.replayed == 0 {
		t.Fatal("nothing replayed from the commit log")
	}
	if q := s.Stats().Destinations["a"].Queued; q != 150 {
		t.Fatalf("%d queued after the cut, want 150 (200 ACKed, 50 marked delivered)", q)
	}
	ms, err := s.Next("a", 0, 200)
	must(t, err)
	for i, m := range ms {
		if !bytes.Equal(m.Raw, msg(50+i)) {
			t.Fatalf("queued message %d (seq %d) is not message %d", i, m.Seq, 50+i)
		}
	}
	t.Logf("replayed %d records", s.replayed)
}

// TestSalvageReadsTheCommitLog: the messages ACKed last, which only the
// commit log holds, come through a salvage too.
func TestSalvageReadsTheCommitLog(t *testing.T) {
	dir := cutSpool(t)
	rep, err := Salvage(Config{Dir: dir, MaxBytes: 64 << 20, SegmentMessages: 64}, Options{Destinations: []string{"a"}})
	must(t, err)
	if rep.Queued != 150 || rep.LogRecords == 0 {
		t.Fatalf("salvage re-queued %d (want 150: 200 ACKed, 50 delivered) from %d commit-log records; problems %q", rep.Queued, rep.LogRecords, rep.Problems)
	}
	s := openTest(t, dir, "a")
	defer s.Close()
	if q := s.Stats().Destinations["a"].Queued; q != 150 {
		t.Fatalf("%d queued after salvage, want 150", q)
	}
}

// TestCommitLogReplayIsIdempotent: a record applied again on top of a
// Badger that already holds it (the common case after a clean close, or a
// cut just after a checkpoint) changes nothing.
func TestCommitLogReplayIsIdempotent(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	s := openTest(t, dir, "a")
	for i := range 40 {
		if _, err := s.Append(ctx, Entry{Source: "s", Raw: msg(i), Dests: []string{"a"}, RemoteID: string(rune('A' + i))}); err != nil {
			t.Fatal(err)
		}
	}
	ms, err := s.Next("a", 0, 10)
	must(t, err)
	for _, m := range ms {
		must(t, s.Delivered("a", m.Seq))
	}
	// The log put back as it was before the close's restart: the open
	// after Close replays the same records over a Badger that has them.
	replayAgain(t, s, dir)
	s = openTest(t, dir, "a")
	defer s.Close()
	if s.replayed == 0 {
		t.Fatal("nothing replayed")
	}
	st := s.Stats()
	if q := st.Destinations["a"].Queued; q != 30 {
		t.Fatalf("%d queued after replaying over a Badger that had it all, want 30", q)
	}
	// A remembered remote ID is still remembered (its TTL came back as it was).
	r, err := s.Append(ctx, Entry{Source: "s", Raw: msg(99), Dests: []string{"a"}, RemoteID: "A"})
	must(t, err)
	if !r.Duplicate {
		t.Fatal("remote ID A forgotten after replay")
	}
	err = s.view(func(txn *badger.Txn) error {
		_, err := txn.Get(remoteKey("s", "A"))
		return err
	})
	must(t, err)
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// TestDeliveryMarkIsSyncedWithoutAGroup: a mark no group commit follows
// (the gateway draining a backlog with no intake) reaches the card within
// about a second, so a cut does not deliver the whole backlog again.
func TestDeliveryMarkIsSyncedWithoutAGroup(t *testing.T) {
	s, r := hookedSpool(t)
	ctx := context.Background()
	res, err := s.Append(ctx, Entry{Source: "s", Raw: msg(1), Dests: []string{"a"}})
	must(t, err)
	before := len(r.names())
	must(t, s.Delivered("a", res.Seq))
	if !s.clog.Pending() {
		t.Fatal("the mark is not waiting in the commit log")
	}
	deadline := time.Now().Add(5 * time.Second)
	for s.clog.Pending() {
		if time.Now().After(deadline) {
			t.Fatalf("the delivery mark was not synced within 5 s (syncs %v)", r.names()[before:])
		}
		time.Sleep(20 * time.Millisecond)
	}
	if len(r.names()) == before {
		t.Fatal("no sync since the mark, yet nothing pending")
	}
}

// TestCommitLogReusesItsFiles: with no clean-up running (no DropPrefix to
// release segments), segments are still released once Badger holds their
// records durably, by its memtable flushes or a checkpoint, so the log's
// files are reused instead of piling up; and the spool reopens whole.
func TestCommitLogReusesItsFiles(t *testing.T) {
	dir := t.TempDir()
	s := openSmall(t, dir, nil, "a")
	ctx := context.Background()
	pad := noise(60 << 10) // the log compresses: the pad must not
	const n = 600          // some 36 MiB: nine segments' worth
	for i := range n {
		if _, err := s.Append(ctx, Entry{Source: "s", Raw: append(msg(i), pad...), Dests: []string{"a"}}); err != nil {
			t.Fatal(err)
		}
	}
	st := s.clog.Stats()
	files, _ := filepath.Glob(filepath.Join(dir, commitLogDir, "seg-*"))
	t.Logf("%d rotations, %d files made, %d live, %d checkpoints", st.Rotations, st.Created, st.Live, s.checkpoints)
	if st.Rotations < 8 {
		t.Fatalf("only %d rotations: the test no longer fills the log", st.Rotations)
	}
	// A released file is reused once a later segment's header, written at
	// the next rotation, says it is no longer needed: live plus three.
	if len(files) > maxLiveSegments+3 {
		t.Fatalf("%d segment files after %d rotations: released segments are not reused", len(files), st.Rotations)
	}
	must(t, s.Close())
	s = openSmall(t, dir, nil, "a")
	defer s.Close()
	if q := s.Stats().Destinations["a"].Queued; q != n {
		t.Fatalf("%d queued after reopening, want %d", q, n)
	}
}

// TestCheckpointWhenTheLogOutrunsBadger: when the log fills segments
// faster than Badger flushes memtables, a checkpoint syncs Badger's logs
// and releases them all once maxLiveSegments are live.
func TestCheckpointWhenTheLogOutrunsBadger(t *testing.T) {
	s := openSmall(t, t.TempDir(), nil, "a")
	defer s.Close()
	// Records that touch nothing Badger holds: deletes of absent keys.
	var rec []byte
	for len(rec) < 256<<10 {
		rec = appendBytes(append(rec, opDelete), []byte("zz-absent"))
	}
	s.writeMu.Lock()
	for s.clog.Live() < maxLiveSegments {
		if err := s.clog.Append(rec); err != nil {
			s.writeMu.Unlock()
			t.Fatal(err)
		}
	}
	s.writeMu.Unlock()
	// The commit loop runs checkpoints after each group.
	if _, err := s.Append(context.Background(), Entry{Source: "s", Raw: msg(1), Dests: []string{"a"}}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for s.clog.Live() >= maxLiveSegments && time.Now().Before(deadline) {
		_, _ = s.Append(context.Background(), Entry{Source: "s", Raw: msg(2), Dests: []string{"a"}})
		time.Sleep(150 * time.Millisecond)
	}
	if s.clog.Live() >= maxLiveSegments {
		t.Fatalf("%d segments live: no checkpoint released them", s.clog.Live())
	}
}

// TestSegmentsReleasedWithoutIngest: when no message comes in (a quiet
// night, a lab system down) while the spool keeps writing (a backlog
// drained, dead letters, trace events), Badger still flushes what those
// writes filled, and the log must still release its segments: otherwise
// every rotation makes a new 4 MiB file that is never removed, and the
// next open replays all of them. Kills make the writes here, 200 KiB dead-
// letter copies, because they fill the log fastest; delivery marks do
// the same, slower.
func TestSegmentsReleasedWithoutIngest(t *testing.T) {
	dir := t.TempDir()
	s := openSmall(t, dir, nil, "a")
	defer s.Close()
	ctx := context.Background()
	pad := noise(200 << 10) // the log compresses: the pad must not
	var seqs []uint64
	for i := range 150 { // some 30 MiB: more than maxLiveSegments of 4 MiB
		r, err := s.Append(ctx, Entry{Source: "s", Raw: append(msg(i), pad...), Dests: []string{"a"}})
		must(t, err)
		seqs = append(seqs, r.Seq)
	}
	deadline := time.Now().Add(10 * time.Second)
	for s.clog.Live() >= maxLiveSegments && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	before := s.clog.Stats()
	for _, seq := range seqs {
		must(t, s.Kill("a", seq, "AR", 3))
	}
	mid := s.clog.Stats()
	if mid.Rotations-before.Rotations < maxLiveSegments {
		t.Fatalf("the kills rotated the log only %d times: the test no longer fills it", mid.Rotations-before.Rotations)
	}
	deadline = time.Now().Add(10 * time.Second)
	for s.clog.Live() >= maxLiveSegments && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	files, _ := filepath.Glob(filepath.Join(dir, commitLogDir, "seg-*"))
	if live := s.clog.Live(); live >= maxLiveSegments {
		t.Fatalf("%d segments live and %d files, 10 s after writes that came with no message: nothing released them", live, len(files))
	}
	t.Logf("kills rotated %d times; %d files; %d live", mid.Rotations-before.Rotations, len(files), s.clog.Live())
}

// TestCheckpointSyncDuringDropPrefix: the checkpoint runs on the commit
// loop and syncs Badger's logs when the commit log outruns Badger; a
// DropPrefix (the clean-up, under the exclusive lock) flushes and removes
// every memtable log before it makes the next. A sync that looks in
// between must not take the gap for a damaged spool and fault it: every
// message would be answered AE until the re-open.
func TestCheckpointSyncDuringDropPrefix(t *testing.T) {
	s := openSmall(t, t.TempDir(), nil, "a")
	defer s.Close()
	done := make(chan struct{})
	syncErr := make(chan error, 1)
	go func() { // what checkpoint does when maxLiveSegments are live
		defer close(syncErr)
		for {
			select {
			case <-done:
				return
			default:
			}
			if err := s.checkpointSync(); err != nil {
				syncErr <- err
				return
			}
		}
	}()
	for i := range 100 {
		key := append(segPrefix(uint64(1000+i)), 1)
		must(t, s.update(func(txn *wtxn) error { return txn.Set(key, []byte("v")) }))
		s.dbMu.Lock()
		err := s.dropPrefix(segPrefix(uint64(1000 + i)))
		s.dbMu.Unlock()
		must(t, err)
		if s.faultErr() != nil {
			break
		}
	}
	close(done)
	if err := <-syncErr; err != nil {
		t.Fatalf("a checkpoint's sync during a DropPrefix faulted the spool: %v", err)
	}
}

// TestDropOfAnAbsentPrefixReleasesNothing: Badger's DropPrefix returns at
// once, without flushing a memtable, when no key has any of the prefixes
// (a segment dropped already, by a clean-up whose DropPrefix failed after
// dropping). The release after it must not count on a flush that did not
// happen: a message acknowledged before it, held by Badger only in an
// unsynced memtable log, would be in no replayed segment after a cut.
func TestDropOfAnAbsentPrefixReleasesNothing(t *testing.T) {
	dir, old := t.TempDir(), t.TempDir()
	s := openSmall(t, dir, nil, "a")
	must(t, s.Close())
	copyTree(t, dir, old) // Badger as durable as it will be: nothing below syncs it
	s = openSmall(t, dir, nil, "a")
	_, err := s.Append(context.Background(), Entry{Source: "s", Raw: msg(1), Dests: []string{"a"}})
	must(t, err)
	// Rotate the log with records that touch nothing Badger holds.
	var rec []byte
	for len(rec) < 256<<10 {
		rec = appendBytes(append(rec, opDelete), []byte("zz-absent"))
	}
	rotate := func() {
		s.writeMu.Lock()
		defer s.writeMu.Unlock()
		for cur := s.clog.Current(); s.clog.Current() == cur; {
			must(t, s.clog.Append(rec))
		}
	}
	rotate()
	drop := func(p []byte) {
		s.dbMu.Lock()
		defer s.dbMu.Unlock()
		must(t, s.dropPrefix(p))
	}
	drop(segPrefix(1 << 40))
	if live := s.clog.Live(); live < 2 {
		t.Errorf("%d segments live after dropping nothing, want the one holding the message kept", live)
	}
	rotate() // its header says where replay starts
	must(t, s.syncLogs(false))
	logNow := t.TempDir()
	copyTree(t, filepath.Join(dir, commitLogDir), logNow)
	must(t, s.Close())

	must(t, os.RemoveAll(filepath.Join(old, commitLogDir)))
	copyTree(t, logNow, filepath.Join(old, commitLogDir))
	s = openSmall(t, old, nil, "a")
	defer s.Close()
	if q := s.Stats().Destinations["a"].Queued; q != 1 {
		t.Fatalf("%d queued after the cut, want the 1 message ACKed before the drop (replayed %d records)", q, s.replayed)
	}
	// A drop that does flush still releases what came before it.
	key := append(segPrefix(1<<40), 1)
	must(t, s.update(func(txn *wtxn) error { return txn.Set(key, []byte("v")) }))
	rotate()
	drop(segPrefix(1 << 40))
	if live := s.clog.Live(); live != 1 {
		t.Fatalf("%d segments live after a DropPrefix that flushed Badger, want 1", live)
	}
}

// lostLargeSpool makes the spool TestLargeValueLostWithItsLogRecordDurable
// describes: 10 small messages in Badger, then a large one and message 11
// in the commit log only.
func lostLargeSpool(t *testing.T) string {
	return cutAfter(t, func(ctx context.Context, s *Spool) { appendN(t, ctx, s, 0, 10) }, func(ctx context.Context, s *Spool) {
		_, err := s.Append(ctx, Entry{Source: "s", Raw: largeMsg(10, 300<<10), Dests: []string{"a"}})
		must(t, err)
		appendN(t, ctx, s, 11, 12)
	})
}

// TestSalvageLeavesOutALostLargeValue: salvage applies the log as an open
// does, so the lost large message does not come back as a queue entry
// whose message cannot be read.
func TestSalvageLeavesOutALostLargeValue(t *testing.T) {
	old := lostLargeSpool(t)
	rep, err := Salvage(Config{Dir: old, MaxBytes: 64 << 20, SegmentMessages: 64}, Options{Destinations: []string{"a"}})
	must(t, err)
	if rep.Queued != 11 || rep.QueuedNoRecord != 0 {
		t.Fatalf("salvage re-queued %d with %d unreadable, want 11 and 0 (problems %q)", rep.Queued, rep.QueuedNoRecord, rep.Problems)
	}
}

// TestLargeValueLostWithItsLogRecordDurable: a group holding a message of
// 256 KiB or more writes the value to Badger's value log and only a marker
// to the commit log. If the log's record reached the card but the value
// did not (a cut between the log's write and the value log's sync, or the
// log written early by a rotation or another goroutine's sync), the sender
// was never answered AA; the open must not bring back the message's queue
// entry without its message, which would surface as a dead letter
// "unreadable" at a destination. The power-cut rig found five such dead
// letters in 100 cuts.
func TestLargeValueLostWithItsLogRecordDurable(t *testing.T) {
	old := lostLargeSpool(t)
	s := openTest(t, old, "a")
	defer s.Close()
	ms, err := s.Next("a", 0, 100)
	must(t, err)
	st := s.Stats()
	if st.Destinations["a"].Dead != 0 || len(ms) != 11 || st.Destinations["a"].Queued != 11 {
		t.Fatalf("after the cut: %d handed out, %d queued, %d dead letters; want the 10 small ones and message 11 queued, the large one gone, no dead letter",
			len(ms), st.Destinations["a"].Queued, st.Destinations["a"].Dead)
	}
}

// noise is n random capital letters: S2 finds nothing to shorten in it.
func noise(n int) []byte {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	for i := range b {
		b[i] = 'A' + b[i]%26
	}
	return b
}

// TestLogRecordsAreCompressed: a record of lab results is written to the
// card compressed, and comes back whole.
func TestLogRecordsAreCompressed(t *testing.T) {
	var ops []byte
	for i := range 20 {
		ops = appendSetOp(ops, badger.NewEntry([]byte(fmt.Sprintf("m%03d", i)), msg(i)))
	}
	var buf []byte
	rec := packOps(&buf, ops)
	if rec[0] != opS2 || len(rec) > len(ops)*3/4 {
		t.Fatalf("%d bytes of operations packed into %d (first byte %d): not compressed", len(ops), len(rec), rec[0])
	}
	n := 0
	must(t, decodeOps(rec, func(o op) error {
		if !bytes.Equal(o.val, msg(n)) {
			t.Fatalf("operation %d changed in the round trip", n)
		}
		n++
		return nil
	}))
	if n != 20 {
		t.Fatalf("%d operations back, want 20", n)
	}
	if r := packOps(&buf, noise(4096)); r[0] == opS2 {
		t.Fatal("an incompressible record was stored compressed")
	}
}

// TestCompressedRecordsThatDoNotDecode: a compressed record is refused,
// not allocated or unpacked again, when it claims more than maxUnpacked
// or holds another compressed record; what packOps writes never does.
func TestCompressedRecordsThatDoNotDecode(t *testing.T) {
	none := func(op) error { t.Fatal("an operation came out of a record that does not decode"); return nil }
	huge := append([]byte{opS2}, s2.Encode(nil, make([]byte, maxUnpacked+1))...)
	if err := decodeOps(huge, none); !errors.Is(err, errBadOp) {
		t.Errorf("a record claiming %d bytes decoded: %v", maxUnpacked+1, err)
	}
	var ops []byte
	for i := range 20 {
		ops = appendSetOp(ops, badger.NewEntry([]byte(fmt.Sprintf("m%03d", i)), msg(i)))
	}
	var buf []byte
	once := append([]byte(nil), packOps(&buf, ops)...)
	twice := append([]byte{opS2}, s2.Encode(nil, once)...)
	if err := decodeOps(twice, none); !errors.Is(err, errBadOp) {
		t.Errorf("a record compressed twice decoded: %v", err)
	}
	if err := decodeOps(append([]byte{opS2}, "not S2"...), none); !errors.Is(err, errBadOp) {
		t.Errorf("a damaged compressed record decoded: %v", err)
	}
	big := bytes.Repeat(ops, maxUnpacked/len(ops)+1)
	if r := packOps(&buf, big); r[0] == opS2 {
		t.Errorf("%d bytes of operations were compressed: that record would not decode", len(big))
	}
}
