package pgtest

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"syscall"
)

// childAttr runs a server process as cred (nil: as ourselves), in a process
// group of its own (a terminal's ^C goes to the test binary, not to the
// server), killed when the thread that started it dies (spawn keeps that
// thread for the life of the process).
func childAttr(cred *syscall.Credential) *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Credential: cred, Setpgid: true, Pdeathsig: syscall.SIGKILL}
}

// exited reports whether pid, which answered a signal 0, has in fact
// exited: a zombie not yet reaped, or gone since.
func exited(pid int) bool {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return errors.Is(err, fs.ErrNotExist)
	}
	// Field 3, after "(comm)", is the state.
	if i := bytes.LastIndexByte(stat, ')'); i >= 0 && i+2 < len(stat) {
		return stat[i+2] == 'Z' || stat[i+2] == 'X'
	}
	return false
}
