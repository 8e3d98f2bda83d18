package hl7

import (
	"errors"
	"fmt"
)

// HL7 table 0357 (message error condition codes), carried in the ERR
// segment of a negative ACK.
const (
	CodeSegmentSequenceError   = 100
	CodeRequiredFieldMissing   = 101
	CodeDataTypeError          = 102
	CodeTableValueNotFound     = 103
	CodeUnsupportedMessageType = 200
	CodeUnsupportedEventCode   = 201
	CodeUnsupportedProcessing  = 202
	CodeUnsupportedVersion     = 203
	CodeUnknownKey             = 204
	CodeDuplicateKey           = 205
	CodeRecordLocked           = 206
	CodeInternalError          = 207 // also: spool full or failing, retry later
)

// ErrorText returns the table 0357 wording of code, or "" for a code the
// table does not define.
func ErrorText(code int) string {
	switch code {
	case 0:
		return "Message accepted"
	case CodeSegmentSequenceError:
		return "Segment sequence error"
	case CodeRequiredFieldMissing:
		return "Required field missing"
	case CodeDataTypeError:
		return "Data type error"
	case CodeTableValueNotFound:
		return "Table value not found"
	case CodeUnsupportedMessageType:
		return "Unsupported message type"
	case CodeUnsupportedEventCode:
		return "Unsupported event code"
	case CodeUnsupportedProcessing:
		return "Unsupported processing id"
	case CodeUnsupportedVersion:
		return "Unsupported version id"
	case CodeUnknownKey:
		return "Unknown key identifier"
	case CodeDuplicateKey:
		return "Duplicate key identifier"
	case CodeRecordLocked:
		return "Application record locked"
	case CodeInternalError:
		return "Application internal error"
	}
	return ""
}

// ParseError is why Parse refused a message. Code is the table 0357 code to
// answer with (ACKUnparsed(raw, flow.Rejected, e.Code, SenderText(e), ...)).
// Msg, the error text, names the field and the fix and never quotes the
// message: it goes to logs, health and MQTT. ForSender may also quote what
// was found, which helps the sender's engineer; it goes back to the sender
// only (MSA-3/ERR), who owns that message anyway.
type ParseError struct {
	Code      int
	Msg       string
	ForSender string // "" = Msg
}

func (e *ParseError) Error() string { return e.Msg }

func parseErrorf(code int, format string, args ...any) *ParseError {
	return &ParseError{Code: code, Msg: fmt.Sprintf(format, args...)}
}

// quotingError is a ParseError whose sender text quotes content: msg is
// for logs, forSender for the ACK.
func quotingError(code int, msg, forSender string) *ParseError {
	return &ParseError{Code: code, Msg: msg, ForSender: forSender}
}

// SenderText is the reason to send back to the sender of a refused
// message in MSA-3/ERR: a ParseError's ForSender text when it has one,
// else err's text. Never log it.
func SenderText(err error) string {
	var pe *ParseError
	if errors.As(err, &pe) && pe.ForSender != "" {
		return pe.ForSender
	}
	return err.Error()
}

// ErrorCode returns the table 0357 code carried by err (a *ParseError,
// possibly wrapped), or CodeInternalError for any other error.
func ErrorCode(err error) int {
	var pe *ParseError
	if errors.As(err, &pe) {
		return pe.Code
	}
	return CodeInternalError
}
