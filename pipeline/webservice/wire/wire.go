// Package wire is the XML of the Postmaster web-service protocol
// (docs/protocol.md), shared by the gateway's client, the reference server and
// the conformance checker.
//
// It is strict in what it writes (Encode: no XML declaration, attributes in
// the documented order, upper-case names) and lenient in what it reads
// (Parse: any letter case, optional declaration, UTF-8 BOM, EXCEPTION with
// any subset of its attributes).
package wire

import (
	"bytes"
	"encoding/xml"
	"fmt"
	"strings"
)

// ContentType is what every request and reply is sent as.
const ContentType = "text/xml; charset=utf-8"

// The shapes below are declared in docs/protocol.md order: encoding/xml writes
// attributes in field order, so the struct layout is the wire layout.
// omitempty lets one shape serve the variants (for example the destination
// ping carries PASSWORD and COMPUTERNAME, the data-source ping FREQUENCY and
// REPING instead).

// Ping is Stage 1 of both directions.
type Ping struct {
	XMLName      xml.Name `xml:"PING"`
	LogonID      string   `xml:"LOGONID,attr,omitempty"`
	Password     string   `xml:"PASSWORD,attr,omitempty"`
	PMVersion    string   `xml:"PMVERSION,attr,omitempty"`
	ComputerName string   `xml:"COMPUTERNAME,attr,omitempty"`
	Frequency    string   `xml:"FREQUENCY,attr,omitempty"` // data source: "20 Seconds"
	Reping       string   `xml:"REPING,attr,omitempty"`    // data source: "True" or "False"
}

// PingReply is the URL list a ping is answered with: HL7POSTURL for a
// destination, MAILBOXURL, HL7GETURL and HL7ACKURL for a data source.
type PingReply struct {
	XMLName    xml.Name `xml:"PING"`
	HL7PostURL string   `xml:"HL7POSTURL,attr,omitempty"`
	MailboxURL string   `xml:"MAILBOXURL,attr,omitempty"`
	HL7GetURL  string   `xml:"HL7GETURL,attr,omitempty"`
	HL7AckURL  string   `xml:"HL7ACKURL,attr,omitempty"`
	Logon      string   `xml:"LOGON,attr,omitempty"` // the data source's spelling
	LogonID    string   `xml:"LOGONID,attr,omitempty"`
	Reping     string   `xml:"REPING,attr,omitempty"`
}

// LogonName is the logon the reply names, whichever spelling it used.
func (p *PingReply) LogonName() string {
	if p.LogonID != "" {
		return p.LogonID
	}
	return p.Logon
}

// RepingRequested reports whether the server asked to be pinged before every
// post. Absent means no.
func (p *PingReply) RepingRequested() bool { return ParseBool(p.Reping) }

// MSH holds the MSH fields a post carries as attributes. Every field is
// always written, empty when the message lacks it.
type MSH struct {
	SendingApp        string `xml:"SA,attr"`
	SendingFacility   string `xml:"SF,attr"`
	ReceivingApp      string `xml:"RA,attr"`
	ReceivingFacility string `xml:"RF,attr"`
	MessageType       string `xml:"MTYPE,attr"`
	TriggerEvent      string `xml:"MEVENT,attr"`
	ControlID         string `xml:"MCONTROLID,attr"`
	ProcessingID      string `xml:"MTESTPROD,attr"`
	Version           string `xml:"MVERSION,attr"`
}

// HL7 is a destination post, and (without credentials) the reply to a data
// source get.
type HL7 struct {
	XMLName  xml.Name `xml:"HL7"`
	ID       string   `xml:"ID,attr"`
	LogonID  string   `xml:"LOGONID,attr,omitempty"`
	Password string   `xml:"PASSWORD,attr,omitempty"`
	MSH
	PMVersion    string  `xml:"PMVERSION,attr,omitempty"`
	ComputerName string  `xml:"COMPUTERNAME,attr,omitempty"`
	Message      Message `xml:"MESSAGE"`
}

// Message carries the HL7 bytes as standard Base64.
type Message struct {
	ID   string `xml:"ID,attr"`
	Data string `xml:",chardata"`
}

// Ack is the reply to a post.
type Ack struct {
	XMLName   xml.Name `xml:"ACK"`
	MessageID string   `xml:"MESSAGEID,attr,omitempty"`
	ID        string   `xml:"ID,attr,omitempty"` // accepted in place of MESSAGEID
}

// GUID is the acknowledged message's ID, whichever attribute carried it.
func (a *Ack) GUID() string {
	if a.MessageID != "" {
		return a.MessageID
	}
	return a.ID
}

// Mailbox is the data source's Stage 2 request.
type Mailbox struct {
	XMLName      xml.Name `xml:"HL7MAILBOX"`
	LogonID      string   `xml:"LOGONID,attr,omitempty"`
	Password     string   `xml:"PASSWORD,attr,omitempty"`
	PMVersion    string   `xml:"PMVERSION,attr,omitempty"`
	ComputerName string   `xml:"COMPUTERNAME,attr,omitempty"`
}

// MailboxReply lists waiting messages, oldest first.
type MailboxReply struct {
	XMLName xml.Name      `xml:"HL7MAILBOX"`
	Count   string        `xml:"COUNT,attr,omitempty"`
	Items   []MailboxItem `xml:"HL7"`
}

// MailboxItem is one waiting message.
type MailboxItem struct {
	ID string `xml:"ID,attr"`
}

// Get asks for one waiting message.
type Get struct {
	XMLName      xml.Name `xml:"HL7"`
	ID           string   `xml:"ID,attr"`
	LogonID      string   `xml:"LOGONID,attr,omitempty"`
	Password     string   `xml:"PASSWORD,attr,omitempty"`
	PMVersion    string   `xml:"PMVERSION,attr,omitempty"`
	ComputerName string   `xml:"COMPUTERNAME,attr,omitempty"`
}

// HL7Ack acknowledges a message the gateway has durably stored.
type HL7Ack struct {
	XMLName      xml.Name `xml:"HL7ACK"`
	ID           string   `xml:"ID,attr"`
	LogonID      string   `xml:"LOGONID,attr,omitempty"`
	Password     string   `xml:"PASSWORD,attr,omitempty"`
	PMVersion    string   `xml:"PMVERSION,attr,omitempty"`
	ComputerName string   `xml:"COMPUTERNAME,attr,omitempty"`
}

// Exception is the protocol's error reply. It is also a Go error so that a
// client can return it as is; its text is what a server sent, cleaned of
// control characters and cut short, because it ends up in logs and health.
type Exception struct {
	XMLName      xml.Name `xml:"EXCEPTION"`
	Method       string   `xml:"METHOD,attr,omitempty"`
	ErrorCode    string   `xml:"ERRORCODE,attr,omitempty"`
	ErrorMessage string   `xml:"ERRORMESSAGE,attr,omitempty"`
	Additional   string   `xml:"ADDITIONAL,attr,omitempty"`
}

// Empty reports an EXCEPTION without ERRORCODE and ERRORMESSAGE, which
// means "OK" as the answer to a data-source ack.
func (x *Exception) Empty() bool {
	return strings.TrimSpace(x.ErrorCode) == "" && strings.TrimSpace(x.ErrorMessage) == ""
}

func (x *Exception) Error() string {
	if x.Empty() {
		return "web service answered with an empty EXCEPTION"
	}
	var b strings.Builder
	b.WriteString("web service EXCEPTION")
	if x.ErrorCode != "" {
		b.WriteString(" " + Clean(x.ErrorCode, 32))
	}
	if x.ErrorMessage != "" {
		b.WriteString(": " + Clean(x.ErrorMessage, 200))
	}
	if x.Method != "" {
		b.WriteString(" (method " + Clean(x.Method, 64))
		if x.Additional != "" {
			b.WriteString(", " + Clean(x.Additional, 64))
		}
		b.WriteString(")")
	} else if x.Additional != "" {
		b.WriteString(" (" + Clean(x.Additional, 64) + ")")
	}
	return b.String()
}

// Clean makes peer-supplied text safe for a log line: control characters
// become spaces and the text is cut to max runes.
func Clean(s string, max int) string {
	var b strings.Builder
	n := 0
	for _, r := range s {
		if n == max {
			b.WriteString("…")
			break
		}
		if r < 0x20 || r == 0x7f {
			r = ' '
		}
		b.WriteRune(r)
		n++
	}
	return b.String()
}

// Encode writes one shape the way the protocol wants it sent: a single
// element, no XML declaration.
func Encode(v any) ([]byte, error) {
	var buf bytes.Buffer
	if err := xml.NewEncoder(&buf).Encode(v); err != nil {
		return nil, fmt.Errorf("wire: encode %T: %w", v, err)
	}
	return buf.Bytes(), nil
}

// FormatBool writes a protocol boolean.
func FormatBool(b bool) string {
	if b {
		return "True"
	}
	return "False"
}

// ParseBool reads a protocol boolean leniently: True, true, yes, 1 are true;
// anything else, including absent, is false.
func ParseBool(s string) bool {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "true", "yes", "1", "y", "t":
		return true
	}
	return false
}
