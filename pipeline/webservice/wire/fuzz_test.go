package wire

import (
	"errors"
	"reflect"
	"testing"
)

var seeds = []string{
	`<PING LOGONID="gw-17" PASSWORD="secret" PMVERSION="1.0.0.0" COMPUTERNAME="ward3-gw"></PING>`,
	`<PING HL7POSTURL="https://ingest.example.org/hl7?a=post" LOGONID="gw-17" REPING="False"></PING>`,
	`<PING MAILBOXURL="https://h/?Action=HL7Mailbox" HL7GETURL="https://h/?Action=GetHL7" HL7ACKURL="https://h/?Action=HL7Ack" LOGON="gw-17"></PING>`,
	`<HL7 ID="G" SA="LAB"><MESSAGE ID="G">TVNIfF5+XCZ8TEFCfFdBUkQzfA==</MESSAGE></HL7>`,
	`<ACK MESSAGEID="6f1c7a52-3b0e-4c1e-9d59-2f3c1d7e8a90"></ACK>`,
	`<ack id="x"/>`,
	`<HL7MAILBOX COUNT="2"><HL7 ID="A1"></HL7><HL7 ID="A2"></HL7></HL7MAILBOX>`,
	`<EXCEPTION METHOD="PingAcknowledgement" ERRORCODE="3267" ERRORMESSAGE="Invalid logon id" ADDITIONAL="StreamRequest"></EXCEPTION>`,
	`<EXCEPTION></EXCEPTION>`,
	"\xEF\xBB\xBF<?xml version=\"1.0\" encoding=\"utf-8\"?>\r\n<ping hl7posturl=\"https://h\"/>",
	"<?xml version=\"1.0\" encoding=\"ISO-8859-1\"?><PING LOGONID=\"\xe9\"/>",
	`<!DOCTYPE x [<!ENTITY a "b">]><ACK ID="&a;"/>`,
	`<a><b><c/></b></a>`,
	`<html>`,
	``,
}

// FuzzDecode feeds the lenient decoder arbitrary bodies: it must never panic,
// and whatever it accepts must survive a strict re-encoding unchanged.
func FuzzDecode(f *testing.F) {
	for _, s := range seeds {
		f.Add([]byte(s))
	}
	shapes := []func() any{
		func() any { return &Ping{} }, func() any { return &PingReply{} }, func() any { return &HL7{} },
		func() any { return &Ack{} }, func() any { return &MailboxReply{} }, func() any { return &HL7Ack{} },
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		for _, mk := range shapes {
			v := mk()
			err := DecodeReply(body, v)
			var x *Exception
			switch {
			case errors.As(err, &x):
				_ = x.Error()
				_ = x.Empty()
				checkRoundTrip(t, x, &Exception{})
			case err == nil:
				checkRoundTrip(t, v, mk())
				if h, ok := v.(*HL7); ok {
					_, _ = DecodeMessage(h.Message.Data)
				}
			case !errors.Is(err, ErrNotXML) && !errors.Is(err, ErrShape):
				t.Fatalf("DecodeReply(%q) error %v wraps neither ErrNotXML nor ErrShape", body, err)
			}
		}
	})
}

func checkRoundTrip(t *testing.T, v, fresh any) {
	t.Helper()
	enc, err := Encode(v)
	if err != nil {
		// encoding/xml refuses some runes (for example U+FFFE) that a
		// lenient reader let through; that is a refusal, not a bug.
		return
	}
	if err := DecodeReply(enc, fresh); err != nil {
		var x *Exception
		if !errors.As(err, &x) {
			t.Fatalf("re-decode of %s: %v", enc, err)
		}
		fresh = x
	}
	if !reflect.DeepEqual(normalize(v), normalize(fresh)) {
		t.Fatalf("round trip changed the value:\n%#v\n%#v\nvia %s", v, fresh, enc)
	}
}

// normalize drops what a round trip may legitimately change: the root name's
// spelling and an empty slice versus nil.
func normalize(v any) any {
	rv := reflect.ValueOf(v).Elem()
	cp := reflect.New(rv.Type()).Elem()
	cp.Set(rv)
	if f := cp.FieldByName("XMLName"); f.IsValid() {
		f.Set(reflect.Zero(f.Type()))
	}
	if f := cp.FieldByName("Items"); f.IsValid() && f.Len() == 0 {
		f.Set(reflect.Zero(f.Type()))
	}
	return cp.Interface()
}

// FuzzReadMSH: any bytes give an MSH without panicking.
func FuzzReadMSH(f *testing.F) {
	for _, s := range []string{
		"MSH|^~\\&|LAB|WARD3|EHR|HOSP|20250101||ORU^R01|MSG00042|P|2.5.1\rPID|1\r",
		"MSH|", "MSH|^", "MSH|||||||||||", "\xEF\xBB\xBFMSH#$~\\&#A", "\r\n", "",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		_ = ReadMSH(raw)
	})
}

// FuzzDecodeMessage: Base64 decoding never panics and inverts encoding.
func FuzzDecodeMessage(f *testing.F) {
	f.Add("TVNIfF5+XCZ8TEFCfFdBUkQzfA==")
	f.Add("TVNI\r\nfF5+")
	f.Add("=")
	f.Fuzz(func(t *testing.T, s string) {
		b, err := DecodeMessage(s)
		if err != nil {
			return
		}
		if again, err := DecodeMessage(EncodeMessage(b)); err != nil || string(again) != string(b) {
			t.Fatalf("re-decode: %q, %v", again, err)
		}
	})
}
