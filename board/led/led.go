// Package led names the four logical front-panel LEDs and the pin set a
// board profile hands out for them. It is vocabulary only, the way
// periph.io's conn/gpio is interfaces only: hardware drivers (board/rpi,
// board/sim, board/sysfs) depend on it, and the LED logic that decides what
// the LEDs show (device/frontpanel) depends on it too, so drivers never depend on
// that logic.
package led

import (
	"fmt"

	"periph.io/x/conn/v3/gpio"
)

// LED is one logical front-panel LED; a board profile maps it to a pin.
type LED int

// The four logical LEDs.
const (
	SYS LED = iota
	LINK
	ACT
	FAULT
	NumLEDs = 4
)

// String is the LED's configuration key (leds.sys, leds.link...).
func (l LED) String() string {
	switch l {
	case SYS:
		return "sys"
	case LINK:
		return "link"
	case ACT:
		return "act"
	case FAULT:
		return "fault"
	}
	return fmt.Sprintf("led(%d)", int(l))
}

// Pins are the outputs a board profile supplies, indexed by LED. A nil pin
// is an LED the board does not have; whoever drives the pins skips it.
type Pins [NumLEDs]gpio.PinOut

// Describer is a board that can tell a person what an LED means (the sim
// board prints it). The LED logic calls Describe once per change of
// meaning, with text such as "4 flashes, pause — FAULT: code 4, clock not
// synchronised: check NTP", so the board needs no knowledge of health or
// fault codes. After the first Describe of an LED the board stops showing
// that LED's raw on/off changes: they are the blinks of a described pattern.
type Describer interface {
	Describe(which LED, text string)
}
