package mllp

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
)

// frame builds SB content EB CR.
func frame(s string) string { return "\x0b" + s + "\x1c\r" }

// chunkReader hands out its data in pieces no larger than the next size
// from sizes (cycled), to exercise every split of a frame across reads.
type chunkReader struct {
	data  []byte
	sizes []int
	i     int
}

func (c *chunkReader) Read(p []byte) (int, error) {
	if len(c.data) == 0 {
		return 0, io.EOF
	}
	n := 1
	if len(c.sizes) > 0 {
		n = c.sizes[c.i%len(c.sizes)]
		c.i++
	}
	n = max(1, min(n, len(p), len(c.data)))
	copy(p, c.data[:n])
	c.data = c.data[n:]
	return n, nil
}

type wantFrame struct {
	data     string
	oversize bool
	size     int64
}

func readAll(t testing.TB, r *Reader) ([]Frame, error) {
	t.Helper()
	var out []Frame
	for {
		f, err := r.ReadFrame()
		if err != nil {
			return out, err
		}
		out = append(out, f)
	}
}

func TestReadFrame(t *testing.T) {
	msg := "MSH|^~\\&|A|B|C|D|20240101||ADT^A01|1|P|2.5\rPID|1\r"
	long := strings.Repeat("x", 100)
	tests := []struct {
		name    string
		in      string
		max     int
		want    []wantFrame
		skipped int64
		err     error
	}{
		{"one frame", frame(msg), 0, []wantFrame{{msg, false, int64(len(msg))}}, 0, io.EOF},
		{"empty stream", "", 0, nil, 0, io.EOF},
		{"empty frame", frame(""), 0, []wantFrame{{"", false, 0}}, 0, io.EOF},
		{"two frames", frame("a") + frame("bc"), 0, []wantFrame{{"a", false, 1}, {"bc", false, 2}}, 0, io.EOF},
		{"garbage before", "junk\r\n" + frame("a"), 0, []wantFrame{{"a", false, 1}}, 6, io.EOF},
		{"garbage between", frame("a") + "\r\n xx" + frame("b"), 0, []wantFrame{{"a", false, 1}, {"b", false, 1}}, 5, io.EOF},
		{"garbage after", frame("a") + "zz", 0, []wantFrame{{"a", false, 1}}, 2, io.EOF},
		{"EB without CR", "\x0ba\x1c\x0bb\x1c", 0, []wantFrame{{"a", false, 1}, {"b", false, 1}}, 0, io.EOF},
		{"EB without CR then text", "\x0ba\x1cz\x0bb\x1c", 0, []wantFrame{{"a", false, 1}, {"b", false, 1}}, 1, io.EOF},
		{"only one CR swallowed", frame("a") + "\r" + frame("b"), 0, []wantFrame{{"a", false, 1}, {"b", false, 1}}, 1, io.EOF},
		{"restart on new SB", "\x0bhalf\x0bwhole\x1c\r", 0, []wantFrame{{"whole", false, 5}}, 5, io.EOF},
		{"restart twice", "\x0ba\x0bbb\x0bccc\x1c\r", 0, []wantFrame{{"ccc", false, 3}}, 5, io.EOF},
		{"eof mid frame", frame("a") + "\x0bpartial", 0, []wantFrame{{"a", false, 1}}, 0, io.ErrUnexpectedEOF},
		{"eof after SB", "\x0b", 0, nil, 0, io.ErrUnexpectedEOF},
		{"eof after EB", "\x0ba\x1c", 0, []wantFrame{{"a", false, 1}}, 0, io.EOF},
		{"stray EB outside frame", "\x1c\r" + frame("a"), 0, []wantFrame{{"a", false, 1}}, 2, io.EOF},
		{"oversize", frame(long) + frame("ok"), 10, []wantFrame{{long[:10], true, 100}, {"ok", false, 2}}, 0, io.EOF},
		{"exactly max", frame(long[:10]), 10, []wantFrame{{long[:10], false, 10}}, 0, io.EOF},
		{"oversize restart", "\x0b" + long + "\x0bok\x1c\r", 10, []wantFrame{{"ok", false, 2}}, 101, io.EOF},
		{"LF and CRLF inside kept", frame("a\nb\r\nc"), 0, []wantFrame{{"a\nb\r\nc", false, 6}}, 0, io.EOF},
	}
	chunkings := map[string][]int{"whole": {1 << 20}, "bytewise": {1}, "odd": {3, 1, 7, 2}}
	for _, tc := range tests {
		for cname, sizes := range chunkings {
			t.Run(tc.name+"/"+cname, func(t *testing.T) {
				r := NewReader(&chunkReader{data: []byte(tc.in), sizes: sizes}, tc.max)
				got, err := readAll(t, r)
				if !errors.Is(err, tc.err) {
					t.Fatalf("final error = %v, want %v", err, tc.err)
				}
				if tc.err == io.EOF && err != io.EOF {
					t.Fatalf("clean end must return io.EOF itself, got %#v", err)
				}
				if len(got) != len(tc.want) {
					t.Fatalf("got %d frames, want %d: %+v", len(got), len(tc.want), got)
				}
				for i, w := range tc.want {
					g := got[i]
					if string(g.Data) != w.data || g.Oversize != w.oversize || g.Size != w.size {
						t.Errorf("frame %d = {%q %v %d}, want {%q %v %d}", i, g.Data, g.Oversize, g.Size, w.data, w.oversize, w.size)
					}
					if g.Data == nil {
						t.Errorf("frame %d: Data is nil, want non-nil even when empty", i)
					}
				}
				if r.Skipped() != tc.skipped {
					t.Errorf("Skipped() = %d, want %d", r.Skipped(), tc.skipped)
				}
			})
		}
	}
}

func TestReadFrameSurfacesReaderErrors(t *testing.T) {
	boom := errors.New("boom")
	r := NewReader(io.MultiReader(strings.NewReader("\x0bpart"), &errReader{boom}), 0)
	if _, err := r.ReadFrame(); !errors.Is(err, boom) {
		t.Fatalf("err = %v, want wrapped boom", err)
	}
	r = NewReader(io.MultiReader(strings.NewReader("noise"), &errReader{boom}), 0)
	if _, err := r.ReadFrame(); !errors.Is(err, boom) || errors.Is(err, io.EOF) {
		t.Fatalf("err = %v, want wrapped boom", err)
	}
}

type errReader struct{ err error }

func (e *errReader) Read([]byte) (int, error) { return 0, e.err }

func TestOversizeMemoryBounded(t *testing.T) {
	// 32 MiB through a 1 KiB limit: Data never grows past the limit.
	const size = 32 << 20
	src := io.MultiReader(strings.NewReader("\x0b"), io.LimitReader(repeatReader('A'), size), strings.NewReader("\x1c\r"+frame("next")))
	r := NewReader(src, 1024)
	f, err := r.ReadFrame()
	if err != nil {
		t.Fatal(err)
	}
	if !f.Oversize || f.Size != size || len(f.Data) != 1024 || cap(f.Data) > 1024 {
		t.Fatalf("got oversize=%v size=%d len=%d cap=%d", f.Oversize, f.Size, len(f.Data), cap(f.Data))
	}
	f, err = r.ReadFrame()
	if err != nil || string(f.Data) != "next" {
		t.Fatalf("next frame = %q, %v: reader lost sync after an oversize frame", f.Data, err)
	}
}

// repeatReader is an endless stream of one byte, filled with copy so that
// the race detector does not instrument every byte.
func repeatReader(b byte) io.Reader { return &repeater{block: bytes.Repeat([]byte{b}, 64<<10)} }

type repeater struct{ block []byte }

func (r *repeater) Read(p []byte) (int, error) {
	n := 0
	for n < len(p) {
		n += copy(p[n:], r.block)
	}
	return n, nil
}

func TestWriteFrame(t *testing.T) {
	var buf bytes.Buffer
	w := &countingWriter{w: &buf}
	if err := WriteFrame(w, []byte("MSH|x")); err != nil {
		t.Fatal(err)
	}
	if buf.String() != frame("MSH|x") || w.calls != 1 {
		t.Fatalf("wrote %q in %d calls, want %q in 1", buf.String(), w.calls, frame("MSH|x"))
	}
	for _, bad := range []string{"a\x0bb", "a\x1cb"} {
		err := WriteFrame(w, []byte(bad))
		if !errors.Is(err, ErrFramingByte) || !strings.Contains(err.Error(), "offset 1") {
			t.Errorf("WriteFrame(%q) = %v, want ErrFramingByte naming offset 1", bad, err)
		}
	}
	if w.calls != 1 {
		t.Errorf("rejected frames must write nothing; %d calls", w.calls)
	}
	werr := errors.New("disk gone")
	if err := WriteFrame(&errWriter{werr}, []byte("x")); !errors.Is(err, werr) {
		t.Errorf("write error not wrapped: %v", err)
	}
}

type countingWriter struct {
	w     io.Writer
	calls int
}

func (c *countingWriter) Write(p []byte) (int, error) { c.calls++; return c.w.Write(p) }

type errWriter struct{ err error }

func (e *errWriter) Write([]byte) (int, error) { return 0, e.err }

// refFrames is a byte-at-a-time model of the reader's documented rules,
// used to check the buffered implementation.
func refFrames(data []byte, limit int) (frames []Frame, skipped int64, clean bool) {
	in, afterEnd := false, false
	var cur []byte
	var size int64
	for _, b := range data {
		if !in {
			switch {
			case b == StartBlock:
				in, cur, size = true, []byte{}, 0
			case afterEnd && b == CarriageReturn:
			default:
				skipped++
			}
			afterEnd = false
			continue
		}
		switch b {
		case EndBlock:
			frames = append(frames, Frame{Data: cur, Size: size, Oversize: size > int64(limit)})
			in, afterEnd = false, true
		case StartBlock:
			skipped += 1 + size
			cur, size = []byte{}, 0
		default:
			size++
			if len(cur) < limit {
				cur = append(cur, b)
			}
		}
	}
	return frames, skipped, !in
}

func FuzzReader(f *testing.F) {
	f.Add([]byte(frame("MSH|^~\\&|A\rPID|1\r")), uint64(1), uint16(0))
	f.Add([]byte("noise"+frame("a")+"\r\n"+frame("bb")), uint64(7), uint16(1))
	f.Add([]byte("\x0ba\x1c\x0bb\x1c\r\r\x0bc\x0bd\x1c"), uint64(3), uint16(2))
	f.Add([]byte("\x0b"+strings.Repeat("z", 300)+"\x1c\r"+frame("q")), uint64(42), uint16(16))
	f.Add([]byte("\x0bunterminated"), uint64(5), uint16(4))
	f.Add([]byte{}, uint64(0), uint16(0))
	f.Fuzz(func(t *testing.T, data []byte, seed uint64, limit16 uint16) {
		limit := int(limit16 % 512)
		effLimit := limit
		if effLimit <= 0 {
			effLimit = DefaultMaxMessageBytes
		}
		rng := rand.New(rand.NewPCG(seed, seed>>1))
		sizes := make([]int, 16)
		for i := range sizes {
			sizes[i] = 1 + rng.IntN(64)
		}
		r := NewReader(&chunkReader{data: slices.Clone(data), sizes: sizes}, limit)
		got, err := readAll(t, r)
		want, wantSkipped, clean := refFrames(data, effLimit)
		if clean && err != io.EOF || !clean && !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Fatalf("final error %v; stream ended cleanly: %v", err, clean)
		}
		if len(got) != len(want) {
			t.Fatalf("%d frames, model says %d", len(got), len(want))
		}
		var total int64
		for i := range got {
			g, w := got[i], want[i]
			if !bytes.Equal(g.Data, w.Data) || g.Size != w.Size || g.Oversize != w.Oversize {
				t.Fatalf("frame %d = {%q %d %v}, model {%q %d %v}", i, g.Data, g.Size, g.Oversize, w.Data, w.Size, w.Oversize)
			}
			if len(g.Data) > effLimit || cap(g.Data) > effLimit {
				t.Fatalf("frame %d holds len %d cap %d over the %d limit", i, len(g.Data), cap(g.Data), effLimit)
			}
			total += g.Size + 2
		}
		if r.Skipped() != wantSkipped {
			t.Fatalf("Skipped() = %d, model %d", r.Skipped(), wantSkipped)
		}
		if total+r.Skipped() > int64(len(data)) {
			t.Fatalf("accounted %d bytes out of %d", total+r.Skipped(), len(data))
		}
		// Whatever was read writes back and reads again identically
		// (oversize frames as their kept prefix).
		var buf bytes.Buffer
		for _, g := range got {
			if err := WriteFrame(&buf, g.Data); err != nil {
				t.Fatalf("frame read back cannot be written: %v", err)
			}
		}
		again, err := readAll(t, NewReader(&chunkReader{data: buf.Bytes(), sizes: sizes}, limit))
		if err != io.EOF || len(again) != len(got) {
			t.Fatalf("round trip: %d frames, err %v; want %d, io.EOF", len(again), err, len(got))
		}
		for i := range again {
			if !bytes.Equal(again[i].Data, got[i].Data) || again[i].Oversize {
				t.Fatalf("round trip frame %d = %q, want %q", i, again[i].Data, got[i].Data)
			}
		}
	})
}
