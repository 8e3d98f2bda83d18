package serialport

import (
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"time"

	"github.com/hl7edge/hl7edge/pipeline/vocab/units"
	"github.com/tarm/serial"
)

// Framings a port can speak.
const (
	FramingMLLP  = "mllp"     // VT message FS CR, HL7 ACK written back framed
	FramingLIS01 = "lis01-a2" // CLSI LIS01-A2 / ASTM E1381 ENQ/STX/ETX/checksum/EOT
)

// Defaults, as sample.yaml beside this file documents them.
const (
	DefaultBaud            = 9600
	DefaultDataBits        = 8
	DefaultParity          = "none"
	DefaultStopBits        = 1
	DefaultMaxMessageBytes = 1 << 20
	DefaultReopenInterval  = 2 * time.Second
	DefaultACKTimeout      = 30 * time.Second
)

const (
	minMessageBytes   = 256     // room for an MSH segment, needed to answer AR
	maxMessageBytes   = 1 << 30 // held in memory while a message arrives
	minReopenInterval = 10 * time.Millisecond
)

// bauds are the rates the serial driver can set.
var bauds = []int{50, 75, 110, 134, 150, 200, 300, 600, 1200, 1800, 2400, 4800, 9600, 19200,
	38400, 57600, 115200, 230400, 460800, 500000, 576000, 921600, 1000000, 1152000, 1500000,
	2000000, 2500000, 3000000, 3500000, 4000000}

// Config is one serial port, as a source or a destination of type serial.
// Its keys sit beside the entry's name and type in the sources or
// destinations list (decode with `yaml:",inline"`).
type Config struct {
	// Device is the port's path; prefer the stable /dev/serial/by-id/...
	// link, which survives the adapter being plugged into another socket.
	Device   string `yaml:"device"`
	Baud     int    `yaml:"baud"`
	DataBits int    `yaml:"data_bits"`
	Parity   string `yaml:"parity"`    // none | even | odd
	StopBits int    `yaml:"stop_bits"` // 1 | 2
	Framing  string `yaml:"framing"`   // mllp | lis01-a2
	// MaxMessageBytes bounds one message; a longer one is refused (MLLP:
	// AR; LIS01: NAK of its last frame) and counted as "oversize".
	MaxMessageBytes units.Size `yaml:"max_message_bytes"`
	// ReopenInterval is how often a missing or failed device is tried again.
	ReopenInterval units.Duration `yaml:"reopen_interval"`
	// ACKTimeout (destinations, MLLP framing) is how long to wait for the
	// device's HL7 ACK before the delivery counts as failed and is retried.
	ACKTimeout units.Duration `yaml:"ack_timeout"`
}

// SetDefaults fills unset (zero) fields with the defaults. Framing has no
// default: the two framings are not interchangeable and guessing wrong
// looks like a dead line.
func (c *Config) SetDefaults() {
	if c.Baud == 0 {
		c.Baud = DefaultBaud
	}
	if c.DataBits == 0 {
		c.DataBits = DefaultDataBits
	}
	if c.Parity == "" {
		c.Parity = DefaultParity
	}
	if c.StopBits == 0 {
		c.StopBits = DefaultStopBits
	}
	if c.MaxMessageBytes == 0 {
		c.MaxMessageBytes = DefaultMaxMessageBytes
	}
	if c.ReopenInterval == 0 {
		c.ReopenInterval = units.Duration(DefaultReopenInterval)
	}
	if c.ACKTimeout == 0 {
		c.ACKTimeout = units.Duration(DefaultACKTimeout)
	}
}

// Validate checks the configuration after SetDefaults. It does not look at
// the device: a port that is unplugged at start is waited for, not an error.
// MessageLimit is max_message_bytes (component.MessageLimiter).
func (c *Config) MessageLimit() int64 { return int64(c.MaxMessageBytes) }

func (c *Config) Validate() error {
	var errs []error
	switch {
	case c.Device == "":
		errs = append(errs, errors.New("device is empty: set the port's path, preferably a /dev/serial/by-id/ link"))
	case !filepath.IsAbs(c.Device):
		errs = append(errs, fmt.Errorf("device %q is not an absolute path: write it like /dev/serial/by-id/usb-FTDI_FT232R-if00-port0 or /dev/ttyUSB0", c.Device))
	}
	if !slices.Contains(bauds, c.Baud) {
		errs = append(errs, fmt.Errorf("baud %d is not a rate the serial driver supports: use one of 1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200 (or up to 4000000)", c.Baud))
	}
	if c.DataBits < 5 || c.DataBits > 8 {
		errs = append(errs, fmt.Errorf("data_bits %d: want 5, 6, 7 or 8 (usually 8, or 7 with even parity)", c.DataBits))
	}
	if _, ok := parities[c.Parity]; !ok {
		errs = append(errs, fmt.Errorf("parity %q: want none, even or odd", c.Parity))
	}
	if c.StopBits != 1 && c.StopBits != 2 {
		errs = append(errs, fmt.Errorf("stop_bits %d: want 1 or 2", c.StopBits))
	}
	switch c.Framing {
	case FramingMLLP, FramingLIS01:
	case "":
		errs = append(errs, errors.New("framing is empty: set mllp or lis01-a2 as the device's manual says"))
	default:
		errs = append(errs, fmt.Errorf("framing %q: want mllp or lis01-a2", c.Framing))
	}
	if c.MaxMessageBytes < minMessageBytes || c.MaxMessageBytes > maxMessageBytes {
		errs = append(errs, fmt.Errorf("max_message_bytes %v: want between %v and %v", c.MaxMessageBytes, units.Size(minMessageBytes), units.Size(maxMessageBytes)))
	}
	if c.ReopenInterval.D() < minReopenInterval {
		errs = append(errs, fmt.Errorf("reopen_interval %v is shorter than %v: a missing device would be polled in a tight loop", c.ReopenInterval, minReopenInterval))
	}
	if c.ACKTimeout.D() <= 0 {
		errs = append(errs, fmt.Errorf("ack_timeout %v: want a positive duration such as 30s", c.ACKTimeout))
	}
	return errors.Join(errs...)
}

var parities = map[string]serial.Parity{
	"none": serial.ParityNone,
	"even": serial.ParityEven,
	"odd":  serial.ParityOdd,
}

func (c *Config) serial(readTimeout time.Duration) *serial.Config {
	return &serial.Config{
		Name:        c.Device,
		Baud:        c.Baud,
		Size:        byte(c.DataBits),
		Parity:      parities[c.Parity],
		StopBits:    serial.StopBits(c.StopBits),
		ReadTimeout: readTimeout,
	}
}
