package commitlog

import (
	"crypto/aes"
	"crypto/cipher"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
)

// A segment file is a header block and then records, back to back:
//
//	header (the first headerSize bytes; the rest of the block is zeros)
//	  0  magic "HL7ECLOG"
//	  8  version (uint32, 1)
//	 12  flags (uint32; 1: record bodies are AES-CTR encrypted)
//	 16  seq: this use of the file (uint64); every use gets a new one
//	 24  start: the oldest seq still needed at replay (uint64)
//	 32  salt: 8 random bytes, new with every use
//	 40  CRC-32C of bytes 0..39
//	record
//	  0  length of the body (uint32; 0 ends the segment's records,
//	     sealLen says the segment was closed and the next one follows)
//	  4  CRC-32C of seq, salt, length and body
//	  8  body
//
// All integers are little-endian. A later format keeps magic and version
// where they are: a firmware refuses a file of a higher version (or a flag
// it does not know) instead of taking it for unused and overwriting it.
// The seq and salt in every record's CRC
// are what make a recycled file safe: a record left from an earlier use of
// the file fails its CRC and ends the replay there, where a log that only
// checked each record's own bytes would replay it.
const (
	headerSize = 4096
	recordHead = 8
	magic      = "HL7ECLOG"
	version    = 1
	flagCrypt  = 1
	// sealLen in a record's length field marks the end of a segment that
	// was closed for the next: its records end there, complete.
	sealLen = 0xFFFFFFFF
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// ErrCorrupt: the log's durable part cannot be read in full (a segment is
// missing or ends before its seal). Replaying what is left would skip
// writes the spool acknowledged, so replay stops and says so.
var ErrCorrupt = errors.New("commit log damaged")

// ErrNewerFormat: a segment was written by a newer firmware, in a format
// this one cannot read. Its records may be the only copy of what the spool
// acknowledged last, so the log is neither replayed nor reused.
var ErrNewerFormat = errors.New("commit log written by a newer firmware")

type header struct {
	seq, start uint64
	salt       [8]byte
	crypt      bool
}

func (h header) encode(b []byte) {
	clear(b[:headerSize])
	copy(b, magic)
	binary.LittleEndian.PutUint32(b[8:], version)
	var flags uint32
	if h.crypt {
		flags = flagCrypt
	}
	binary.LittleEndian.PutUint32(b[12:], flags)
	binary.LittleEndian.PutUint64(b[16:], h.seq)
	binary.LittleEndian.PutUint64(b[24:], h.start)
	copy(b[32:40], h.salt[:])
	binary.LittleEndian.PutUint32(b[40:], crc32.Checksum(b[:40], castagnoli))
}

// decodeHeader reads a segment's header; ok is false for a file that was
// never used, or whose header was torn. A header of a later version (any
// layout, as long as it keeps magic and version where version 1 has them),
// or of this version with a flag this one does not know, is an error
// wrapping ErrNewerFormat.
func decodeHeader(b []byte) (h header, ok bool, err error) {
	if len(b) < 44 || string(b[:8]) != magic {
		return h, false, nil
	}
	if v := binary.LittleEndian.Uint32(b[8:]); v > version {
		return h, false, fmt.Errorf("%w: format version %d, this firmware reads %d", ErrNewerFormat, v, version)
	} else if v != version {
		return h, false, nil
	}
	if crc32.Checksum(b[:40], castagnoli) != binary.LittleEndian.Uint32(b[40:]) {
		return h, false, nil
	}
	flags := binary.LittleEndian.Uint32(b[12:])
	if flags&^flagCrypt != 0 {
		return h, false, fmt.Errorf("%w: format flags %#x, this firmware knows %#x", ErrNewerFormat, flags, flagCrypt)
	}
	h.crypt = flags&flagCrypt != 0
	h.seq = binary.LittleEndian.Uint64(b[16:])
	h.start = binary.LittleEndian.Uint64(b[24:])
	copy(h.salt[:], b[32:40])
	return h, h.seq != 0 && h.start <= h.seq, nil
}

// recordCRC binds a record to one use of its file.
func recordCRC(h header, n uint32, body []byte) uint32 {
	var pre [20]byte
	binary.LittleEndian.PutUint64(pre[0:], h.seq)
	copy(pre[8:16], h.salt[:])
	binary.LittleEndian.PutUint32(pre[16:], n)
	c := crc32.Update(0, castagnoli, pre[:])
	return crc32.Update(c, castagnoli, body)
}

// crypter encrypts record bodies with AES-CTR. The counter block is the
// segment's salt, the record's offset and a block counter, so no two
// records of any use of any file share key stream.
type crypter struct{ block cipher.Block }

func newCrypter(key []byte) (*crypter, error) {
	if key == nil {
		return nil, nil
	}
	b, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("commit log key: %w", err)
	}
	return &crypter{block: b}, nil
}

func (c *crypter) xor(h header, off int64, dst, src []byte) {
	var iv [16]byte
	copy(iv[:8], h.salt[:])
	binary.BigEndian.PutUint32(iv[8:12], uint32(off))
	cipher.NewCTR(c.block, iv[:]).XORKeyStream(dst, src)
}

// scan walks the records of one segment's bytes (header included) and
// calls fn with each body, decrypted. It returns where the records end and
// whether they ended with the seal.
func scan(seg []byte, h header, c *crypter, fn func(body []byte) error) (end int64, sealed bool, err error) {
	off := int64(headerSize)
	for off+recordHead <= int64(len(seg)) {
		n := binary.LittleEndian.Uint32(seg[off:])
		sum := binary.LittleEndian.Uint32(seg[off+4:])
		if n == sealLen {
			return off, sum == recordCRC(h, n, nil), nil
		}
		if n == 0 || int64(n) > int64(len(seg))-off-recordHead {
			return off, false, nil
		}
		body := seg[off+recordHead : off+recordHead+int64(n)]
		if sum != recordCRC(h, n, body) {
			return off, false, nil
		}
		if h.crypt != (c != nil) {
			return off, false, fmt.Errorf("%w: segment %d is %s but the spool's key is %s", ErrCorrupt, h.seq, cryptWord(h.crypt), cryptWord(c != nil))
		}
		plain := body
		if c != nil {
			plain = make([]byte, n)
			c.xor(h, off, plain, body)
		}
		if err := fn(plain); err != nil {
			return off, false, err
		}
		off += recordHead + int64(n)
	}
	return off, false, nil
}

func cryptWord(b bool) string {
	if b {
		return "encrypted"
	}
	return "not encrypted"
}
