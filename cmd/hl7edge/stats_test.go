package main

import (
	"encoding/json"
	"testing"

	"github.com/hl7edge/hl7edge/device/appliance"
)

func decodeStats(t testing.TB, data any) appliance.SpoolReport {
	t.Helper()
	b, _ := json.Marshal(data)
	var st appliance.SpoolReport
	if err := json.Unmarshal(b, &st); err != nil {
		t.Fatal(err)
	}
	return st
}
