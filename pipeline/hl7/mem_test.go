package hl7

import "runtime"

type runtimeMem struct{ total uint64 }

func (r *runtimeMem) read() {
	var s runtime.MemStats
	runtime.ReadMemStats(&s)
	r.total = s.TotalAlloc
}
