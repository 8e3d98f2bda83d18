package demo

// The demo's credentials at its own reference web service.
const (
	logonID  = "demo-gw"
	password = "demo-password"
)

// Sample messages: made-up patients, never real ones. The third has
// processing ID T, which the tests-bin rubbish bin eats.
var mllpMessages = []string{
	"MSH|^~\\&|MONITOR|WARD3|EHR|HOSP|20261122101500||ADT^A01^ADT_A01|DEMO0001|P|2.5.1\rEVN|A01|20261122101500\rPID|1||DEMO-0001^^^HOSP^MR||DEMO^PATIENT||19700101|U\rPV1|1|I|ICU^01^A\r",
	"MSH|^~\\&|LAB|WARD3|EHR|HOSP|20261122101600||ORU^R01^ORU_R01|DEMO0002|P|2.5.1\rPID|1||DEMO-0001^^^HOSP^MR||DEMO^PATIENT\rOBR|1||LAB-77|GLU^Glucose\rOBX|1|NM|GLU^Glucose||5.4|mmol/L|3.9-6.1|N|||F\r",
	"MSH|^~\\&|LAB|WARD3|EHR|HOSP|20261122101700||ORU^R01^ORU_R01|DEMO0003|T|2.5.1\rPID|1||TEST-0000\rOBX|1|NM|GLU||0.0\r",
}

const serialMessage = "MSH|^~\\&|PUMP|WARD3|EHR|HOSP|20261122101800||ORU^R01^ORU_R01|DEMO0004|P|2.5.1\rPID|1||DEMO-0002^^^HOSP^MR||DEMO^SECOND\rOBX|1|NM|RATE^Infusion rate||12|mL/h\r"

// configTemplate is the demo's configuration; {{DIR}}, {{MLLP}} and
// {{URL}} are filled in at run time.
const configTemplate = `# hl7edge demo configuration: everything on loopback.
device:
  id: demo-gw
  board: sim
spool:
  dir: {{DIR}}/spool
  max_bytes: 256MiB
admin:
  socket: {{DIR}}/admin.sock
log:
  level: warn
sources:
  - name: monitors
    type: mllp
    listen: {{MLLP}}
    max_connections: 16
    idle_timeout: 5m
  - name: pump-line
    type: serial
    device: {{DIR}}/ttyDEMO
    baud: 9600
    framing: mllp
destinations:
  - name: tests-bin
    type: rubbish
    match:
      any: ["MSH-11.1 in T"]
  - name: ehr
    type: webservice
    url: {{URL}}/hl7/ping
    logon_id: demo-gw
    password_file: {{DIR}}/ehr.pass
    ca_file: {{DIR}}/demo-ca.pem
    allowed_hosts: ["127.0.0.1"]
    max_backoff: 10s
    match:
      all: ["MSH-9.1 in ADT,ORU"]
  - name: archive
    type: file
    dir: {{DIR}}/archive
`
