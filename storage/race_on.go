//go:build race

package storage

// raceEnabled says the race detector is built in. Volume tests then leave
// their run to the plain build in `make test` (the detector slows Badger
// ten-fold and proves nothing more there), and value-log clean-up keeps
// writes out while it runs (cleanValueLog says why).
const raceEnabled = true
