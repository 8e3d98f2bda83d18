#!/bin/sh
# stages.sh BINARY CPUPROFILE MESSAGES: CPU microseconds per message of
# each ingest stage, from a profile of BenchmarkIngestInProcess
# (docs/performance.md, "Where the microseconds of one message go"). A stage is every sample whose
# stack holds one of its functions; the load generator's frames are left
# out of every stage and reported on their own.
set -eu
bin=$1 prof=$2 n=$3
stage() { # name focus [ignore]
	ign=${3:-'gateway_test\.send|mllp\.\(\*Client\)'}
	s=$(go tool pprof -top -nodecount=100000 -nodefraction=0 -edgefraction=0 -focus="$2" -ignore="$ign" "$bin" "$prof" 2>/dev/null |
		sed -n 's/^Showing nodes accounting for \([0-9.]*\)\(m\{0,1\}s\),.*/\1 \2/p')
	echo "$s" | awk -v name="$1" -v n="$n" '{ v=$1; if ($2=="ms") v/=1000; printf "%-34s %7.1f\n", name, v*1e6/n }'
}
total=$(go tool pprof -top -nodecount=1 "$bin" "$prof" 2>/dev/null | sed -n 's/.*Total samples = \([0-9.]*\)\(m\{0,1\}s\).*/\1 \2/p')
echo "$total" | awk -v n="$n" '{ v=$1; if ($2=="ms") v/=1000; printf "%-34s %7.1f\n", "whole process", v*1e6/n }'
stage "load generator (left out)" 'gateway_test\.send|mllp\.\(\*Client\)' 'NOTHING_MATCHES_THIS'
stage "read and frame" 'mllp\.\(\*Reader\)\.ReadFrame'
stage "parse" 'hl7\.Parse$|hl7\.\(\*Message\)'
stage "route" 'route\.'
stage "admit, encode record, keys" 'storage\.\(\*group\)\.add'
stage "Append hand-off and wait" 'storage\.\(\*Spool\)\.Append$'
stage "Badger write (txn, memtable, log)" 'badger/v4\.\(\*Txn\)\.Commit|badger/v4\.\(\*DB\)\.doWrites'
stage "sync (fsync/fdatasync syscalls)" 'storage\.\(\*walSyncer\)\.sync|badger/v4\.\(\*DB\)\.Sync'
stage "counters and replies" 'storage\.\(\*Spool\)\.(account|reply)'
stage "ACK build" 'hl7\.ACK$|hl7\.buildACK'
stage "ACK write" 'mllp\.WriteFrame'
stage "delivery (file destination)" 'deliver\.\(\*Worker\)'
stage "Badger flush and compaction" 'badger/v4\.\(\*DB\)\.(flushMemtable|handleMemTableFlush)|levelsController'
stage "Go runtime (GC, scheduler)" '^runtime\.(gcBgMarkWorker|mcall|schedule|findRunnable|bgsweep|bgscavenge|sysmon)'
