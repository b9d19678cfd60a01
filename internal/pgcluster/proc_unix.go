//go:build unix

package pgcluster

import (
	"os/exec"
	"syscall"
)

// apply makes cmd run as the server OS user.
func (u *serverUser) apply(cmd *exec.Cmd) {
	groups := make([]uint32, len(u.groups))
	for i, g := range u.groups {
		groups[i] = uint32(g)
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Credential: &syscall.Credential{
			Uid:    uint32(u.uid),
			Gid:    uint32(u.gid),
			Groups: groups,
		},
	}
}
