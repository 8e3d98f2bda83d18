// Package serialport is the serial (RS-232, USB adapter) source and
// destination, in two framings: MLLP over the line, and CLSI LIS01-A2 /
// ASTM E1381 (package lis01) carrying HL7 as message text.
//
// Nothing the device sent is acknowledged before intake has durably stored
// it: the HL7 ACK (MLLP) or the ACK of the last LIS01 frame is written only
// after Intake.Accept returns, and for LIS01 only when it returned Accepted.
//
// tarm/serial needs care, and this package takes it:
//
//   - The port is always opened with a read timeout (VTIME), because Close
//     waits for a pending read and a read without timeout may never end.
//     One goroutine owns the port and checks its context between reads.
//   - A read timeout comes back as io.EOF with no data. That is not the end
//     of the stream; a dead line (unplugged adapter, hung-up pty) returns
//     the same io.EOF, but at once instead of after the timeout, and its
//     path disappears or names another device. Both are checked after every
//     empty read; writes to a dead line fail with EIO.
//   - A dead device is closed and reopened: the component is Missing while
//     the path is absent and Down while it exists but cannot be opened,
//     polling every reopen_interval, then Up again.
//
// Throughput at 115200 baud 8N1 is bounded by the line: 11,520 bytes/s,
// and both framings wait for each answer, so both directions count. A
// 1 KiB message costs 1,024 + 43 bytes on a LIS01-A2 line (5 frames of 7
// framing bytes, ENQ, EOT, and 6 one-byte replies): 10.8 messages/s. On an
// MLLP line it costs 1,024 + 3 framing bytes plus the HL7 ACK and its 3
// framing bytes (97 bytes with a 91-byte ACK): 10.3 messages/s.
// TestWireOverhead measures these figures and BenchmarkSource the
// unthrottled rate through a pseudo-terminal (about 13,000 messages/s MLLP
// and 7,700 LIS01-A2 on a 2-core x86 VM), so the software is never what
// limits a real port.
package serialport
