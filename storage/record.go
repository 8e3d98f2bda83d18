package storage

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"
)

// Key space. Every key starts with one byte naming its family:
//
//	m <seg:8> <seq:8>          a spooled message (the only large values)
//	q <dest> 0 <seq:8>         "dest still owes seq" (value: seg:8); FIFO per destination
//	d <dest> 0 <seq:8>         dead letter (value: a full record copy)
//	u <seq:8>                  undeliverable message (value: record; expires)
//	r <source> 0 <remote id>   remembered remote ID of a pull source (value: GUID; expires)
//	x <name>                   metadata (last sequence number)
//
// Messages live in segments so that a fully delivered segment goes with one
// DropPrefix, which gives the disk space back at once; per-message deletes of
// large values do not (docs/design.md, The spool on a small board).
const (
	famMessage = 'm'
	famQueue   = 'q'
	famDead    = 'd'
	famUndeliv = 'u'
	famRemote  = 'r'
	famMeta    = 'x'
)

var keyLastSeq = []byte("xseq")

func msgKey(seg, seq uint64) []byte {
	k := make([]byte, 17)
	k[0] = famMessage
	binary.BigEndian.PutUint64(k[1:], seg)
	binary.BigEndian.PutUint64(k[9:], seq)
	return k
}

func segPrefix(seg uint64) []byte {
	k := make([]byte, 9)
	k[0] = famMessage
	binary.BigEndian.PutUint64(k[1:], seg)
	return k
}

func namedPrefix(fam byte, name string) []byte {
	k := make([]byte, 0, len(name)+2)
	k = append(k, fam)
	k = append(k, name...)
	return append(k, 0)
}

func namedSeqKey(fam byte, name string, seq uint64) []byte {
	k := namedPrefix(fam, name)
	return binary.BigEndian.AppendUint64(k, seq)
}

func seqKey(fam byte, seq uint64) []byte {
	k := []byte{fam}
	return binary.BigEndian.AppendUint64(k, seq)
}

func remoteKey(source, id string) []byte {
	k := namedPrefix(famRemote, source)
	return append(k, id...)
}

// seqOf reads the trailing sequence number of a q, d, u or m key.
func seqOf(key []byte) uint64 {
	if len(key) < 8 {
		return 0
	}
	return binary.BigEndian.Uint64(key[len(key)-8:])
}

// record is the stored form of a message.
type record struct {
	GUID     uuid.UUID
	Seq      uint64
	Received time.Time
	Source   string
	Dests    []string
	Reason   string // why it is dead or undeliverable
	Attempts int
	Raw      []byte
}

const recordVersion = 1

// maxReason bounds the reason a record keeps: it is written for a person
// (a receiver's error text may be any length), and recordOverhead counts
// on it.
const maxReason = 2 << 10

func (r *record) encode() []byte {
	reason := r.Reason
	if len(reason) > maxReason {
		reason = strings.ToValidUTF8(reason[:maxReason-len("…")], "") + "…"
	}
	n := 1 + 16 + 8 + 8 + 4*binary.MaxVarintLen64 + len(r.Source) + len(reason) + len(r.Raw)
	for _, d := range r.Dests {
		n += binary.MaxVarintLen64 + len(d)
	}
	b := make([]byte, 0, n)
	b = append(b, recordVersion)
	b = append(b, r.GUID[:]...)
	b = binary.BigEndian.AppendUint64(b, r.Seq)
	b = binary.BigEndian.AppendUint64(b, uint64(r.Received.UnixNano()))
	b = appendString(b, r.Source)
	b = binary.AppendUvarint(b, uint64(len(r.Dests)))
	for _, d := range r.Dests {
		b = appendString(b, d)
	}
	b = appendString(b, reason)
	b = binary.AppendUvarint(b, uint64(r.Attempts))
	return append(b, r.Raw...)
}

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

var errCorrupt = errors.New("spool record is corrupt")

func decodeRecord(b []byte) (*record, error) {
	if len(b) < 33 || b[0] != recordVersion {
		return nil, fmt.Errorf("%w: bad header (version %d, %d bytes)", errCorrupt, firstByte(b), len(b))
	}
	r := &record{}
	copy(r.GUID[:], b[1:17])
	r.Seq = binary.BigEndian.Uint64(b[17:25])
	r.Received = time.Unix(0, int64(binary.BigEndian.Uint64(b[25:33])))
	p := b[33:]
	var ok bool
	if r.Source, p, ok = readString(p); !ok {
		return nil, fmt.Errorf("%w: source", errCorrupt)
	}
	nd, k := binary.Uvarint(p)
	if k <= 0 || nd > 1024 {
		return nil, fmt.Errorf("%w: destination count", errCorrupt)
	}
	p = p[k:]
	for range nd {
		var d string
		if d, p, ok = readString(p); !ok {
			return nil, fmt.Errorf("%w: destination", errCorrupt)
		}
		r.Dests = append(r.Dests, d)
	}
	if r.Reason, p, ok = readString(p); !ok {
		return nil, fmt.Errorf("%w: reason", errCorrupt)
	}
	att, k := binary.Uvarint(p)
	if k <= 0 {
		return nil, fmt.Errorf("%w: attempts", errCorrupt)
	}
	r.Attempts = int(att)
	r.Raw = p[k:]
	return r, nil
}

func firstByte(b []byte) int {
	if len(b) == 0 {
		return -1
	}
	return int(b[0])
}

func readString(p []byte) (string, []byte, bool) {
	n, k := binary.Uvarint(p)
	if k <= 0 || n > uint64(len(p)-k) {
		return "", nil, false
	}
	return string(p[k : k+int(n)]), p[k+int(n):], true
}
