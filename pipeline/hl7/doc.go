// Package hl7 reads and answers HL7 v2 messages: it normalizes segment
// separators, parses the MSH header, gives field access by path
// (PID-3.1, OBX-5, MSH-9.2) and builds the acknowledgement (ACK) a sender
// expects back.
//
// # What Parse demands
//
// Parse refuses a message only for faults that make it impossible to route,
// spool or acknowledge it correctly:
//
//   - the first segment must be MSH, with a field separator and four encoding
//     characters (five from v2.7, the truncation character), all distinct
//     punctuation;
//   - every segment must start with a segment ID (a capital letter, then two
//     capital letters or digits) followed by the field separator or the end
//     of the segment: a bare line break inside a field splits the field into
//     a fake segment, and accepting it would silently corrupt the data;
//   - a second MSH is refused: two messages glued together must be sent as
//     two frames, each with its own ACK;
//   - MSH-9 (message type, MSH-9.1 filled), MSH-10 (control ID) and MSH-12
//     (version, starting with "2") are required: without MSH-9 nothing can be
//     routed, without MSH-10 the ACK cannot name the message it answers, and
//     the ACK layout depends on MSH-12;
//   - MSH-10 must be printable and at most 199 bytes (its v2.7 length): it
//     is the one value logs and MQTT may name.
//
// Everything else the standard calls required (MSH-7, MSH-11, ...) is
// tolerated, because refusing a lab result over a missing timestamp helps
// nobody. Every refusal is a *ParseError carrying the HL7 table 0357 code to
// put in the ACK; its text names the field and what the sender must fix and
// never quotes message content beyond segment IDs and MSH delimiters.
//
// # Raw values
//
// Get and Values return field values exactly as sent, escape sequences
// (\F\, \S\, ...) included. Routing compares values after folding them to
// lowercase letters and digits, so decoding would change nothing there; an
// ACK echoes MSH fields back under the same delimiters, so the raw form is
// the correct one to copy; and decoding would allocate on every lookup. Use
// Delimiters.UnescapeText when a human is to read a value.
package hl7
