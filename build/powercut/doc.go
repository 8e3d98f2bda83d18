// Package powercut is the power-cut rig (make powercut): it boots the real
// static hl7edge in a qemu virtual machine with a Debian kernel, keeps its
// spool and file destination on an ext4 disk image, loads it over MLLP, a
// pull source and a web-service destination, cuts the power by killing qemu
// with SIGKILL, and checks that every acknowledged message is delivered once.
// Half of the cuts run the disk through a block server that forgets every
// write the guest has not flushed (package nbd). The rig lives in the test
// files; guestinit is the virtual machine's /init.
package powercut
