package appliance

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"

	"github.com/hl7edge/hl7edge/device/command"
	"github.com/hl7edge/hl7edge/device/config"
	"github.com/hl7edge/hl7edge/device/firmware"
	"github.com/hl7edge/hl7edge/device/mqttagent"
	"github.com/hl7edge/hl7edge/device/trust"
	"github.com/hl7edge/hl7edge/pipeline/vocab/health"
)

// ErrRelaunch ends Run when the firmware changes: the process must exit so
// that the service manager (Restart=) starts the launcher again, which runs
// the image the firmware state names (device/firmware).
var ErrRelaunch = errors.New("exiting so that the service manager starts the firmware the state names")

// firmwareManager wires device/firmware into one box: the privileged
// firmware-update command, the retained firmware topic, alarms, and the
// relaunch.
func (a *Appliance) firmwareManager(cfg *config.Config, log *slog.Logger, keys *trust.Keys, reg *health.Registry, agent *mqttagent.Agent,
	disp *command.Dispatcher, alarm func(kind, detail string)) *firmware.Manager {
	fw := firmware.New(firmware.Options{
		Config: cfg.Firmware, Log: log, Keys: keys, Version: a.o.Version, Snapshot: reg.Snapshot, Alarm: alarm, Gates: a.o.Gates,
		Publish: func(p firmware.Public) {
			if b, err := json.Marshal(p); err == nil {
				agent.Retain("firmware", b)
			}
		},
		Relaunch: func(why string) {
			select {
			case a.relaunch <- why:
			default:
			}
		},
	})
	disp.RegisterPrivileged(command.FirmwareUpdate, func(ctx context.Context, raw json.RawMessage) (any, string, error) {
		return fw.Update(ctx, command.IDFrom(ctx), raw)
	})
	return fw
}
