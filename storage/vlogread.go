package storage

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
)

// readValuePointer reads, without Badger, the value a table's value pointer
// names in dir's value-log files, for a salvage that cannot let Badger
// open the spool. Unencrypted spools only (an encrypted spool's tables are
// read through Badger alone).
//
// The formats are Badger v4's (structs.go, value.go): the pointer is the
// struct {Fid, Len, Offset uint32} copied from memory, so little-endian on
// every platform hl7edge runs on (amd64, arm64); the entry at Offset is a
// header (meta, user meta, then uvarints of key length, value length and
// expiry), the key, the value, and a CRC-32 (Castagnoli, big-endian) of
// everything before it.
func readValuePointer(dir string, ptr []byte) ([]byte, error) {
	if len(ptr) < 12 {
		return nil, fmt.Errorf("value pointer of %d bytes, want 12", len(ptr))
	}
	fid := binary.LittleEndian.Uint32(ptr[0:4])
	n := binary.LittleEndian.Uint32(ptr[4:8])
	off := binary.LittleEndian.Uint32(ptr[8:12])
	if n < 2+3+crc32.Size || n > 1<<30 {
		return nil, fmt.Errorf("value pointer length %d is implausible", n)
	}
	f, err := os.Open(filepath.Join(dir, fmt.Sprintf("%06d%s", fid, vlogExt)))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	buf := make([]byte, n)
	if _, err := f.ReadAt(buf, int64(off)); err != nil {
		return nil, fmt.Errorf("value log %06d at %d: %w", fid, off, err)
	}
	return decodeVlogEntry(buf)
}

var errVlogEntry = errors.New("value-log entry is corrupt")

// decodeVlogEntry checks one whole value-log entry and returns its value.
func decodeVlogEntry(buf []byte) ([]byte, error) {
	if len(buf) < 2+3+crc32.Size {
		return nil, errVlogEntry
	}
	body, sum := buf[:len(buf)-crc32.Size], buf[len(buf)-crc32.Size:]
	if crc32.Checksum(body, castagnoli) != binary.BigEndian.Uint32(sum) {
		return nil, fmt.Errorf("%w: checksum mismatch", errVlogEntry)
	}
	p := body[2:]
	var lens [3]uint64
	for i := range lens {
		v, k := binary.Uvarint(p)
		if k <= 0 {
			return nil, fmt.Errorf("%w: bad header", errVlogEntry)
		}
		lens[i], p = v, p[k:]
	}
	klen, vlen := lens[0], lens[1]
	if klen > uint64(len(p)) || vlen != uint64(len(p))-klen {
		return nil, fmt.Errorf("%w: key %d and value %d bytes in %d", errVlogEntry, klen, vlen, len(p))
	}
	return p[klen:], nil
}
