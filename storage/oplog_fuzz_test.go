package storage

import (
	"bytes"
	"encoding/binary"
	"testing"

	"github.com/dgraph-io/badger/v4"
	"github.com/klauspost/compress/s2"
)

// FuzzDecodeOps: a commit-log record body never panics the decoder, and a
// body made by the encoder decodes to what was encoded, compressed
// (packOps) or not.
func FuzzDecodeOps(f *testing.F) {
	var b []byte
	b = appendSetOp(b, badger.NewEntry([]byte("m\x00\x01"), []byte("MSH|^~\\&|")))
	b = appendSetOp(b, badger.NewEntry([]byte("r"), []byte("g")).WithTTL(1))
	b = appendBytes(append(b, opDelete), []byte("q/a"))
	f.Add(b)
	f.Add([]byte{opDrop, 2, 1, 'm', 0})
	f.Add([]byte{opSetTTL, 1, 'k', 1, 2})
	f.Add(appendSetOp(nil, badger.NewEntry([]byte("m"), make([]byte, largeValue))))
	var buf []byte
	packed := append([]byte(nil), packOps(&buf, bytes.Repeat(b, 20))...)
	f.Add(packed)
	f.Add(append([]byte{opS2}, s2.Encode(nil, packed)...)) // compressed twice
	f.Add(append([]byte{opS2}, binary.AppendUvarint(nil, maxUnpacked+1)...))
	f.Fuzz(func(t *testing.T, body []byte) {
		var ops []op
		if err := decodeOps(body, func(o op) error { ops = append(ops, o); return nil }); err != nil {
			return
		}
		var again []byte
		for _, o := range ops {
			switch o.kind {
			case opSet, opSetTTL:
				if o.kind == opSetTTL && o.expiresAt == 0 {
					// Decodes, but the encoder writes a set with no
					// expiry as opSet: re-encode its own form.
					again = appendBytes(append(again, opSetTTL), o.key)
					again = binary.LittleEndian.AppendUint64(again, 0)
					again = appendBytes(again, o.val)
					continue
				}
				e := badger.NewEntry(o.key, o.val)
				e.ExpiresAt = o.expiresAt
				again = appendSetOp(again, e)
			case opDelete:
				again = appendBytes(append(again, o.kind), o.key)
			case opLarge:
				again = appendBytes(append(again, o.kind), o.key)
				again = binary.LittleEndian.AppendUint32(again, o.sum)
				again = binary.AppendUvarint(again, o.size)
			case opDrop:
				again = binary.AppendUvarint(append(again, opDrop), uint64(len(o.prefixes)))
				for _, p := range o.prefixes {
					again = appendBytes(again, p)
				}
			}
		}
		sameOps(t, ops, again)
		var buf []byte
		sameOps(t, ops, packOps(&buf, again))
	})
}

// sameOps fails t unless rec decodes to ops.
func sameOps(t *testing.T, ops []op, rec []byte) {
	t.Helper()
	var ops2 []op
	if err := decodeOps(rec, func(o op) error { ops2 = append(ops2, o); return nil }); err != nil || len(ops2) != len(ops) {
		t.Fatalf("re-encoded %d ops decode to %d (%v)", len(ops), len(ops2), err)
	}
	for i := range ops {
		if ops[i].kind != ops2[i].kind || !bytes.Equal(ops[i].key, ops2[i].key) || !bytes.Equal(ops[i].val, ops2[i].val) || ops[i].sum != ops2[i].sum || ops[i].size != ops2[i].size {
			t.Fatalf("op %d changed in a round trip", i)
		}
	}
}
