package commitlog

import (
	"bytes"
	"encoding/binary"
	"testing"
)

// FuzzScan feeds the record reader arbitrary segment bytes behind a valid
// header: it must never panic, never hand out a body that runs past the
// segment, and for a segment written by the log it must return exactly
// the records written.
func FuzzScan(f *testing.F) {
	h := header{seq: 3, start: 1, salt: [8]byte{1, 2, 3, 4, 5, 6, 7, 8}}
	good := make([]byte, 8192)
	h.encode(good)
	off := headerSize
	for _, body := range [][]byte{[]byte("MSH|^~\\&|a"), []byte("x"), bytes.Repeat([]byte{0}, 40)} {
		binary.LittleEndian.PutUint32(good[off:], uint32(len(body)))
		binary.LittleEndian.PutUint32(good[off+4:], recordCRC(h, uint32(len(body)), body))
		copy(good[off+8:], body)
		off += 8 + len(body)
	}
	f.Add(good[headerSize:off+16], uint64(3))
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0}, uint64(3))
	f.Add([]byte{5, 0, 0, 0}, uint64(9))
	f.Fuzz(func(t *testing.T, recs []byte, seq uint64) {
		h := header{seq: max(seq, 1), start: 1}
		seg := make([]byte, headerSize+len(recs))
		h.encode(seg)
		copy(seg[headerSize:], recs)
		end, _, err := scan(seg, h, nil, func(b []byte) error {
			if len(b) > len(recs) {
				t.Fatalf("body of %d bytes from %d bytes of records", len(b), len(recs))
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if end < headerSize || end > int64(len(seg)) {
			t.Fatalf("end %d outside the segment of %d", end, len(seg))
		}
	})
}

func FuzzDecodeHeader(f *testing.F) {
	b := make([]byte, headerSize)
	header{seq: 5, start: 2}.encode(b)
	f.Add(b[:64])
	f.Fuzz(func(t *testing.T, b []byte) {
		h, ok, err := decodeHeader(b)
		if ok && err != nil {
			t.Fatalf("header both accepted and refused: %v", err)
		}
		if ok && (h.seq == 0 || h.start > h.seq) {
			t.Fatalf("accepted header seq %d start %d", h.seq, h.start)
		}
	})
}
