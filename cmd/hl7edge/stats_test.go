package main

import (
	"encoding/json"
	"testing"

	"github.com/hl7edge/hl7edge/storage"
)

func decodeStats(t testing.TB, data any) storage.Stats {
	t.Helper()
	b, _ := json.Marshal(data)
	var st storage.Stats
	if err := json.Unmarshal(b, &st); err != nil {
		t.Fatal(err)
	}
	return st
}
