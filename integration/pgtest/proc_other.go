//go:build !linux

package pgtest

import "syscall"

// childAttr runs a server process as cred (nil: as ourselves), in a process
// group of its own (a terminal's ^C goes to the test binary, not to the
// server). Only Linux kills it with the test binary (Pdeathsig): elsewhere
// a server whose test binary was killed outlives it, and a later run
// removes its directory once it is gone (removeStale).
func childAttr(cred *syscall.Credential) *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Credential: cred, Setpgid: true}
}

// exited reports whether pid, which answered a signal 0, has in fact
// exited. Without /proc a zombie cannot be told from a live process
// cheaply: it counts as alive, so its directory is left for a later run.
func exited(pid int) bool { return false }
