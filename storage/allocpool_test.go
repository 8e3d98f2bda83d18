package storage

import (
	"testing"

	"github.com/dgraph-io/ristretto/v2/z"
)

// Badger builds every table in an allocator from ristretto's pool. The
// stock pool keeps returned allocators, at the size of the biggest table
// they built, while tables keep being built: 40-50 MiB of live heap under
// steady ingest. go.mod replaces ristretto with a copy whose pool releases
// them (storage/third_party/ristretto/PATCHES.md); this fails if that
// replace is ever lost.
func TestTableBuilderMemoryIsReturned(t *testing.T) {
	p := z.NewAllocatorPool(8)
	defer p.Release()
	a := p.Get(4<<10, "TableBuilder")
	a.Allocate(16 << 20) // a table's worth of blocks
	p.Return(a)
	b := p.Get(4<<10, "TableBuilder")
	defer b.Release()
	if b.Allocated() >= 16<<20 {
		t.Fatalf("the next table builder got an allocator still holding %d MiB: ristretto's pool keeps builder memory; "+
			"go.mod must replace github.com/dgraph-io/ristretto/v2 with ./storage/third_party/ristretto", b.Allocated()>>20)
	}
}
