package pglocal

import "syscall"

// sysProcAttr runs a child as cred (nil: as us) in its own process group.
// On Linux the server also gets SIGINT (fast shutdown) when we die, so a
// killed daemon or test binary does not leave it running.
func sysProcAttr(cred *syscall.Credential) *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Credential: cred, Setpgid: true, Pdeathsig: syscall.SIGINT}
}
