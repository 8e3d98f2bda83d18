//go:build race

package mllp

// raceEnabled: the race detector slows every goroutine several times over,
// so the flood test holds each ACK to a looser bound under it; `make
// volume` runs it without the detector, held to 2 s.
const raceEnabled = true
