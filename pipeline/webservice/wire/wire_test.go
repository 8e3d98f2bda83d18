package wire

import (
	"errors"
	"strings"
	"testing"
)

func TestEncodeIsStrict(t *testing.T) {
	tests := []struct {
		name string
		v    any
		want string
	}{
		{"destination ping", &Ping{LogonID: "gw-17", Password: "secret", PMVersion: "1.0.0.0", ComputerName: "ward3-gw"},
			`<PING LOGONID="gw-17" PASSWORD="secret" PMVERSION="1.0.0.0" COMPUTERNAME="ward3-gw"></PING>`},
		{"source ping", &Ping{LogonID: "gw-17", PMVersion: "1.0.0.0", Frequency: "20 Seconds", Reping: "True"},
			`<PING LOGONID="gw-17" PMVERSION="1.0.0.0" FREQUENCY="20 Seconds" REPING="True"></PING>`},
		{"destination ping reply", &PingReply{HL7PostURL: "https://ingest.example.org/hl7?a=post", LogonID: "gw-17", Reping: "False"},
			`<PING HL7POSTURL="https://ingest.example.org/hl7?a=post" LOGONID="gw-17" REPING="False"></PING>`},
		{"source ping reply", &PingReply{MailboxURL: "https://h/?Action=HL7Mailbox", HL7GetURL: "https://h/?Action=GetHL7", HL7AckURL: "https://h/?Action=HL7Ack", Logon: "gw-17"},
			`<PING MAILBOXURL="https://h/?Action=HL7Mailbox" HL7GETURL="https://h/?Action=GetHL7" HL7ACKURL="https://h/?Action=HL7Ack" LOGON="gw-17"></PING>`},
		{"post", &HL7{ID: "G1", LogonID: "gw-17", Password: "secret",
			MSH:       MSH{SendingApp: "LAB", SendingFacility: "WARD3", ReceivingApp: "EHR", ReceivingFacility: "HOSP", MessageType: "ORU", TriggerEvent: "R01", ControlID: "MSG00042", ProcessingID: "P", Version: "2.5.1"},
			PMVersion: "1.0.0.0", ComputerName: "ward3-gw", Message: Message{ID: "G1", Data: "TVNI"}},
			`<HL7 ID="G1" LOGONID="gw-17" PASSWORD="secret" SA="LAB" SF="WARD3" RA="EHR" RF="HOSP" MTYPE="ORU" MEVENT="R01" MCONTROLID="MSG00042" MTESTPROD="P" MVERSION="2.5.1" PMVERSION="1.0.0.0" COMPUTERNAME="ward3-gw"><MESSAGE ID="G1">TVNI</MESSAGE></HL7>`},
		{"post keeps empty MSH attributes", &HL7{ID: "G1", Message: Message{ID: "G1"}},
			`<HL7 ID="G1" SA="" SF="" RA="" RF="" MTYPE="" MEVENT="" MCONTROLID="" MTESTPROD="" MVERSION=""><MESSAGE ID="G1"></MESSAGE></HL7>`},
		{"ack", &Ack{MessageID: "G1"}, `<ACK MESSAGEID="G1"></ACK>`},
		{"mailbox", &Mailbox{LogonID: "gw-17", Password: "secret", PMVersion: "1.0.0.0", ComputerName: "ward3-gw"},
			`<HL7MAILBOX LOGONID="gw-17" PASSWORD="secret" PMVERSION="1.0.0.0" COMPUTERNAME="ward3-gw"></HL7MAILBOX>`},
		{"mailbox reply", &MailboxReply{Count: "2", Items: []MailboxItem{{"A1"}, {"A2"}}},
			`<HL7MAILBOX COUNT="2"><HL7 ID="A1"></HL7><HL7 ID="A2"></HL7></HL7MAILBOX>`},
		{"get", &Get{ID: "A1", LogonID: "gw-17", Password: "secret", PMVersion: "1.0.0.0", ComputerName: "ward3-gw"},
			`<HL7 ID="A1" LOGONID="gw-17" PASSWORD="secret" PMVERSION="1.0.0.0" COMPUTERNAME="ward3-gw"></HL7>`},
		{"hl7ack", &HL7Ack{ID: "A1", LogonID: "gw-17", Password: "secret", PMVersion: "1.0.0.0", ComputerName: "ward3-gw"},
			`<HL7ACK ID="A1" LOGONID="gw-17" PASSWORD="secret" PMVERSION="1.0.0.0" COMPUTERNAME="ward3-gw"></HL7ACK>`},
		{"exception", &Exception{Method: "PingAcknowledgement", ErrorCode: "3267", ErrorMessage: "Invalid logon id", Additional: "StreamRequest"},
			`<EXCEPTION METHOD="PingAcknowledgement" ERRORCODE="3267" ERRORMESSAGE="Invalid logon id" ADDITIONAL="StreamRequest"></EXCEPTION>`},
		{"empty exception", &Exception{}, `<EXCEPTION></EXCEPTION>`},
		{"escaping", &Ping{LogonID: `a"<&>`}, `<PING LOGONID="a&#34;&lt;&amp;&gt;"></PING>`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Encode(tt.v)
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != tt.want {
				t.Errorf("Encode:\n got %s\nwant %s", got, tt.want)
			}
			// Everything we write we must read back identically.
			e, err := Parse(got)
			if err != nil {
				t.Fatalf("Parse(Encode()): %v", err)
			}
			again, err := Encode(roundTrip(t, e, tt.v))
			if err != nil {
				t.Fatal(err)
			}
			if string(again) != tt.want {
				t.Errorf("round trip:\n got %s\nwant %s", again, tt.want)
			}
		})
	}
}

func roundTrip(t *testing.T, e *Element, v any) any {
	t.Helper()
	var out any
	switch v.(type) {
	case *Ping:
		out = &Ping{}
	case *PingReply:
		out = &PingReply{}
	case *HL7:
		out = &HL7{}
	case *Ack:
		out = &Ack{}
	case *Mailbox:
		out = &Mailbox{}
	case *MailboxReply:
		out = &MailboxReply{}
	case *Get:
		out = &Get{}
	case *HL7Ack:
		out = &HL7Ack{}
	case *Exception:
		out = &Exception{}
	default:
		t.Fatalf("no round trip for %T", v)
	}
	if err := e.Into(out); err != nil {
		t.Fatal(err)
	}
	return out
}

func TestDecodeLenient(t *testing.T) {
	const bom = "\xEF\xBB\xBF"
	tests := []struct {
		name, body string
		want       PingReply
	}{
		{"canonical", `<PING HL7POSTURL="https://h/p" LOGONID="gw" REPING="False"></PING>`,
			PingReply{HL7PostURL: "https://h/p", LogonID: "gw", Reping: "False"}},
		{"declaration", `<?xml version="1.0" encoding="utf-8"?><PING HL7POSTURL="https://h/p"/>`,
			PingReply{HL7PostURL: "https://h/p"}},
		{"BOM and declaration", bom + `<?xml version="1.0"?>` + "\r\n" + `<PING HL7POSTURL="https://h/p"></PING>`,
			PingReply{HL7PostURL: "https://h/p"}},
		{"BOM only", bom + `<PING HL7POSTURL="https://h/p"></PING>`, PingReply{HL7PostURL: "https://h/p"}},
		{"lower-case names", `<ping hl7posturl="https://h/p" logonid="gw" reping="true"></ping>`,
			PingReply{HL7PostURL: "https://h/p", LogonID: "gw", Reping: "true"}},
		{"mixed case", `<Ping Hl7PostUrl="https://h/p" LogonId="gw"></Ping>`,
			PingReply{HL7PostURL: "https://h/p", LogonID: "gw"}},
		{"LOGON instead of LOGONID", `<PING MAILBOXURL="https://h/m" HL7GETURL="https://h/g" HL7ACKURL="https://h/a" LOGON="gw"></PING>`,
			PingReply{MailboxURL: "https://h/m", HL7GetURL: "https://h/g", HL7AckURL: "https://h/a", Logon: "gw"}},
		{"utf-16 label on UTF-8 bytes", `<?xml version="1.0" encoding="utf-16"?><PING HL7POSTURL="https://h/p"/>`,
			PingReply{HL7PostURL: "https://h/p"}},
		{"latin-1", "<?xml version=\"1.0\" encoding=\"ISO-8859-1\"?><PING LOGONID=\"gw\xe9\"/>",
			PingReply{LogonID: "gwé"}},
		{"white space, comments, namespace, unknown attributes", "\n  <!-- hi --><p:PING xmlns:p=\"urn:x\" p:HL7POSTURL=\"https://h/p\" EXTRA=\"1\">\n</p:PING>\n<!-- bye -->\n",
			PingReply{HL7PostURL: "https://h/p"}},
		{"single quotes", `<PING HL7POSTURL='https://h/p'/>`, PingReply{HL7PostURL: "https://h/p"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got PingReply
			if err := DecodeReply([]byte(tt.body), &got); err != nil {
				t.Fatalf("DecodeReply: %v", err)
			}
			got.XMLName.Local = ""
			if got != tt.want {
				t.Errorf("got %+v\nwant %+v", got, tt.want)
			}
			if got.LogonName() != tt.want.LogonID+tt.want.Logon {
				t.Errorf("LogonName = %q", got.LogonName())
			}
		})
	}
}

func TestDecodeException(t *testing.T) {
	tests := []struct {
		name, body string
		want       Exception
		empty      bool
	}{
		{"full", `<EXCEPTION METHOD="PingAcknowledgement" ERRORCODE="3267" ERRORMESSAGE="Invalid logon id" ADDITIONAL="StreamRequest"></EXCEPTION>`,
			Exception{Method: "PingAcknowledgement", ErrorCode: "3267", ErrorMessage: "Invalid logon id", Additional: "StreamRequest"}, false},
		{"empty", `<EXCEPTION></EXCEPTION>`, Exception{}, true},
		{"self-closing lower case", `<exception/>`, Exception{}, true},
		{"code only", `<Exception ErrorCode="12"/>`, Exception{ErrorCode: "12"}, false},
		{"message only", `<EXCEPTION ERRORMESSAGE="busy"/>`, Exception{ErrorMessage: "busy"}, false},
		{"blank code and message", `<EXCEPTION METHOD="Ack" ERRORCODE=" " ERRORMESSAGE=""/>`, Exception{Method: "Ack", ErrorCode: " "}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var ack Ack
			err := DecodeReply([]byte(tt.body), &ack)
			var x *Exception
			if !errors.As(err, &x) {
				t.Fatalf("DecodeReply = %v, want *Exception", err)
			}
			x.XMLName.Local = ""
			if *x != tt.want {
				t.Errorf("got %+v, want %+v", *x, tt.want)
			}
			if x.Empty() != tt.empty {
				t.Errorf("Empty() = %v, want %v", x.Empty(), tt.empty)
			}
			if ack.GUID() != "" {
				t.Errorf("the ACK was filled from an EXCEPTION")
			}
		})
	}
}

func TestExceptionErrorIsClean(t *testing.T) {
	x := &Exception{ErrorCode: "3267", ErrorMessage: "bad\r\nline" + strings.Repeat("x", 500), Method: "Ping", Additional: "A"}
	s := x.Error()
	if strings.ContainsAny(s, "\r\n") {
		t.Errorf("control characters survive: %q", s)
	}
	if len(s) > 400 {
		t.Errorf("error text is %d bytes, want it cut", len(s))
	}
	if !strings.Contains(s, "3267") || !strings.Contains(s, "method Ping, A") {
		t.Errorf("error text lost its facts: %q", s)
	}
}

func TestDecodeRejects(t *testing.T) {
	tests := []struct {
		name, body string
		want       error
	}{
		{"empty", "", ErrNotXML},
		{"white space", " \r\n", ErrNotXML},
		{"html", "<html><body>502 Bad Gateway</body>", ErrNotXML},
		{"plain text", "OK", ErrNotXML},
		{"two roots", `<ACK MESSAGEID="a"/><ACK MESSAGEID="b"/>`, ErrNotXML},
		{"trailing text", `<ACK MESSAGEID="a"/>garbage`, ErrNotXML},
		{"unclosed", `<ACK MESSAGEID="a">`, ErrNotXML},
		{"mismatched", `<ACK></PING>`, ErrNotXML},
		{"too deep", strings.Repeat("<a>", MaxDepth+1) + strings.Repeat("</a>", MaxDepth+1), ErrNotXML},
		{"other root", `<PING HL7POSTURL="https://h"/>`, ErrShape},
		{"json", `{"ack":"a"}`, ErrNotXML},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var ack Ack
			err := DecodeReply([]byte(tt.body), &ack)
			if !errors.Is(err, tt.want) {
				t.Fatalf("DecodeReply = %v, want %v", err, tt.want)
			}
		})
	}
}

func TestDecodeMailboxAndMessage(t *testing.T) {
	body := `<hl7mailbox count="3"><hl7 id="A1"/><HL7 ID="A2"></HL7><Other/><Hl7 Id="A3"/></hl7mailbox>`
	var mb MailboxReply
	if err := DecodeReply([]byte(body), &mb); err != nil {
		t.Fatal(err)
	}
	if len(mb.Items) != 3 || mb.Items[0].ID != "A1" || mb.Items[1].ID != "A2" || mb.Items[2].ID != "A3" || mb.Count != "3" {
		t.Fatalf("mailbox = %+v", mb)
	}
	var empty MailboxReply
	if err := DecodeReply([]byte(`<HL7MAILBOX COUNT="0"></HL7MAILBOX>`), &empty); err != nil || len(empty.Items) != 0 {
		t.Fatalf("empty mailbox = %+v, %v", empty, err)
	}

	raw := []byte("MSH|^~\\&|LAB|WARD3|EHR|HOSP|20250101||ORU^R01|MSG00042|P|2.5.1\rPID|1\r")
	enc := EncodeMessage(raw)
	wrapped := enc[:10] + "\r\n  " + enc[10:]
	reply := `<hl7 id="A1" sa="LAB"><message id="A1">` + wrapped + `</message></hl7>`
	var h HL7
	if err := DecodeReply([]byte(reply), &h); err != nil {
		t.Fatal(err)
	}
	if h.ID != "A1" || h.Message.ID != "A1" || h.SendingApp != "LAB" {
		t.Fatalf("HL7 = %+v", h)
	}
	got, err := DecodeMessage(h.Message.Data)
	if err != nil || string(got) != string(raw) {
		t.Fatalf("DecodeMessage = %q, %v", got, err)
	}
	unpadded := strings.TrimRight(EncodeMessage([]byte("ab")), "=")
	if got, err := DecodeMessage(unpadded); err != nil || string(got) != "ab" {
		t.Fatalf("unpadded: %q, %v", got, err)
	}
	if _, err := DecodeMessage("!!!!"); err == nil {
		t.Fatal("DecodeMessage accepted junk")
	}
}

func TestReadMSH(t *testing.T) {
	tests := []struct {
		name, raw string
		want      MSH
	}{
		{"full", "MSH|^~\\&|LAB^1.2^ISO|WARD3|EHR|HOSP|20250101||ORU^R01^ORU_R01|MSG00042|P^T|2.5.1^x\rPID|1\r",
			MSH{"LAB", "WARD3", "EHR", "HOSP", "ORU", "R01", "MSG00042", "P", "2.5.1"}},
		{"short", "MSH|^~\\&|LAB|WARD3\r", MSH{SendingApp: "LAB", SendingFacility: "WARD3"}},
		{"LF and BOM", "\xEF\xBB\xBFMSH|^~\\&|A|B|C|D|||ADT^A01|C1|T|2.3\nEVN\n", MSH{"A", "B", "C", "D", "ADT", "A01", "C1", "T", "2.3"}},
		{"other separators", "MSH#$~\\&#A$x#B#C#D###ADT$A04#C2#P#2.4", MSH{"A", "B", "C", "D", "ADT", "A04", "C2", "P", "2.4"}},
		{"repetition", "MSH|^~\\&|A~Z|B|C|D|||ADT^A01|C1|P|2.5", MSH{"A", "B", "C", "D", "ADT", "A01", "C1", "P", "2.5"}},
		{"not MSH", "PID|1|2\r", MSH{}},
		{"empty", "", MSH{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := ReadMSH([]byte(tt.raw)); got != tt.want {
				t.Errorf("got %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

func TestBool(t *testing.T) {
	for s, want := range map[string]bool{"True": true, "true": true, " TRUE ": true, "1": true, "yes": true, "False": false, "": false, "no": false, "0": false} {
		if ParseBool(s) != want {
			t.Errorf("ParseBool(%q) != %v", s, want)
		}
	}
	if FormatBool(true) != "True" || FormatBool(false) != "False" {
		t.Error("FormatBool")
	}
}
