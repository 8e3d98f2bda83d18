// Package lis01 speaks the CLSI LIS01-A2 (ASTM E1381) low-level protocol that
// laboratory analysers use on RS-232 lines, carrying HL7 v2 messages as the
// message text.
//
// A transmission is ENQ (answered ACK, or NAK when busy), then frames
//
//	STX FN text ETB|ETX C1 C2 CR LF
//
// each answered ACK or NAK, then EOT. FN is '1'..'7','0','1'... starting at
// 1 after each ENQ; a frame carries at most 240 text bytes; ETB marks an
// intermediate frame and ETX the last frame of a message; C1 C2 is the
// modulo-256 sum of the bytes from FN through ETB/ETX as two uppercase hex
// digits. A NAKed frame is sent again, at most six times, then the sender
// gives up with EOT. The sender waits 15 s for each reply; the receiver waits
// 30 s for each frame; both are Options so that tests can shorten them.
//
// # Messages
//
// The text of the frames up to and including an ETX frame is one message. An
// HL7 device sends one HL7 message per ETX (usually per transmission). A
// device that packs several HL7 messages into one text is handled by
// SplitMessages, which starts a new message at every segment that begins
// with "MSH"; a device that ends a message with ETX after every segment is
// not supported (the receiver cannot tell the last segment from the others
// before it has acknowledged it, which would break the promise below).
//
// # Nothing acknowledged before it is stored
//
// The receiver ACKs intermediate (ETB) frames as they come, but it does not
// answer the final (ETX) frame of a message: Receive returns the assembled
// text and a commit function, and only commit(true) sends that ACK, so the
// caller stores the message first. commit(false) sends NAK; the device sends
// the frame again (Receive returns the same text again) and after six NAKs
// it gives up and retries later with a new transmission. The caller must
// commit within the device's reply timeout (15 s by the standard) or the
// device aborts the transmission and sends the whole message again later:
// a duplicate, never a loss.
//
// # Deviations, on purpose
//
//   - Bytes that are not a reply (line noise) are ignored while a sender waits
//     for ACK/NAK, instead of counting as a NAK: treating noise as NAK makes
//     the late real ACK answer the retransmission and shifts every later
//     reply by one frame.
//   - A receiver accepts frames longer than 240 text bytes (up to
//     MaxFrameText) and lowercase checksum digits; senders never produce them.
//   - On contention (our ENQ answered by the device's ENQ) the sender yields
//     at once with ErrContention: the instrument has priority and the caller's
//     back-off provides the standard's 20 s pause.
package lis01
