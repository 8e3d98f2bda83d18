//go:build race

package main

// raceEnabled lets volume tests leave the race build to the plain run in
// `make test`: the detector slows Badger ten-fold and proves nothing more there.
const raceEnabled = true
