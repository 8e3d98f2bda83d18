//go:build !race

package hl7

const raceEnabled = false
