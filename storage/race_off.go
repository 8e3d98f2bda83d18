//go:build !race

package storage

// raceEnabled says the race detector is built in (race_on.go).
const raceEnabled = false
