package wire

import "bytes"

// ReadMSH fills the post attributes from a message's MSH segment: the first
// component of MSH-3, -4, -5, -6, -9 (type and event), -10, -11 and -12.
// Missing fields stay empty; a message without an MSH gives an empty MSH,
// because intake has already judged the message and a post must still go out.
// Escape sequences are left as they are: the attributes are labels for the
// receiver's routing, the message itself travels in MESSAGE.
func ReadMSH(raw []byte) MSH {
	raw = bytes.TrimPrefix(raw, utf8BOM)
	seg := firstSegment(raw)
	if len(seg) < 8 || !bytes.HasPrefix(seg, []byte("MSH")) {
		return MSH{}
	}
	fieldSep := seg[3]
	fields := bytes.Split(seg, []byte{fieldSep})
	// fields[0] is "MSH" and fields[1] MSH-2 because MSH-1 is the separator
	// itself: MSH-n is fields[n-1].
	compSep := byte('^')
	if len(fields[1]) > 0 {
		compSep = fields[1][0]
	}
	get := func(n, comp int) string {
		if n-1 >= len(fields) {
			return ""
		}
		parts := bytes.Split(fields[n-1], []byte{compSep})
		if comp-1 >= len(parts) {
			return ""
		}
		// A repeated field keeps only its first repetition.
		if len(fields[1]) > 1 {
			if i := bytes.IndexByte(parts[comp-1], fields[1][1]); i >= 0 {
				return string(parts[comp-1][:i])
			}
		}
		return string(parts[comp-1])
	}
	return MSH{
		SendingApp:        get(3, 1),
		SendingFacility:   get(4, 1),
		ReceivingApp:      get(5, 1),
		ReceivingFacility: get(6, 1),
		MessageType:       get(9, 1),
		TriggerEvent:      get(9, 2),
		ControlID:         get(10, 1),
		ProcessingID:      get(11, 1),
		Version:           get(12, 1),
	}
}

// firstSegment skips blank lines and returns the first segment, which ends
// at CR or LF.
func firstSegment(raw []byte) []byte {
	raw = bytes.TrimLeft(raw, "\r\n \t")
	if i := bytes.IndexAny(raw, "\r\n"); i >= 0 {
		return raw[:i]
	}
	return raw
}
