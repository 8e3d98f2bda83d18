package storage

import (
	"bytes"
	"context"
	"encoding/binary"
	"hash/crc32"
	"path/filepath"
	"testing"
)

func vlogEntry(key, val []byte) []byte {
	b := []byte{0, 0}
	b = binary.AppendUvarint(b, uint64(len(key)))
	b = binary.AppendUvarint(b, uint64(len(val)))
	b = binary.AppendUvarint(b, 0)
	b = append(append(b, key...), val...)
	return binary.BigEndian.AppendUint32(b, crc32.Checksum(b, crc32.MakeTable(crc32.Castagnoli)))
}

// The hand-written reader agrees with what Badger wrote: every large value
// the spool stored reads back through its table pointer byte for byte.
func TestReadValuePointerMatchesBadger(t *testing.T) {
	dir := t.TempDir()
	s := openTest(t, dir, "a")
	raw := largeMsg(1, 500<<10)
	if _, err := s.Append(context.Background(), Entry{Source: "s", Raw: raw, Dests: []string{"a"}}); err != nil {
		t.Fatal(err)
	}
	s.Close()
	kv := map[string]salvaged{}
	tables := tableFiles(t, dir)
	for _, tf := range tables {
		if err := readTable(tf, dir, kv); err != nil {
			t.Fatal(err)
		}
	}
	found := false
	for k, v := range kv {
		if k[0] == famMessage && !v.deleted {
			r, err := decodeRecord(v.value)
			if err != nil || !bytes.Equal(r.Raw, raw) {
				t.Fatalf("message read through its value pointer: %v", err)
			}
			found = true
		}
	}
	if !found {
		t.Fatalf("no message in %d tables", len(tables))
	}
}

func TestDecodeVlogEntryRefusesDamage(t *testing.T) {
	e := vlogEntry([]byte("k"), []byte("value"))
	if v, err := decodeVlogEntry(e); err != nil || string(v) != "value" {
		t.Fatalf("good entry: %q, %v", v, err)
	}
	bad := bytes.Clone(e)
	bad[len(bad)-6] ^= 1
	if _, err := decodeVlogEntry(bad); err == nil {
		t.Fatal("a flipped bit was not noticed")
	}
	if _, err := decodeVlogEntry(e[:5]); err == nil {
		t.Fatal("a torn entry was read")
	}
}

// The reader parses what a power cut or a failing card may have damaged.
func FuzzDecodeVlogEntry(f *testing.F) {
	f.Add(vlogEntry([]byte("m123"), []byte("MSH|^~\\&|")))
	f.Add([]byte{0, 0, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 1, 0, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		v, err := decodeVlogEntry(b)
		if err == nil && len(v) > len(b) {
			t.Fatalf("value of %d bytes from an entry of %d", len(v), len(b))
		}
	})
}

func tableFiles(t *testing.T, dir string) []string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(dir, "*.sst"))
	if err != nil || len(m) == 0 {
		t.Fatalf("no table in %s (%v)", dir, err)
	}
	return m
}
