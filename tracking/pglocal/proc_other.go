//go:build !linux

package pglocal

import "syscall"

// sysProcAttr runs a child as cred (nil: as us) in its own process group.
func sysProcAttr(cred *syscall.Credential) *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Credential: cred, Setpgid: true}
}
