//go:build race

package build

// raceEnabled keeps the release test out of `go test -race ./...`: it builds
// and packages binaries, which the race detector has nothing to say about.
const raceEnabled = true
