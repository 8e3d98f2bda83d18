//go:build !race

package mllp

const raceEnabled = false
