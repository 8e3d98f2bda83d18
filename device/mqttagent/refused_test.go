package mqttagent

import (
	"strings"
	"testing"
	"time"

	"github.com/hl7edge/hl7edge/device/command"
	"github.com/hl7edge/hl7edge/device/mqttagent/mqtttest"
	"github.com/hl7edge/hl7edge/pipeline/vocab/health"
	"github.com/hl7edge/hl7edge/pipeline/vocab/units"
)

// TestRefusedCommandSubscriptionAskedAgain: paho reports a refused
// subscription only in the SUBACK; a box that took it as granted would say
// "online" and never hear a command. Refused twice, it asks again and
// answers.
func TestRefusedCommandSubscriptionAskedAgain(t *testing.T) {
	t.Parallel()
	b := mqtttest.StartMochi(t, mqtttest.BrokerOptions{Refuse: mqtttest.RefuseSubscriptions("hl7edge/gw1/cmd/req", 2)})
	op := mqtttest.Subscribe(t, b.URL, "hl7edge/gw1/#", mqtttest.ClientOptions{})
	r := startAgent(t, Config{Broker: b.URL, HealthInterval: units.Duration(time.Hour)}, agentSetup{})
	r.waitState(t, health.Up)
	op.Publish(t, "hl7edge/gw1/cmd/req", false, `{"id":"c1","name":"health","args":{}}`)
	response(t, op, 0, "c1", command.Successful)
}

// TestCommandSubscriptionRefusedForGoodIsLogged: an ACL that refuses the
// command topic is named in the log with what to do.
func TestCommandSubscriptionRefusedForGoodIsLogged(t *testing.T) {
	t.Parallel()
	b := mqtttest.StartMochi(t, mqtttest.BrokerOptions{Refuse: mqtttest.RefuseSubscriptions("hl7edge/gw1/cmd/req", -1)})
	r := startAgent(t, Config{Broker: b.URL, HealthInterval: units.Duration(time.Hour)}, agentSetup{})
	r.waitState(t, health.Up)
	if !strings.Contains(r.logs.String(), "broker refused the subscription to commands") || !strings.Contains(r.logs.String(), "return_code=0x80") {
		t.Fatalf("the log does not say the broker refused the command subscription:\n%s", r.logs.String())
	}
}
