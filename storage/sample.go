package storage

import _ "embed"

// Sample is sample.yaml beside this file: the block's keys with their
// defaults, commented, for `hl7edge config sample` and the package's docs.
//
//go:embed sample.yaml
var Sample []byte
