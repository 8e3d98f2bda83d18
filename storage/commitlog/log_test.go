package commitlog

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// modes runs a test with direct I/O (where the file system allows it) and
// through the page cache.
func modes(t *testing.T, fn func(t *testing.T, o Options)) {
	for _, buffered := range []bool{false, true} {
		t.Run(fmt.Sprintf("buffered=%v", buffered), func(t *testing.T) {
			fn(t, Options{Buffered: buffered, SegmentSize: 16 << 10})
		})
	}
}

func open(t *testing.T, dir string, o Options) *Log {
	t.Helper()
	l, err := Open(dir, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close() })
	return l
}

func replayAll(t *testing.T, l *Log) []string {
	t.Helper()
	var got []string
	if _, err := l.Replay(func(b []byte) error { got = append(got, string(b)); return nil }); err != nil {
		t.Fatal(err)
	}
	return got
}

func rec(i int) []byte {
	return fmt.Appendf(nil, "record %05d %s", i, bytes.Repeat([]byte{'x'}, i%300))
}

func TestSyncedRecordsComeBackInOrder(t *testing.T) {
	modes(t, func(t *testing.T, o Options) {
		dir := t.TempDir()
		l := open(t, dir, o)
		if got := replayAll(t, l); len(got) != 0 {
			t.Fatalf("new log replayed %d records", len(got))
		}
		if err := l.Restart(); err != nil {
			t.Fatal(err)
		}
		for i := range 200 {
			if err := l.Append(rec(i)); err != nil {
				t.Fatal(err)
			}
			if i%7 == 0 {
				if err := l.Sync(); err != nil {
					t.Fatal(err)
				}
			}
		}
		if err := l.Sync(); err != nil {
			t.Fatal(err)
		}
		// Unsynced records may be lost, never reordered.
		_ = l.Append([]byte("never synced"))
		st := l.Stats()
		_ = l.Close()
		got := replayAll(t, open(t, dir, o))
		if len(got) != 200 {
			t.Fatalf("replayed %d records, want the 200 synced (rotations %d)", len(got), st.Rotations)
		}
		for i, g := range got {
			if g != string(rec(i)) {
				t.Fatalf("record %d replayed as %.20q", i, g)
			}
		}
		t.Logf("direct I/O: %v, rotations %d, files made %d", st.Direct, st.Rotations, st.Created)
	})
}

// A reused file still holds records of its earlier use behind the new
// ones; none of them may come back.
func TestRecycledFilesNeverReplayOldRecords(t *testing.T) {
	modes(t, func(t *testing.T, o Options) {
		dir := t.TempDir()
		l := open(t, dir, o)
		replayAll(t, l)
		if err := l.Restart(); err != nil {
			t.Fatal(err)
		}
		const n = 3000
		for i := range n {
			cur := l.Current()
			if err := l.Append(rec(i)); err != nil {
				t.Fatal(err)
			}
			if err := l.Sync(); err != nil {
				t.Fatal(err)
			}
			if l.Current() != cur {
				// Everything before the new segment is "durable elsewhere".
				l.Release(l.Current())
			}
		}
		st := l.Stats()
		_ = l.Close()
		files, _ := filepath.Glob(filepath.Join(dir, slotPrefix+"*"))
		if len(files) > 3 || st.Rotations < 20 {
			t.Fatalf("%d files after %d rotations: files are not reused", len(files), st.Rotations)
		}
		got := replayAll(t, open(t, dir, o))
		if len(got) == 0 || got[len(got)-1] != string(rec(n-1)) {
			t.Fatalf("replay does not end with the last record: %d records", len(got))
		}
		first := n - len(got)
		for i, g := range got {
			if g != string(rec(first+i)) {
				t.Fatalf("replayed record %d is %.20q, want record %d: an old record came back or one is missing", i, g, first+i)
			}
		}
		t.Logf("%d rotations over %d files; replay holds the last %d records", st.Rotations, len(files), len(got))
	})
}

func TestRestartForgetsWhatWasReplayed(t *testing.T) {
	dir := t.TempDir()
	o := Options{SegmentSize: 16 << 10}
	l := open(t, dir, o)
	replayAll(t, l)
	must(t, l.Restart())
	for i := range 100 {
		must(t, l.Append(rec(i)))
	}
	must(t, l.Sync())
	_ = l.Close()
	l = open(t, dir, o)
	if got := replayAll(t, l); len(got) != 100 {
		t.Fatalf("replayed %d, want 100", len(got))
	}
	must(t, l.Restart())
	must(t, l.Append([]byte("after restart")))
	must(t, l.Sync())
	_ = l.Close()
	got := replayAll(t, open(t, dir, o))
	if len(got) != 1 || got[0] != "after restart" {
		t.Fatalf("after Restart the log replayed %d records (first %.20q), want only the one written since", len(got), got)
	}
}

// A segment missing from the middle, or one that ends before its seal,
// makes replay refuse: skipping its records would silently drop writes.
func TestDamagedMiddleSegmentIsRefused(t *testing.T) {
	for _, damage := range []string{"header", "record"} {
		t.Run(damage, func(t *testing.T) {
			dir := t.TempDir()
			o := Options{SegmentSize: 16 << 10, Buffered: true}
			l := open(t, dir, o)
			replayAll(t, l)
			must(t, l.Restart())
			for i := range 400 {
				must(t, l.Append(rec(i)))
			}
			must(t, l.Sync())
			if l.Live() < 3 {
				t.Fatalf("only %d segments", l.Live())
			}
			first := l.slots[0]
			_ = l.Close()
			off := int64(0)
			if damage == "record" {
				off = headerSize + 100
			}
			f, err := os.OpenFile(first.path, os.O_RDWR, 0)
			if err != nil {
				t.Fatal(err)
			}
			_, _ = f.WriteAt(bytes.Repeat([]byte{0xAA}, 64), off)
			_ = f.Close()
			l = open(t, dir, o)
			n, err := l.Replay(func([]byte) error { return nil })
			if !errors.Is(err, ErrCorrupt) || n != 0 {
				t.Fatalf("replay after damaging segment 1's %s: %d records, err %v; want ErrCorrupt before any record", damage, n, err)
			}
			t.Log(err)
		})
	}
}

func TestEncryptedBodiesAreNotOnTheCard(t *testing.T) {
	dir := t.TempDir()
	key := bytes.Repeat([]byte{7}, 32)
	o := Options{SegmentSize: 16 << 10, Key: key}
	l := open(t, dir, o)
	replayAll(t, l)
	must(t, l.Restart())
	secret := []byte("PID|||MRN-4711^^^HOSP||DOE^JANE")
	must(t, l.Append(secret))
	must(t, l.Sync())
	_ = l.Close()
	files, _ := filepath.Glob(filepath.Join(dir, slotPrefix+"*"))
	for _, f := range files {
		b, _ := os.ReadFile(f)
		if bytes.Contains(b, []byte("MRN-4711")) {
			t.Fatalf("%s holds the record in clear", f)
		}
	}
	if got := replayAll(t, open(t, dir, o)); len(got) != 1 || got[0] != string(secret) {
		t.Fatalf("replay with the key: %q", got)
	}
	l = open(t, dir, Options{SegmentSize: 16 << 10})
	if _, err := l.Replay(func([]byte) error { return nil }); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("replay without the key: %v, want ErrCorrupt", err)
	}
}

func TestFailedWriteKeepsFailing(t *testing.T) {
	dir := t.TempDir()
	fail := false
	o := Options{SegmentSize: 16 << 10, Sync: func(f *os.File) error {
		if fail {
			return errors.New("EIO (injected)")
		}
		return Fdatasync(f)
	}}
	l := open(t, dir, o)
	replayAll(t, l)
	must(t, l.Restart())
	must(t, l.Append(rec(1)))
	fail = true
	if err := l.Sync(); err == nil {
		t.Fatal("Sync succeeded through a failing sync")
	}
	fail = false
	if err := l.Append(rec(2)); err == nil {
		t.Fatal("Append after a failed sync was taken")
	}
	if err := l.Sync(); err == nil {
		t.Fatal("a second Sync after a failure succeeded: Linux may have dropped the failed pages")
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// TestDirectIORefusedFallsBackToThePageCache: a file system that reports
// direct I/O in statx and then refuses the write (EINVAL) must not leave
// the spool refusing every message.
func TestDirectIORefusedFallsBackToThePageCache(t *testing.T) {
	dir := t.TempDir()
	calls := 0
	l := open(t, dir, Options{SegmentSize: 16 << 10, Sync: func(f *os.File) error {
		calls++
		if calls == 1 {
			return unix.EINVAL
		}
		return Fdatasync(f)
	}})
	if !l.Stats().Direct {
		t.Skip("the file system here has no direct I/O: nothing to fall back from")
	}
	replayAll(t, l)
	must(t, l.Restart())
	if l.Stats().Direct {
		t.Fatal("still in direct mode after EINVAL")
	}
	must(t, l.Append(rec(1)))
	must(t, l.Sync())
	_ = l.Close()
	if got := replayAll(t, open(t, dir, Options{SegmentSize: 16 << 10})); len(got) != 1 {
		t.Fatalf("replayed %d records after the fallback, want 1", len(got))
	}
}

// A log written by a newer firmware (a later format version, or a flag
// this one does not know) must stop the open: read as unused files, its
// records would be skipped and then overwritten, and whatever only the log
// held (the messages ACKed last before the downgrade) would be gone.
func TestLogFromANewerFormatIsRefused(t *testing.T) {
	for _, change := range []string{"version", "flags"} {
		t.Run(change, func(t *testing.T) {
			dir := t.TempDir()
			o := Options{SegmentSize: 16 << 10, Buffered: true}
			l := open(t, dir, o)
			replayAll(t, l)
			must(t, l.Restart())
			must(t, l.Append([]byte("acked record")))
			must(t, l.Sync())
			path := l.cur.path
			_ = l.Close()
			b, err := os.ReadFile(path)
			must(t, err)
			field := 8 // version
			if change == "flags" {
				field = 12
			}
			binary.LittleEndian.PutUint32(b[field:], binary.LittleEndian.Uint32(b[field:])|2)
			binary.LittleEndian.PutUint32(b[40:], crc32.Checksum(b[:40], castagnoli))
			must(t, os.WriteFile(path, b, 0o600))
			l, err = Open(dir, o)
			if err == nil {
				defer l.Close()
				var n int
				n, err = l.Replay(func([]byte) error { return nil })
				if err == nil {
					t.Fatalf("a segment with a newer %s: Open and Replay succeeded (%d records) on a format this firmware does not know", change, n)
				}
			}
			if !errors.Is(err, ErrNewerFormat) {
				t.Fatalf("a segment with a newer %s: %v, want ErrNewerFormat", change, err)
			}
			t.Log(err)
		})
	}
}

// A segment in the replay range that reads short (a file cut by fsck after
// a cut, or a card that stops returning data: both end the read early)
// must stop the replay: its files are written in full before use, so a
// short read means records that were acknowledged are not coming back, and
// replaying the rest and then restarting would drop them without a word.
func TestShortSegmentIsRefused(t *testing.T) {
	dir := t.TempDir()
	o := Options{SegmentSize: 64 << 10, Buffered: true}
	l := open(t, dir, o)
	replayAll(t, l)
	must(t, l.Restart())
	for i := range 100 {
		must(t, l.Append(rec(i)))
	}
	must(t, l.Sync())
	if l.Live() != 1 {
		t.Fatalf("%d segments live, want the 100 records in one", l.Live())
	}
	path := l.cur.path
	_ = l.Close()
	must(t, os.Truncate(path, headerSize+2<<10))
	l = open(t, dir, o)
	n, err := l.Replay(func([]byte) error { return nil })
	if !errors.Is(err, ErrCorrupt) {
		t.Fatalf("replay of a segment that reads short: %d of 100 records, err %v; want ErrCorrupt", n, err)
	}
	t.Log(err)
}

// A rotation whose new segment's first write fails (its header with it),
// in a log that recycles its files: the re-opened log must still replay
// every record synced before, in order, from files no header released
// too early.
func TestFailedFirstWriteOfARecycledSegment(t *testing.T) {
	for _, buffered := range []bool{false, true} {
		t.Run(fmt.Sprintf("buffered=%v", buffered), func(t *testing.T) {
			dir := t.TempDir()
			var last string
			armed, failed := false, false
			o := Options{SegmentSize: 16 << 10, Buffered: buffered, Sync: func(f *os.File) error {
				name := f.Name()
				if armed && last != "" && name != last {
					failed = true
					return errors.New("EIO (injected)")
				}
				last = name
				return Fdatasync(f)
			}}
			l := open(t, dir, o)
			replayAll(t, l)
			must(t, l.Restart())
			synced := 0
			for i := 0; !failed; i++ {
				armed = i > 1500 // after the files were recycled many times
				cur := l.Current()
				if err := l.Append(rec(i)); err != nil {
					break // the rotation's seal or the new header failed
				}
				if err := l.Sync(); err != nil {
					break
				}
				synced = i + 1
				if l.Current() != cur && i%3 != 0 {
					l.Release(l.Current() - 1) // keep one or two behind
				}
			}
			if !failed {
				t.Fatal("no write failed")
			}
			_ = l.Close()
			o.Sync = nil
			got := replayAll(t, open(t, dir, o))
			// The record whose write failed may have reached the file
			// all the same; the spool removes what it answered AE for.
			if len(got) > 0 && got[len(got)-1] == string(rec(synced)) {
				got = got[:len(got)-1]
			}
			if len(got) == 0 || got[len(got)-1] != string(rec(synced-1)) {
				t.Fatalf("replay of %d records does not end with the last synced, record %d (ends with %.12q)", len(got), synced-1, got[len(got)-1])
			}
			first := synced - len(got)
			for i, g := range got {
				if g != string(rec(first+i)) {
					t.Fatalf("replayed record %d is %.20q, want record %d", i, g, first+i)
				}
			}
		})
	}
}

// A segment's seal is flushed through Options.Flush; a flush refused there
// (another writer's failure since: the caller's writes may be gone) fails
// the log as a failed write does, and a flush it runs is the log's own.
func TestOwnFlushGoesThroughTheCallersFlush(t *testing.T) {
	modes(t, func(t *testing.T, o Options) {
		calls, refuse := 0, false
		o.Flush = func(flush func() error) error {
			calls++
			if refuse {
				return errors.New("refused (another writer's flush failed)")
			}
			return flush()
		}
		l := open(t, t.TempDir(), o)
		replayAll(t, l)
		must(t, l.Restart())
		for i := 0; calls == 0; i++ {
			must(t, l.Append(rec(i)))
		}
		if l.Stats().Rotations != 1 {
			t.Fatalf("%d flushes through Options.Flush and %d rotations, want the rotation's", calls, l.Stats().Rotations)
		}
		refuse = true
		var err error
		for i := 0; err == nil && calls == 1; i++ {
			err = l.Append(rec(i))
		}
		if err == nil {
			t.Fatal("an Append whose seal's flush was refused succeeded")
		}
		refuse = false
		if err := l.Append(rec(1)); err == nil {
			t.Fatal("the log took a record after its flush was refused")
		}
	})
}
